"""Naming a few of many things in a message: the first ones, then how many more."""

from __future__ import annotations

from collections.abc import Sequence


def first_and_more(items: Sequence[str], limit: int, separator: str = ", ") -> str:
    """The first ``limit`` (at least 1) items joined by ``separator``, then "and K more" for the rest.

    After a comma the count follows as in a sentence ("a, b and 3 more"); after any other separator,
    used when the items hold commas themselves, it is set off by that separator ("a (2 mm); b; and 3 more").
    """
    limit = max(1, limit)
    shown = separator.join(items[:limit])
    rest = len(items) - limit
    if rest <= 0:
        return shown
    joint = " " if separator.strip() == "," else separator
    return f"{shown}{joint}and {rest} more"
