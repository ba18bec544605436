"""Pictures of the severity report: the A4 pages of ``report.pdf`` as matplotlib figures.

Pure rendering: figures are built from ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state),
so building a report inside napari never opens a window or touches napari's own figures.

Orientation: volumes are ``(z, y, x)`` in LPS display orientation (x toward the patient's left,
y toward posterior, z toward superior, slice 0 most inferior). Images are shown in the
radiological convention: the patient's right on the image's left (x index 0 on the left, no
flip), anterior at the top of axial images, superior at the top of coronal images (z flipped).
Pixels are drawn in millimetres, so the physical aspect ratio follows the voxel spacing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.patches import Rectangle

from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.registry import INFECTION_COLORS, LEFT_LUNG, LUNG_COLORS, MODELS, RIGHT_LUNG
from napari_chsnet.report.fonts import cover_missing_glyphs, covering_font, is_printable
from napari_chsnet.report.manifest import DISCLAIMER, STUDY_FIELDS, file_sha256
from napari_chsnet.report.severity import GRADE_DESCRIPTIONS, clean_infection, format_figure, format_percent
from napari_chsnet.slabs import slab_step

A4_PORTRAIT_IN = (8.27, 11.69)
LUNG_WINDOW_HU = (-1350.0, 150.0)  # level -600, width 1500
PROBABILITY_FLOOR = 0.05  # probabilities below this are left transparent over the CT
CROP_MARGIN_MM = 15.0
GRADE_COLORS = {
    "CT-0": "#2e7d32",
    "CT-1": "#9e9d24",
    "CT-2": "#ef6c00",
    "CT-3": "#d84315",
    "CT-4": "#b71c1c",
}
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


# ---------------------------------------------------------------- planes and slice choice


def axial_image(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial plane ``z`` as shown: rows anterior→posterior, columns patient right→left."""
    return volume[z]


def coronal_image(volume: np.ndarray, y: int) -> np.ndarray:
    """Coronal plane ``y`` as shown: rows superior→inferior (z flipped), columns right→left."""
    return volume[::-1, y, :]


def _count_per_plane(lungs: np.ndarray, infection: np.ndarray | None, axis: int) -> np.ndarray:
    """Voxels of the lungs (``infection`` None) or of infection inside the lungs, per plane along
    ``axis`` (0: axial slices, 1: coronal planes), counted a few axial slices at a time."""
    sums = tuple(a for a in range(3) if a != axis)
    counts, step = [], slab_step(lungs.shape)
    for start in range(0, lungs.shape[0], step):
        inside = np.greater(lungs[start : start + step], 0)
        if infection is not None:
            np.logical_and(inside, infection[start : start + step], out=inside)
        counts.append(np.count_nonzero(inside, axis=sums))
    if not counts:
        return np.zeros(lungs.shape[axis], np.intp)
    return np.concatenate(counts) if axis == 0 else np.sum(counts, axis=0)


def select_key_slices(lungs: np.ndarray, infection: np.ndarray, n: int = 3) -> list[int]:
    """Axial slices to show: the ``n`` with the most infection, at least a few slices apart.

    Without infection, slices spread over the lungs' extent (at 1/4, 1/2, 3/4 for n=3).
    Returned superior first (reading order of a radiologist scrolling down).
    """
    depth = lungs.shape[0]
    lung_z = np.flatnonzero(_count_per_plane(lungs, None, axis=0))
    if lung_z.size == 0:
        lung_z = np.arange(depth)
    per_slice = _count_per_plane(lungs, infection, axis=0)
    chosen: list[int] = []
    if per_slice.any():
        # Neighbouring slices look alike; keep picks apart so the page shows different levels.
        min_gap = max(1, int(round((lung_z[-1] - lung_z[0] + 1) / (4 * n))))
        for z in np.argsort(-per_slice, kind="stable"):
            if per_slice[z] == 0 or len(chosen) == n:
                break
            if all(abs(int(z) - c) >= min_gap for c in chosen):
                chosen.append(int(z))
    if len(chosen) < n:
        spread = np.linspace(lung_z[0], lung_z[-1], n + 2)[1:-1].round().astype(int)
        for z in spread:
            if len(chosen) == n:
                break
            if int(z) not in chosen:
                chosen.append(int(z))
    return sorted(chosen, reverse=True)


