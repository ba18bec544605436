"""Report text in scripts the default font lacks: another installed font, or readable boxes, never a warning."""

from __future__ import annotations

import unicodedata
import warnings

import pytest
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from napari_chsnet.report import fonts, write_report_pdf

from .test_report_exports import make_report, pdf_text

DEFAULT_FONT = font_manager.findfont(font_manager.FontProperties())


def _drawn_without_warnings(figure: Figure) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" would fail here
        figure.canvas.draw()


def _letter_only_another_font_has() -> tuple[str, str] | None:
    default = fonts._characters(DEFAULT_FONT)
    for path in fonts._installed_fonts():
        extra = sorted(fonts._characters(path) - default)
        letters = [c for c in extra if unicodedata.category(chr(c)).startswith("L")]
        if letters:
            return chr(letters[0]), path
    return None


def test_text_the_default_font_lacks_is_drawn_in_an_installed_font_that_has_it():
    found = _letter_only_another_font_has()
    if found is None:
        pytest.skip("no installed font has a letter DejaVu Sans lacks")
    letter, _ = found
    figure = Figure()
    FigureCanvasAgg(figure)
    plain, special = figure.text(0.1, 0.1, "Patient: Smith"), figure.text(0.1, 0.5, f"Patient: {letter}")
    fonts.cover_missing_glyphs(figure)
    assert font_manager.findfont(plain.get_fontproperties()) == DEFAULT_FONT
    chosen = special.get_fontproperties().get_file()
    assert chosen != DEFAULT_FONT and ord(letter) in fonts._characters(chosen)
    assert special.get_text() == f"Patient: {letter}"
    _drawn_without_warnings(figure)


def test_text_no_installed_font_draws_shows_boxes_for_the_missing_characters(monkeypatch):
    monkeypatch.setattr(fonts, "_installed_fonts", lambda: ())
    figure = Figure()
    FigureCanvasAgg(figure)
    text = figure.text(0.1, 0.1, "王小明 Wang, Zoë")
    fonts.cover_missing_glyphs(figure)
    assert text.get_text() == "□□□ Wang, Zoë"  # the rest of the line stays readable
    _drawn_without_warnings(figure)


def test_the_last_resort_font_is_never_chosen():
    # matplotlib ships Last Resort, whose placeholder boxes "cover" every character.
    assert not any("lastresort" in path.lower() for path in fonts._installed_fonts())


def test_pdf_shows_a_names_alphabetic_group_when_no_font_draws_its_ideographs(
    synthetic_case, tmp_path, monkeypatch
):
    monkeypatch.setattr(fonts, "_installed_fonts", lambda: ())
    report = make_report(synthetic_case)
    report["study"]["PatientName"] = "Wang Xiaoming=王 小明"  # DICOM PN: alphabetic=ideographic
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_report_pdf(
            tmp_path / "r.pdf", report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection
        )
    text = pdf_text(path)
    assert "Patient: Wang Xiaoming" in text and "王" not in text and "□" not in text


def test_pdf_prints_a_chinese_name_with_an_installed_cjk_font(synthetic_case, tmp_path):
    if fonts.covering_font("王小明", DEFAULT_FONT) is None:
        pytest.skip("no CJK font installed (Debian: fonts-wqy-microhei, as .ci/run installs)")
    report = make_report(synthetic_case)
    report["study"]["PatientName"] = "Wang Xiaoming=王 小明"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = write_report_pdf(
            tmp_path / "r.pdf", report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection
        )
    assert "Patient: Wang Xiaoming=王 小明" in pdf_text(path)  # embedded, searchable text


def test_the_fallback_font_keeps_the_texts_weight(monkeypatch):
    """Among fonts that draw the text, regular text gets the plainest file, bold text a bold one
    (Noto CJK installs Regular, Bold, Black, Light... and Serif files of the same characters)."""
    regular = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    bold = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
    serif = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
    missing = [
        c
        for c in (fonts._characters(regular) & fonts._characters(bold) & fonts._characters(serif))
        - fonts._characters(DEFAULT_FONT)
        if chr(c).isalpha()
    ]
    if not missing:
        pytest.skip("the system's DejaVu fonts (fonts-dejavu-core) have no letter matplotlib's lacks")
    monkeypatch.setattr(fonts, "_installed_fonts", lambda: (bold, serif, regular))  # bold listed first
    letter = chr(missing[0])
    assert fonts.covering_font(letter, DEFAULT_FONT) == regular
    assert fonts.covering_font(letter, DEFAULT_FONT, bold=True) == bold
    figure = Figure()
    FigureCanvasAgg(figure)
    title = figure.text(0.1, 0.5, f"Patient {letter}", fontweight="bold")
    fonts.cover_missing_glyphs(figure)
    assert title.get_fontproperties().get_file() == bold
