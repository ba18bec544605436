"""Fonts for report text the default font cannot draw (a patient's name in Chinese, a folder in Arabic).

matplotlib draws each text from one font (DejaVu Sans by default), and a character that font lacks
prints as an empty box, with a warning on stderr. Before the PDF is saved, ``cover_missing_glyphs``
gives every such text the first installed font that has all its characters. Text that no installed
font covers keeps the default font with its missing characters shown as "□" (no warning), so the
rest of the line stays readable; ``report.json`` and the CSV keep the exact text.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.text import Text

MISSING_GLYPH = "\u25a1"  # □, which DejaVu Sans has


@cache
def _characters(path: str) -> frozenset[int]:
    """Code points the font file (the first face of a collection) has glyphs for."""
    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):  # unreadable or not a font FreeType knows
        return frozenset()


@cache
def _installed_fonts() -> tuple[str, ...]:
    # matplotlib's font list is cached on disk when matplotlib first runs, so a font installed later
    # (fonts-noto-cjk, say) is only found by scanning the system's font folders, once per process.
    # Last Resort (shipped with matplotlib) "has" every character, as a placeholder box: never chosen.
    listed = {entry.fname for entry in font_manager.fontManager.ttflist}
    scanned = set(font_manager.findSystemFonts(fontext="ttf"))
    return tuple(sorted(p for p in listed | scanned if "lastresort" not in Path(p).name.lower()))


def _needed(text: str) -> set[int]:
    return {ord(c) for c in text if c.isprintable() and not c.isspace()}


# Words in font file names that mark a style other than the report's regular sans-serif text.
_STYLE_WORDS = ("bold", "black", "heavy", "light", "thin", "medium", "italic", "oblique", "mono", "serif")


def _style_rank(path: str, bold: bool) -> tuple[int, int]:
    """Sort key: for bold text a file named bold first, for other text the plainest name first
    (NotoSansCJK-Regular before NotoSansCJK-Bold and NotoSerifCJK-Regular)."""
    name = Path(path).stem.lower()
    marks = sum(word in name for word in _STYLE_WORDS)
    return (0 if "bold" in name else 1, marks) if bold else (marks, 0)


def covering_font(text: str, default: str, bold: bool = False) -> str | None:
    """``default`` when it draws every character of ``text``, else the installed font file of the
    plainest style (bold ones first for ``bold`` text) that does, else None."""
    needed = _needed(text)
    if needed <= _characters(default):
        return default
    candidates = sorted(_installed_fonts(), key=lambda path: _style_rank(path, bold))
    return next((path for path in candidates if needed <= _characters(path)), None)


def is_printable(text: str) -> bool:
    """Whether some installed font draws every character of ``text``."""
    default = font_manager.findfont(font_manager.FontProperties())
    return covering_font(text, default) is not None


def cover_missing_glyphs(figure: Figure) -> None:
    """Give each text of ``figure`` a font that has its characters (see the module docstring)."""
    for text in figure.findobj(Text):
        content = text.get_text()
        if content.isascii():
            continue
        properties = text.get_fontproperties()
        default = font_manager.findfont(properties)
        weight = properties.get_weight()
        bold = weight in ("bold", "heavy", "black", "semibold", "demibold", "extra bold") or (
            isinstance(weight, int | float) and weight >= 600
        )
        path = covering_font(content, default, bold)
        if path == default:
            continue
        if path is not None:
            properties = properties.copy()
            properties.set_file(path)
            text.set_fontproperties(properties)
        else:
            known = _characters(default)
            text.set_text("".join(c if ord(c) in known or c.isspace() else MISSING_GLYPH for c in content))
