"""The shared "first N, then 'and K more'" text (napari_chsnet/listing.py) of the reader's messages."""

from __future__ import annotations

from napari_chsnet.listing import first_and_more


def test_items_up_to_the_limit_are_all_named():
    assert first_and_more([], 5) == ""
    assert first_and_more(["a"], 5) == "a"
    assert first_and_more(["a", "b", "c"], 3) == "a, b, c"


def test_the_rest_is_counted_after_a_comma_as_in_a_sentence():
    assert first_and_more(["a", "b", "c", "d"], 2) == "a, b and 2 more"


def test_items_holding_commas_set_the_count_off_with_their_separator():
    items = ["series 2 (4 slices, 2 mm thick)", "series 3 (3 slices)", "series 4 (2 slices)"]
    assert (
        first_and_more(items, 2, "; ") == "series 2 (4 slices, 2 mm thick); series 3 (3 slices); and 1 more"
    )