def select_coronal_plane(lungs: np.ndarray, infection: np.ndarray) -> int:
    """Coronal plane (y index) with the most infection, or the most lung if there is none."""
    per_plane = _count_per_plane(lungs, infection, axis=1)
    if per_plane.any():
        return int(np.argmax(per_plane))
    return int(np.argmax(_count_per_plane(lungs, None, axis=1)))


def _crop_box(mask_2d: np.ndarray, spacing_rc: tuple[float, float]) -> tuple[slice, slice]:
    """Rows/columns of the mask's bounding box plus a margin in mm (the whole plane if empty)."""
    if not mask_2d.any():
        return slice(None), slice(None)
    box = []
    for axis, step in zip((1, 0), spacing_rc, strict=True):
        idx = np.flatnonzero(mask_2d.any(axis=axis))
        margin = int(np.ceil(CROP_MARGIN_MM / step))
        box.append(slice(max(0, idx[0] - margin), min(mask_2d.shape[1 - axis], idx[-1] + margin + 1)))
    return box[0], box[1]


# ---------------------------------------------------------------- drawing primitives


def _extent(shape: tuple[int, int], spacing_rc: tuple[float, float]) -> tuple[float, float, float, float]:
    rows, cols = shape
    return (0.0, cols * spacing_rc[1], rows * spacing_rc[0], 0.0)


