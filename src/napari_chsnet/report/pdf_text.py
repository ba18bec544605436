"""The text of the PDF report: measuring and wrapping it (``Ruler``), the study fields and the
acquisition line, the run details and "Limits", and the red warnings box that flows over pages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.patches import Rectangle

from napari_chsnet.io.checksums import file_sha256
from napari_chsnet.io.dicom_headers import format_dicom_date
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.registry import MODELS
from napari_chsnet.report.fonts import covering_font, is_printable
from napari_chsnet.report.manifest import STUDY_FIELDS

_STUDY_LABELS = {
    "PatientName": "Patient",
    "PatientID": "Patient ID",
    "PatientBirthDate": "Birth date",
    "PatientSex": "Sex",
    "PatientAge": "Age",
    "StudyDate": "Study date",
    "StudyTime": "Study time",
    "StudyDescription": "Study",
    "AccessionNumber": "Accession no.",
    "SeriesDescription": "Series",
    "Modality": "Modality",
    "Manufacturer": "Scanner",
    "ManufacturerModelName": "Scanner model",
    "InstitutionName": "Institution",
}
# DICOM acquisition fields: printed on the page's "Acquisition" line, not among the study fields.
ACQUISITION_FIELDS = ("SliceThickness", "ConvolutionKernel", "KVP")


# ---------------------------------------------------------------- text layout

A4_PORTRAIT_IN = (8.27, 11.69)
PAGE_HEIGHT_PT = A4_PORTRAIT_IN[1] * 72
LEFT, RIGHT = 0.06, 0.94  # text margins, figure fraction
WARNING_SIZE = 8.5


def line_step(size: float, spacing: float = 1.3) -> float:
    """Height of one line of ``size``-point text, figure fraction."""
    return size * spacing / PAGE_HEIGHT_PT


class Ruler:
    """Widths of text as the page will draw it (figure fraction), measured with the page's renderer
    in the font the text will get (``cover_missing_glyphs``' choice for names in other scripts)."""

    def __init__(self, figure: Figure) -> None:
        self.renderer = figure.canvas.get_renderer()
        self._width_px = figure.bbox.width

    def width(self, text: str, size: float, bold: bool = False) -> float:
        properties = FontProperties(size=size, weight="bold" if bold else "normal")
        if not text.isascii():
            path = covering_font(text, findfont(properties), bold)
            if path is not None:
                properties.set_file(path)
        width, _, _ = self.renderer.get_text_width_height_descent(text, properties, ismath=False)
        return width / self._width_px

    def wrap(
        self, text: str, size: float, width: float, *, bold: bool = False, breaks: str = " "
    ) -> list[str]:
        """``text`` in lines no wider than ``width``, broken after any of ``breaks`` (a word
        longer than a line is broken where it must); nothing is left out."""
        lines: list[str] = []
        separators = re.escape(breaks)
        for paragraph in text.splitlines() or [""]:
            tokens = re.findall(f"[^{separators}]*[{separators}]+|[^{separators}]+", paragraph)
            line = ""
            for token in tokens:
                if line and self.width((line + token).rstrip(), size, bold) > width:
                    lines.append(line.rstrip())
                    line = token.lstrip(" ")
                else:
                    line += token
                while len(line) > 1 and self.width(line.rstrip(), size, bold) > width:
                    cut = len(line) - 1
                    while cut > 1 and self.width(line[:cut], size, bold) > width:
                        cut -= 1
                    lines.append(line[:cut])
                    line = line[cut:]
            lines.append(line.rstrip())
        return lines


def put_text(figure: Figure, x: float, y: float, text: str, **kwargs: Any) -> Any:
    """Figure text taken literally (a "$" in a path or a name is not the start of maths)."""
    return figure.text(x, y, text, parse_math=False, **kwargs)


# ---------------------------------------------------------------- study fields and run details


def _dicom_time(value: str) -> str:
    """DICOM TM "101500" (or "101500.123", "1015") → "10:15:00" ("10:15"); anything else as it is."""
    match = re.fullmatch(r"\s*(\d{2})(\d{2})?(\d{2})?(\.\d*)?\s*", value)
    if not match or int(match[1]) > 23 or int(match[2] or 0) > 59 or int(match[3] or 0) > 60:
        return value
    return ":".join(part for part in match.groups()[:3] if part)


_AGE_UNITS = {"Y": "y", "M": "mo", "W": "wk", "D": "d"}


def _dicom_age(value: str) -> str:
    """DICOM AS "060Y" → "60 y" (M months, W weeks, D days); anything else as it is."""
    match = re.fullmatch(r"\s*(\d{3})([YMWD])\s*", value)
    return f"{int(match[1])} {_AGE_UNITS[match[2]]}" if match else value


_VALUE_FORMATS = {
    "PatientBirthDate": format_dicom_date,
    "StudyDate": format_dicom_date,
    "StudyTime": _dicom_time,
    "PatientAge": _dicom_age,
    "PatientName": lambda value: _printable_name(value),  # defined below
}


def _printable_name(name: str) -> str:
    """A DICOM name's alphabetic group ("Yamada Tarou=山田 太郎=やまだ たろう" → "Yamada Tarou")
    when no installed font draws the whole name; the whole name otherwise."""
    if "=" not in name or is_printable(name):
        return name
    return next((group for group in name.split("=") if group.strip() and is_printable(group)), name)


def study_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the study fields the header shows, values as a reader expects them."""
    study = report.get("study", {})
    lines = []
    if report.get("anonymized"):
        lines.append(("Patient", "anonymised"))
    for key in STUDY_FIELDS:
        if key in study and key in _STUDY_LABELS:
            value = str(study[key])
            lines.append((_STUDY_LABELS[key], _VALUE_FORMATS.get(key, str)(value)))
    if not lines:
        lines.append(("Patient", "no DICOM patient/study fields in the input"))
    return lines


def _mm(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def acquisition_line(report: dict[str, Any], ct: CTVolume) -> str:
    """Slice thickness (DICOM) and spacing, in-plane spacing, number of slices, scan length (number of
    slices × slice spacing) and the kernel (and kVp) when known."""
    study = report.get("study", {})
    sx, sy, sz = ct.geometry.spacing_mm
    n = ct.shape[0]
    parts = []
    if "SliceThickness" in study:
        parts.append(f"slice thickness {study['SliceThickness']} mm")
    parts += [
        f"slice spacing {_mm(sz)} mm",
        f"in-plane {_mm(sx)} × {_mm(sy)} mm",
        f"{n} slice{'s' if n != 1 else ''}",
        f"scan length {_mm(n * sz)} mm",
    ]
    if "ConvolutionKernel" in study:
        parts.append(f"kernel {study['ConvolutionKernel']}")
    if "KVP" in study:
        parts.append(f"{study['KVP']} kVp")
    if not any(key in study for key in ACQUISITION_FIELDS):
        parts.append("no DICOM acquisition fields (thickness, kernel unknown)")
    return " · ".join(parts)


@cache
def _file_digest(path: str, modified_ns: int, size: int) -> str:
    return file_sha256(path)


def bundled_model_card(model: str, sha256: str | None) -> str | None:
    """``resources/weights/<model>.md`` when ``sha256`` is the bundled ``<model>.safetensors``'
    checksum (the weights its model card documents), else None (user weights, or unknown)."""
    from napari_chsnet.resources_path import bundled_weights_dir

    if not sha256 or model not in MODELS:
        return None
    path = bundled_weights_dir() / f"{model}.safetensors"
    try:
        stat = path.stat()
    except OSError:
        return None
    if _file_digest(str(path), stat.st_mtime_ns, stat.st_size) != sha256.lower():
        return None
    return f"resources/weights/{model}.md"


def _weights_identity(model: str, sha256: str | None) -> str:
    shown = f"{sha256[:16]}…" if sha256 else "unknown"
    if not sha256:
        return "weights SHA-256 unknown (cannot tell whether these are the bundled weights)"
    card = bundled_model_card(model, sha256)
    if card is not None:
        return f"weights SHA-256 {shown}, the bundled weights (model card {card})"
    return f"weights SHA-256 {shown}, user weights (not the bundled file; no model card describes them)"


def run_details(report: dict[str, Any]) -> list[str]:
    software = report.get("software", {})
    model = report.get("model", "")
    title = MODELS[model].title if model in MODELS else model
    sha = report.get("weights_sha256")
    lines = [f"Model: {title} ({model}); {_weights_identity(model, sha)}"]
    lung_sha = report.get("lung_weights_sha256")
    if lung_sha and lung_sha != sha:
        lines.append(f"Lung stage (CHS-Net): {_weights_identity('chsnet', lung_sha)}")
    settings = _settings_line(report)
    if settings:
        lines.append(settings)
    precision = (report.get("inference_options") or {}).get("precision")
    computed = f" in {precision}" if precision else ""
    lines.append(
        f"Device: {report.get('device', '')}{computed}; runtime {report.get('runtime_s', 0.0):.1f} s"
    )
    lines.append("Software: " + ", ".join(f"{k} {v}" for k, v in software.items()))
    return lines


def _settings_line(report: dict[str, Any]) -> str | None:
    """The settings that change the figures (report.json's ``inference_options`` and ``min_lesion_ml``,
    the latter being the value the figures were counted with), or None when none is known."""
    options = report.get("inference_options") or {}
    parts = []
    if "threshold" in options:
        vote = " (each member's vote)" if report.get("model") == "eamc" else ""
        parts.append(f"threshold {float(options['threshold']):g}{vote}")
    if "mirror_averaging" in options:
        parts.append(f"mirror averaging {'on' if options['mirror_averaging'] else 'off'}")
    if "overlapping_tiles" in options:
        parts.append("overlapping tiles" if options["overlapping_tiles"] else "the paper's patches")
    min_lesion = report.get("min_lesion_ml", options.get("min_lesion_ml"))
    if min_lesion is not None:
        min_lesion = float(min_lesion)
        parts.append(
            f"lesions under {min_lesion:g} mL not counted" if min_lesion > 0 else "every lesion counted"
        )
    return f"Settings: {', '.join(parts)}" if parts else None


def limits_text(report: dict[str, Any]) -> str:
    """What the figures measure and where they mislead (page 2's "Limits")."""
    model = report.get("model", "")
    card = bundled_model_card(model, report.get("weights_sha256"))
    if card is not None:
        pointer = f"Validation figures and known failure modes: the model card {card}."
    else:
        pointer = (
            f"These weights are not the bundled ones, so the validation figures of resources/weights/{model}.md "
            "do not apply to them."
        )
    return (
        "“Infection” is what the model marks as lesion: ground-glass opacity and consolidation together, "
        "not told apart, not specific to COVID-19 (other pneumonias, oedema or haemorrhage look alike), "
        "and not assigned to lobes. Known false positives: partial volume over the diaphragm domes, "
        "pericardial fat, and dependent (gravity) density at the posterior lung bases, so a normal scan "
        "reads a few mL (CT-1). Volumes and percentages assume the whole lungs were scanned: a scan "
        f"that stops inside the lungs counts only the scanned part. {pointer}"
    )


# ---------------------------------------------------------------- warnings box


@dataclass
class Bullet:
    """One warning, wrapped to the warnings box's width; ``continued`` when its first lines are on
    the previous page."""

    lines: list[str]
    continued: bool = False


_BOX_PAD = 0.007
_BULLET_INDENT = 0.018
_BULLET_GAP = 0.003


def wrap_warnings(ruler: Ruler, warnings: Sequence[str]) -> list[Bullet]:
    width = RIGHT - LEFT - 2 * _BOX_PAD - _BULLET_INDENT
    return [Bullet(ruler.wrap(str(w), WARNING_SIZE, width)) for w in warnings]


def warnings_box(
    figure: Figure, bullets: list[Bullet], top: float, floor: float, title: str
) -> tuple[float, list[Bullet]]:
    """Draw a red-framed box of ``bullets`` from ``top`` down to no lower than ``floor``.

    Whole warnings that do not fit are left for the next page (a warning is split only when not one
    fits whole), and the box then ends with a note that the warnings go on. Returns the box's bottom
    and the warnings left over."""
    step = line_step(WARNING_SIZE)
    y = top - _BOX_PAD
    put_text(figure, LEFT + _BOX_PAD, y, title, fontsize=9.5, fontweight="bold", color="#b71c1c", va="top")
    y -= line_step(9.5, 1.45)
    left: list[Bullet] = []
    for i, bullet in enumerate(bullets):
        more = i < len(bullets) - 1
        need = len(bullet.lines) * step + (step if more else 0.0)
        if y - need - _BOX_PAD >= floor:
            n_lines = len(bullet.lines)
        elif i:  # whole warnings are on this page: the next one starts the next page
            left = bullets[i:]
            break
        else:  # not even the first warning fits whole: split it, the rest goes on the next page
            n_lines = max(0, int((y - _BOX_PAD - floor) / step) - 1)
            if n_lines >= len(bullet.lines):  # it fits without the note after all
                n_lines = len(bullet.lines)
        if n_lines == 0:
            left = bullets[i:]
            break
        if not bullet.continued:
            put_text(
                figure, LEFT + _BOX_PAD + 0.004, y, "•", fontsize=WARNING_SIZE, color="#b71c1c", va="top"
            )
        for line in bullet.lines[:n_lines]:
            put_text(
                figure,
                LEFT + _BOX_PAD + _BULLET_INDENT,
                y,
                line,
                fontsize=WARNING_SIZE,
                color="#222222",
                va="top",
            )
            y -= step
        y -= _BULLET_GAP
        if n_lines < len(bullet.lines):
            left = [Bullet(bullet.lines[n_lines:], continued=True), *bullets[i + 1 :]]
            break
    if left:
        put_text(
            figure,
            LEFT + _BOX_PAD + _BULLET_INDENT,
            y,
            f"(continued on the next page: {len(left)} more warning{'s' if len(left) > 1 else ''}"
            f"{', the first one split' if left[0].continued else ''})",
            fontsize=WARNING_SIZE,
            fontstyle="italic",
            color="#b71c1c",
            va="top",
        )
        y -= step
    bottom = y - _BOX_PAD + _BULLET_GAP
    figure.add_artist(
        Rectangle(
            (LEFT, bottom),
            RIGHT - LEFT,
            top - bottom,
            transform=figure.transFigure,
            facecolor="#fdecea",
            edgecolor="#b71c1c",
            linewidth=1.2,
            zorder=0,
            gid="warnings-box",
        )
    )
    return bottom, left
