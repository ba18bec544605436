"""An anonymised report never shows a case name holding the patient's name: the name's words are matched
with their hyphens and apostrophes taken out too, on both sides (PatientName "OBRIEN^SEAN" as many
scanners store it, a folder the user typed as "O'Brien CT")."""

from __future__ import annotations

import re

import pytest

from napari_chsnet.report.anonymize import anonymous_case_name


@pytest.mark.parametrize(
    ("case", "name"),
    [("O'Brien CT", "OBRIEN^SEAN"), ("Smith-Jones chest", "SMITHJONES^ANN"), ("ct=Mc-Donald", "MCDONALD^J")],
)
def test_a_case_name_holding_the_joined_surname_is_replaced(case, name):
    # Split at its punctuation the case gives "o", "brien", "ct": none is a word of the name; joined
    # within one name component ("o'brien" -> "obrien") it is the surname, so the case is renamed.
    identity = {"PatientName": name, "PatientID": "X-991", "SeriesInstanceUID": "1.2.3.4.5"}
    shown, warning = anonymous_case_name(case, identity)
    assert re.fullmatch(r"case-[0-9a-f]{12}", shown)
    assert warning is not None and "holds the patient's name or ID" in warning


def test_joined_pieces_that_are_no_name_word_keep_the_case_name():
    # the other side: "o'scan" joins to "oscan", which is no word of O'Brien^Sean
    identity = {"PatientName": "OBRIEN^SEAN", "PatientID": "X-991", "SeriesInstanceUID": "1.2.3.4.5"}
    assert anonymous_case_name("O'Scan CT", identity) == ("O'Scan CT", None)