def _draw_ct(ax: Axes, hu_2d: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    ax.imshow(
        hu_2d,
        cmap="gray",
        vmin=LUNG_WINDOW_HU[0],
        vmax=LUNG_WINDOW_HU[1],
        extent=_extent(hu_2d.shape, spacing_rc),
        interpolation="bilinear",
    )
    ax.set_axis_off()


def _draw_lung_contours(ax: Axes, lungs_2d: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    if min(lungs_2d.shape) < 2:  # the coronal plane of a one-slice scan: no outline to draw
        return
    rows = (np.arange(lungs_2d.shape[0]) + 0.5) * spacing_rc[0]
    cols = (np.arange(lungs_2d.shape[1]) + 0.5) * spacing_rc[1]
    for label in (RIGHT_LUNG, LEFT_LUNG):
        mask = lungs_2d == label
        if mask.any() and not mask.all():
            ax.contour(
                cols,
                rows,
                mask.astype(np.float32),
                levels=[0.5],
                colors=[LUNG_COLORS[label][:3]],
                linewidths=1.0,
            )


def _draw_infection(ax: Axes, infection_2d: np.ndarray, spacing_rc: tuple[float, float]) -> None:
    """The counted infection as a red outline, so the CT under it stays visible.

    The mask is padded with one empty pixel, so infection touching the image's edge (or a coronal
    plane one slice high) is still closed by an outline; the axes keep the CT's extent."""
    mask = np.asarray(infection_2d) > 0
    if not mask.any():
        return
    padded = np.pad(mask, 1).astype(np.float32)
    rows = (np.arange(-1, mask.shape[0] + 1) + 0.5) * spacing_rc[0]
    cols = (np.arange(-1, mask.shape[1] + 1) + 0.5) * spacing_rc[1]
    left, right, bottom, top = _extent(mask.shape, spacing_rc)
    ax.contour(cols, rows, padded, levels=[0.5], colors=[INFECTION_COLORS[1][:3]], linewidths=1.3)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)


def _draw_probability(ax: Axes, probability_2d: np.ndarray, spacing_rc: tuple[float, float]) -> Any:
    shown = np.ma.masked_less(probability_2d.astype(np.float32), PROBABILITY_FLOOR)
    return ax.imshow(
        shown,
        cmap="jet",
        vmin=0.0,
        vmax=1.0,
        alpha=0.6,
        extent=_extent(probability_2d.shape, spacing_rc),
        interpolation="bilinear",
    )


def _orientation_labels(ax: Axes, top: str, bottom: str) -> None:
    """Patient-side letters: R on the image's left, L on its right (radiological convention)."""
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    style = {
        "transform": ax.transAxes,
        "color": "white",
        "fontsize": 11,
        "fontweight": "bold",
        "path_effects": outline,
    }
    ax.text(0.03, 0.5, "R", ha="left", va="center", **style)
    ax.text(0.97, 0.5, "L", ha="right", va="center", **style)
    ax.text(0.5, 0.97, top, ha="center", va="top", **style)
    ax.text(0.5, 0.03, bottom, ha="center", va="bottom", **style)


def _plane_panels(
    axes: Sequence[Axes],
    planes: dict[str, np.ndarray | None],
    spacing_rc: tuple[float, float],
    top_bottom: tuple[str, str],
) -> Any:
    """Draw CT + lung and infection outlines on ``axes[0]`` and CT + JET probability on ``axes[1]``."""
    crop = _crop_box(planes["lungs"] > 0, spacing_rc)
    hu, lungs, infection = (planes[k][crop] for k in ("hu", "lungs", "infection"))
    for ax in axes:
        ax.set_anchor("N")  # equal-aspect images sit under their titles; spare height goes below
    _draw_ct(axes[0], hu, spacing_rc)
    _draw_lung_contours(axes[0], lungs, spacing_rc)
    _draw_infection(axes[0], infection, spacing_rc)  # over the lung outline where they meet
    _orientation_labels(axes[0], *top_bottom)
    _draw_ct(axes[1], hu, spacing_rc)
    mappable = None
    if planes["probability"] is not None:
        mappable = _draw_probability(axes[1], planes["probability"][crop], spacing_rc)
    else:
        axes[1].text(
            0.5,
            0.5,
            "probability map\nnot available",
            transform=axes[1].transAxes,
            ha="center",
            va="center",
            color="white",
        )
    _draw_lung_contours(axes[1], lungs, spacing_rc)
    _orientation_labels(axes[1], *top_bottom)
    return mappable


# ---------------------------------------------------------------- text layout

PAGE_WIDTH_PT = A4_PORTRAIT_IN[0] * 72
PAGE_HEIGHT_PT = A4_PORTRAIT_IN[1] * 72
LEFT, RIGHT = 0.06, 0.94  # text margins, figure fraction
STUDY_SIZE = 8.5
WARNING_SIZE = 8.5
DETAIL_SIZE = 7.5
LIMITS_SIZE = 7.5
MIN_CORONAL_HEIGHT = 0.17  # page 1 keeps at least this much of the page for the coronal images
MIN_AXIAL_ROW_HEIGHT = 0.15  # page 2 keeps at least this much per key slice
LEGEND_ABOVE = 0.045  # the legend's centre above the text under it: room for the colour bar's labels
TABLE_HEIGHT = 0.1  # the per-lung table (4 rows of 10 pt text, scaled 1.7)


def _line_step(size: float, spacing: float = 1.3) -> float:
    """Height of one line of ``size``-point text, figure fraction."""
    return size * spacing / PAGE_HEIGHT_PT


class _Ruler:
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


def _text(figure: Figure, x: float, y: float, text: str, **kwargs: Any) -> Any:
    """Figure text taken literally (a "$" in a path or a name is not the start of maths)."""
    return figure.text(x, y, text, parse_math=False, **kwargs)


# ---------------------------------------------------------------- study fields and run details


def _dicom_date(value: str) -> str:
    """DICOM DA "19600102" → "1960-01-02"; anything else as it is."""
    match = re.fullmatch(r"\s*(\d{4})(\d{2})(\d{2})\s*", value)
    if match and 1 <= int(match[2]) <= 12 and 1 <= int(match[3]) <= 31:
        return f"{match[1]}-{match[2]}-{match[3]}"
    return value


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
    "PatientBirthDate": _dicom_date,
    "StudyDate": _dicom_date,
    "StudyTime": _dicom_time,
    "PatientAge": _dicom_age,
    "PatientName": lambda value: _printable_name(value),  # defined below
}


def _study_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
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


def _run_details(report: dict[str, Any]) -> list[str]:
    software = report.get("software", {})
    model = report.get("model", "")
    title = MODELS[model].title if model in MODELS else model
    sha = report.get("weights_sha256")
    lines = [f"Model: {title} ({model}); {_weights_identity(model, sha)}"]
    lung_sha = report.get("lung_weights_sha256")
    if lung_sha and lung_sha != sha:
        lines.append(f"Lung stage (CHS-Net): {_weights_identity('chsnet', lung_sha)}")
    lines.append(f"Device: {report.get('device', '')}; runtime {report.get('runtime_s', 0.0):.1f} s")
    lines.append("Software: " + ", ".join(f"{k} {v}" for k, v in software.items()))
    return lines


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
class _Bullet:
    """One warning, wrapped to the warnings box's width; ``continued`` when its first lines are on
    the previous page."""

    lines: list[str]
    continued: bool = False


_BOX_PAD = 0.007
_BULLET_INDENT = 0.018
_BULLET_GAP = 0.003


def _wrap_warnings(ruler: _Ruler, warnings: Sequence[str]) -> list[_Bullet]:
    width = RIGHT - LEFT - 2 * _BOX_PAD - _BULLET_INDENT
    return [_Bullet(ruler.wrap(str(w), WARNING_SIZE, width)) for w in warnings]


def _warnings_box(
    figure: Figure, bullets: list[_Bullet], top: float, floor: float, title: str
) -> tuple[float, list[_Bullet]]:
    """Draw a red-framed box of ``bullets`` from ``top`` down to no lower than ``floor``.

    Whole warnings that do not fit are left for the next page (a warning is split only when not one
    fits whole), and the box then ends with a note that the warnings go on. Returns the box's bottom
    and the warnings left over."""
    step = _line_step(WARNING_SIZE)
    y = top - _BOX_PAD
    _text(figure, LEFT + _BOX_PAD, y, title, fontsize=9.5, fontweight="bold", color="#b71c1c", va="top")
    y -= _line_step(9.5, 1.45)
    left: list[_Bullet] = []
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
            _text(figure, LEFT + _BOX_PAD + 0.004, y, "•", fontsize=WARNING_SIZE, color="#b71c1c", va="top")
        for line in bullet.lines[:n_lines]:
            _text(
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
            left = [_Bullet(bullet.lines[n_lines:], continued=True), *bullets[i + 1 :]]
            break
    if left:
        _text(
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


# ---------------------------------------------------------------- pages


def _new_page() -> Figure:
    figure = Figure(figsize=A4_PORTRAIT_IN)
    FigureCanvasAgg(figure)
    return figure


def _footer(figure: Figure, page: int, n_pages: int, report: dict[str, Any]) -> None:
    figure.text(0.06, 0.036, DISCLAIMER, ha="left", va="bottom", fontsize=7.5, color="#b71c1c", wrap=True)
    _text(
        figure,
        0.06,
        0.018,
        f"napari-chsnet {report.get('software', {}).get('napari_chsnet', '')}  ·  "
        f"case {report.get('case', '')}  ·  {report.get('timestamp', '')}",
        fontsize=7,
        color="#555555",
    )
    figure.text(0.94, 0.018, f"page {page} of {n_pages}", ha="right", fontsize=7, color="#555555")


FOOTER_TOP = 0.064  # above the footer's disclaimer (two lines) and case line


def _printable_name(name: str) -> str:
    """A DICOM name's alphabetic group ("Yamada Tarou=山田 太郎=やまだ たろう" → "Yamada Tarou")
    when no installed font draws the whole name; the whole name otherwise."""
    if "=" not in name or is_printable(name):
        return name
    return next((group for group in name.split("=") if group.strip() and is_printable(group)), name)


def _severity_table(ax: Axes, report: dict[str, Any]) -> None:
    lungs, overall = report["lungs"], report["overall"]
    rows = [
        ("Right lung", lungs["right"]),
        ("Left lung", lungs["left"]),
    ]
    # An empty lung mask's CT-0 means "not measured" (the severity's warning), not a normal lung:
    # the table must not show it in the green of a healthy one.
    cells = [
        [
            name,
            format_figure(v["volume_ml"]),
            format_figure(v["infected_ml"]),
            format_percent(v["involvement_pct"]),
            v["grade"] if v["volume_ml"] > 0 else f"{v['grade']} not measured",
        ]
        for name, v in rows
    ]
    cells.append(
        [
            "Both lungs",
            format_figure(overall["volume_ml"]),
            format_figure(overall["infected_ml"]),
            format_percent(overall["involvement_pct"]),
            f"{overall['grade']} (worse lung)",
        ]
    )
    ax.set_axis_off()
    table = ax.table(
        cellText=cells,
        colLabels=["", "Lung volume (mL)", "Infected (mL)", "Involvement (%)", "Grade"],
        cellLoc="center",
        loc="upper center",
        colWidths=[0.17, 0.2, 0.17, 0.2, 0.26],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1.0, 1.7)
    for (row, col), cell in table.get_celld().items():
        cell.set_edgecolor("#999999")
        if row == 0:
            cell.set_facecolor("#e8eaf0")
            cell.set_text_props(fontweight="bold")
        if col == 0 and row > 0:
            cell.set_text_props(fontweight="bold", ha="left")
        if col == 4 and row > 0:
            text = cells[row - 1][4]
            color = "#777777" if "not measured" in text else GRADE_COLORS.get(text.split()[0], "black")
            cell.set_text_props(color=color, fontweight="bold")
        if row == len(cells):
            cell.set_facecolor("#f4f4f4")


def _uncounted_note(report: dict[str, Any]) -> str:
    """What the figures leave out, in numbers: removed islands and infection outside the lungs."""
    removed = report.get("small_lesions_removed", {})
    note = (
        f"Not counted: {removed.get('components', 0)} infection islands < {report['min_lesion_ml']:g} mL "
        f"({removed.get('volume_ml', 0.0):.2f} mL)"
    )
    outside_ml = report.get("infection_outside_lungs_ml", 0.0)
    if outside_ml:  # one line of the page: short words
        note += f" and {outside_ml:.2f} mL of infection outside the lungs"
    return note + ". Involvement = infected / lung volume."


def plane_position_mm(geometry: Geometry, shape: tuple[int, int, int], axis: int, index: int) -> float:
    """LPS coordinate (mm) of display plane ``index`` along array ``axis`` (0: z of an axial slice,
    1: y of a coronal plane), at the middle of the plane (the same everywhere on it unless the
    scan was oblique)."""
    centre = [(n - 1) / 2 for n in shape]  # (z, y, x)
    centre[axis] = index
    offset = np.asarray(geometry.spacing_mm) * np.asarray(centre[::-1])  # (x, y, z) in mm along the grid
    point = (
        np.asarray(geometry.origin_mm) + np.asarray(geometry.direction, dtype=float).reshape(3, 3) @ offset
    )
    return float(point[2 - axis])


def _field_rows(
    figure: Figure,
    ruler: _Ruler,
    rows: Sequence[tuple[str, str]],
    x: float,
    value_x: float,
    right: float,
    top: float,
    breaks: str = " ",
) -> float:
    """Label/value rows, values wrapped between ``value_x`` and ``right``; returns the y below them."""
    line = _line_step(STUDY_SIZE, 1.25)
    row_gap = _line_step(STUDY_SIZE, 1.58) - line
    y = top
    for label, value in rows:
        _text(figure, x, y, f"{label}:", fontsize=STUDY_SIZE, color="#555555", va="top", gid="study-label")
        for part in ruler.wrap(value, STUDY_SIZE, right - value_x, breaks=breaks):
            _text(figure, value_x, y, part, fontsize=STUDY_SIZE, va="top", gid="study-value")
            y -= line
        y -= row_gap
    return y


def _study_block(figure: Figure, ruler: _Ruler, report: dict[str, Any], ct: CTVolume, top: float) -> float:
    """Study fields in two columns, then the input and the acquisition across the page. Each label
    column is as wide as its widest label, so no label runs into its value; values wrap."""
    fields = _study_lines(report)
    half = (len(fields) + 1) // 2
    columns = [fields[:half], fields[half:]]
    wide = [
        ("Input", str(report.get("input", ""))),
        ("Acquisition", acquisition_line(report, ct)),
    ]
    gap = 0.015
    middle = 0.5 + gap
    bottoms = []
    for column, chunk in enumerate(columns):
        if not chunk:
            continue
        labels = [label for label, _ in chunk] + ([label for label, _ in wide] if column == 0 else [])
        x = LEFT if column == 0 else middle
        value_x = x + max(ruler.width(f"{label}:", STUDY_SIZE) for label in labels) + gap
        right = 0.5 - gap if column == 0 else RIGHT
        bottoms.append(_field_rows(figure, ruler, chunk, x, value_x, right, top))
        if column == 0:
            wide_value_x = value_x
    y = min(bottoms)
    y = _field_rows(figure, ruler, wide[:1], LEFT, wide_value_x, RIGHT, y, breaks=" /\\_-.")
    return _field_rows(figure, ruler, wide[1:], LEFT, wide_value_x, RIGHT, y, breaks="·")


def _grade_row(figure: Figure, ruler: _Ruler, report: dict[str, Any], top: float) -> float:
    """ "Overall severity: [CT-n]" (the badge saying so when there are warnings) and the grade's meaning."""
    grade = report["overall"]["grade"]
    badge = grade + (" — see warnings below" if report.get("warnings") else "")
    _text(figure, LEFT, top, "Overall severity:", fontsize=13, va="top")
    pad_pt = 0.3 * 13
    badge_x = LEFT + ruler.width("Overall severity:", 13) + 0.02 + pad_pt / PAGE_WIDTH_PT
    _text(
        figure,
        badge_x,
        top,
        badge,
        fontsize=13,
        va="top",
        fontweight="bold",
        color="white",
        gid="grade-badge",
        bbox={"boxstyle": "round,pad=0.3", "facecolor": GRADE_COLORS.get(grade, "gray"), "edgecolor": "none"},
    )
    description_x = badge_x + ruler.width(badge, 13, bold=True) + pad_pt / PAGE_WIDTH_PT + 0.02
    description = f"{GRADE_DESCRIPTIONS.get(grade, '')}  (grade of the worse lung)"
    lines = ruler.wrap(description, 10, RIGHT - description_x)
    for i, line in enumerate(lines):
        _text(
            figure,
            description_x,
            top - 0.002 - i * _line_step(10, 1.2),
            line,
            fontsize=10,
            va="top",
            color="#333333",
        )
    return top - max(_line_step(13, 1.2) + 2 * pad_pt / PAGE_HEIGHT_PT, len(lines) * _line_step(10, 1.2))


def _bottom_block(
    figure: Figure, ruler: _Ruler, lines: Sequence[str], size: float, title: str | None = None
) -> float:
    """Lines of small text ending just above the footer (drawn top down, the order a PDF reader
    extracts them in); returns the top of the block."""
    step = _line_step(size, 1.3)
    wrapped = [part for line in lines for part in ruler.wrap(line, size, RIGHT - LEFT)]
    title_step = _line_step(size + 1, 1.4) if title else 0.0
    top = FOOTER_TOP + len(wrapped) * step + title_step
    y = top
    if title:
        _text(figure, LEFT, y, title, fontsize=size + 1, fontweight="bold", va="top")
        y -= title_step
    for part in wrapped:
        _text(figure, LEFT, y, part, fontsize=size, color="#333333", va="top")
        y -= step
    return top


def render_summary_page(
    report: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None,
) -> tuple[Figure, list[_Bullet]]:
    """Page 1: study fields, acquisition, overall grade, warnings, per-lung table, coronal overview,
    run details. Returns the page and the warnings that did not fit on it (for the next page)."""
    figure = _new_page()
    ruler = _Ruler(figure)
    figure.text(0.06, 0.955, "Chest CT — COVID-19 lung involvement", fontsize=17, fontweight="bold")
    figure.text(
        0.06,
        0.937,
        "Automated per-lung severity report (MosMed grading CT-0 … CT-4)",
        fontsize=10,
        color="#444444",
    )
    figure.text(
        0.5,
        0.912,
        "Research tool — not for clinical diagnosis",
        ha="center",
        va="center",
        fontsize=11,
        fontweight="bold",
        color="white",
        bbox={"boxstyle": "round,pad=0.4", "facecolor": "#b71c1c", "edgecolor": "none"},
    )
    y = _study_block(figure, ruler, report, ct, 0.888)
    y = _grade_row(figure, ruler, report, y - 0.008) - 0.008

    # Bottom up: run details, the legend and colour bar, then the coronal images' least height.
    details_top = _bottom_block(figure, ruler, _run_details(report), DETAIL_SIZE)
    legend_y = details_top + LEGEND_ABOVE
    images_bottom = legend_y + 0.024
    # the table, the grading legend and the uncounted note; the view's title and the panels' titles
    below_grade = TABLE_HEIGHT + 0.05 + 0.06
    leftover: list[_Bullet] = []
    if report.get("warnings"):
        bullets = _wrap_warnings(ruler, report["warnings"])
        floor = images_bottom + MIN_CORONAL_HEIGHT + below_grade
        y, leftover = _warnings_box(figure, bullets, y, floor, "Warnings — read before using the figures")
        y -= 0.01

    table_ax = figure.add_axes((0.06, y - TABLE_HEIGHT, 0.88, TABLE_HEIGHT))
    _severity_table(table_ax, report)
    y = table_ax.tables[0].get_window_extent(ruler.renderer).y0 / figure.bbox.height - 0.008
    legend = "   ".join(f"{g}: {d}" for g, d in GRADE_DESCRIPTIONS.items())
    for line in (f"Grades per lung — {legend}.", _uncounted_note(report)):
        figure.text(0.06, y, line, fontsize=7, color="#444444", va="top")
        y -= _line_step(7, 1.45)

    # Coronal overview.
    y_plane = select_coronal_plane(lungs, infection)
    spacing = ct.geometry.spacing_mm
    planes = {
        "hu": coronal_image(ct.hu, y_plane),
        "lungs": coronal_image(lungs, y_plane),
        "infection": coronal_image(infection, y_plane),
        "probability": None if probability is None else coronal_image(probability, y_plane),
    }
    view_top = y - 0.012
    y_mm = plane_position_mm(ct.geometry, ct.shape, 1, y_plane)
    most = "infection" if np.any(infection[:, y_plane]) else "lung"
    figure.text(
        0.06,
        view_top,
        f"Coronal view at y = {y_mm:.1f} mm (LPS, + posterior), the plane with the most {most}",
        fontsize=10,
        fontweight="bold",
        va="top",
    )
    axes = [
        figure.add_axes((0.05, images_bottom, 0.44, view_top - 0.048 - images_bottom)),
        figure.add_axes((0.51, images_bottom, 0.44, view_top - 0.048 - images_bottom)),
    ]
    mappable = _plane_panels(axes, planes, (spacing[2], spacing[0]), ("S", "I"))
    axes[0].set_title("CT with lung and infection outlines", fontsize=9)
    axes[1].set_title("Infection probability (JET)", fontsize=9)
    _legend_and_colorbar(figure, mappable, legend_y)
    return figure, leftover


def _legend_and_colorbar(figure: Figure, mappable: Any, y: float) -> None:
    items = [
        ("right lung", LUNG_COLORS[RIGHT_LUNG][:3]),
        ("left lung", LUNG_COLORS[LEFT_LUNG][:3]),
        ("infection", INFECTION_COLORS[1][:3]),
    ]
    for i, (name, color) in enumerate(items):
        x = 0.07 + i * 0.13
        figure.add_artist(  # outlines, as drawn on the images
            Rectangle(
                (x, y - 0.005),
                0.018,
                0.01,
                transform=figure.transFigure,
                facecolor="none",
                edgecolor=color,
                linewidth=1.5,
            )
        )
        figure.text(
            x + 0.025, y, f"{name} (outline)" if name == "infection" else name, fontsize=8, va="center"
        )
    if mappable is not None:
        cax = figure.add_axes((0.56, y - 0.006, 0.34, 0.012))
        bar = figure.colorbar(mappable, cax=cax, orientation="horizontal")
        bar.set_label("infection probability", fontsize=8)
        bar.ax.tick_params(labelsize=7)


def render_key_slices_page(
    report: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None,
    n_slices: int = 3,
    warnings: list[_Bullet] | None = None,
) -> tuple[Figure, list[_Bullet]]:
    """Page 2: page 1's left-over warnings, the axial slices with the most infection (outlines on the
    left, JET on the right), the limits of the figures. Returns the page and the warnings still left."""
    figure = _new_page()
    ruler = _Ruler(figure)
    figure.text(0.06, 0.955, "Axial key slices", fontsize=15, fontweight="bold")
    figure.text(
        0.06,
        0.938,
        "Slices with the most infection; lung window W 1500 / L −600 HU. "
        "Outlines: right lung blue, left lung green, infection red.",
        fontsize=8.5,
        color="#444444",
    )
    limits_top = _bottom_block(figure, ruler, [limits_text(report)], LIMITS_SIZE, title="Limits")
    legend_y = limits_top + LEGEND_ABOVE
    rows_bottom = legend_y + 0.024
    top = 0.925
    leftover: list[_Bullet] = []
    if warnings:
        floor = rows_bottom + n_slices * MIN_AXIAL_ROW_HEIGHT
        top, leftover = _warnings_box(figure, warnings, 0.928, floor, "Warnings (continued from page 1)")
        top -= 0.005
    spacing = ct.geometry.spacing_mm
    slices = select_key_slices(lungs, infection, n_slices)
    voxel_ml = ct.geometry.voxel_volume_ml
    row_height = (top - rows_bottom) / max(1, len(slices))
    mappable = None
    for i, z in enumerate(slices):
        row_top = top - i * row_height
        planes = {
            "hu": axial_image(ct.hu, z),
            "lungs": axial_image(lungs, z),
            "infection": axial_image(infection, z),
            "probability": None if probability is None else axial_image(probability, z),
        }
        axes = [
            figure.add_axes((0.05, row_top - row_height + 0.01, 0.44, row_height - 0.035)),
            figure.add_axes((0.51, row_top - row_height + 0.01, 0.44, row_height - 0.035)),
        ]
        mappable = _plane_panels(axes, planes, (spacing[1], spacing[0]), ("A", "P")) or mappable
        infected_ml = np.count_nonzero(infection[z]) * voxel_ml
        position_mm = plane_position_mm(ct.geometry, ct.shape, 0, z)
        figure.text(
            0.06,
            row_top - 0.02,
            f"Slice {z + 1} of {ct.shape[0]} (z = {position_mm:.1f} mm): {format_figure(infected_ml)} mL infected "
            "in this slice",
            fontsize=9,
            fontweight="bold",
        )
    _legend_and_colorbar(figure, mappable, legend_y)
    return figure, leftover


def _warnings_page(bullets: list[_Bullet], previous_page: int) -> tuple[Figure, list[_Bullet]]:
    """A page of nothing but warnings, for the rare report whose warnings fill pages 1 and 2."""
    figure = _new_page()
    title = f"Warnings (continued from page {previous_page})"
    _, leftover = _warnings_box(figure, bullets, 0.965, FOOTER_TOP + 0.01, title)
    return figure, leftover


def render_report_figures(
    report: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None = None,
    *,
    infection_is_clean: bool = False,
) -> list[Figure]:
    """All pages of the PDF report, in order: two, unless the warnings need more room.

    The red outlines and the choice of key slices use the infection as counted in the figures
    (inside the lungs, islands below ``report["min_lesion_ml"]`` removed), so the pictures agree
    with the table; the JET panels show the model's raw probability.

    Args:
        infection_is_clean: ``infection`` is already ``clean_infection``'s mask for these lungs and
            ``report["min_lesion_ml"]`` (the pipeline's ``result.infection``), so it is drawn as it
            is. The cleaning is idempotent, so this changes no picture, it only skips a second pass
            over the volume (0.5 s and +200 MB at 592 x 512 x 512). Layers a user may have
            painted must be cleaned: leave it False.
    """
    lungs = np.asarray(lungs)
    infection = np.asarray(infection)
    if not infection_is_clean:
        min_lesion_ml = float(report.get("min_lesion_ml", 0.0))
        infection = clean_infection(lungs, infection, ct.geometry, min_lesion_ml).mask
    summary, leftover = render_summary_page(report, ct, lungs, infection, probability)
    key_slices, leftover = render_key_slices_page(
        report, ct, lungs, infection, probability, warnings=leftover
    )
    figures = [summary, key_slices]
    while leftover:
        page, left = _warnings_page(leftover, len(figures))
        if left == leftover:  # nothing fitted (cannot happen with sane text): stop rather than loop
            break
        figures.append(page)
        leftover = left
    for number, figure in enumerate(figures, start=1):
        _footer(figure, number, len(figures), report)
        cover_missing_glyphs(figure)  # names and paths in any script, not just DejaVu Sans's
    return figures
