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

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from napari_chsnet.io.volume import CTVolume
from napari_chsnet.registry import INFECTION_COLORS, LEFT_LUNG, LUNG_COLORS, MODELS, RIGHT_LUNG
from napari_chsnet.report.fonts import cover_missing_glyphs, is_printable
from napari_chsnet.report.manifest import DISCLAIMER, STUDY_FIELDS
from napari_chsnet.report.severity import GRADE_DESCRIPTIONS, clean_infection
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
    "SliceThickness": "Slice thickness (mm)",
    "KVP": "kVp",
    "ConvolutionKernel": "Kernel",
}


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
    overlay = np.zeros((*infection_2d.shape, 4), dtype=np.float32)
    overlay[infection_2d.astype(bool)] = (*INFECTION_COLORS[1][:3], 0.5)
    ax.imshow(overlay, extent=_extent(infection_2d.shape, spacing_rc), interpolation="nearest")


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
    """Draw CT + lung contours + infection on ``axes[0]`` and CT + JET probability on ``axes[1]``."""
    crop = _crop_box(planes["lungs"] > 0, spacing_rc)
    hu, lungs, infection = (planes[k][crop] for k in ("hu", "lungs", "infection"))
    for ax in axes:
        ax.set_anchor("N")  # equal-aspect images sit under their titles; spare height goes below
    _draw_ct(axes[0], hu, spacing_rc)
    _draw_infection(axes[0], infection, spacing_rc)
    _draw_lung_contours(axes[0], lungs, spacing_rc)
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


# ---------------------------------------------------------------- pages


def _new_page() -> Figure:
    figure = Figure(figsize=A4_PORTRAIT_IN)
    FigureCanvasAgg(figure)
    return figure


def _footer(figure: Figure, page: int, n_pages: int, report: dict[str, Any]) -> None:
    figure.text(0.06, 0.036, DISCLAIMER, ha="left", va="bottom", fontsize=7.5, color="#b71c1c", wrap=True)
    figure.text(
        0.06,
        0.018,
        f"napari-chsnet {report.get('software', {}).get('napari_chsnet', '')}  ·  "
        f"case {report.get('case', '')}  ·  {report.get('timestamp', '')}",
        fontsize=7,
        color="#555555",
    )
    figure.text(0.94, 0.018, f"page {page} of {n_pages}", ha="right", fontsize=7, color="#555555")


def _study_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    study = report.get("study", {})
    lines = []
    if report.get("anonymized"):
        lines.append(("Patient", "anonymised"))
    for key in STUDY_FIELDS:
        if key in study and key in _STUDY_LABELS:
            value = str(study[key])
            if key == "PatientName":
                value = _printable_name(value)
            lines.append((_STUDY_LABELS[key], value))
    if not lines:
        lines.append(("Patient", "no DICOM patient/study fields in the input"))
    lines.append(("Input", str(report.get("input", ""))))
    return lines


def _printable_name(name: str) -> str:
    """A DICOM name's alphabetic group ("Yamada Tarou=山田 太郎=やまだ たろう" → "Yamada Tarou")
    when no installed font draws the whole name; the whole name otherwise."""
    if "=" not in name or is_printable(name):
        return name
    return next((group for group in name.split("=") if group.strip() and is_printable(group)), name)


def _fmt(value: float, digits: int = 1) -> str:
    """One decimal, but a non-zero amount never prints as 0.0 (a CT-1 lung next to "0.0 %")."""
    smallest = 10.0**-digits
    if 0 < value < smallest / 2:
        return f"< {smallest:.{digits}f}"
    return f"{value:,.{digits}f}"


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
            _fmt(v["volume_ml"]),
            _fmt(v["infected_ml"]),
            _fmt(v["involvement_pct"]),
            v["grade"] if v["volume_ml"] > 0 else f"{v['grade']} not measured",
        ]
        for name, v in rows
    ]
    cells.append(
        [
            "Both lungs",
            _fmt(overall["volume_ml"]),
            _fmt(overall["infected_ml"]),
            _fmt(overall["involvement_pct"]),
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


def render_summary_page(
    report: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None,
    n_pages: int = 2,
) -> Figure:
    """Page 1: study fields, per-lung table, overall grade, coronal overview, run details."""
    figure = _new_page()
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

    # Study block, two columns.
    lines = _study_lines(report)
    half = (len(lines) + 1) // 2
    for column, chunk in enumerate((lines[:half], lines[half:])):
        for i, (label, value) in enumerate(chunk):
            y = 0.885 - i * 0.016
            x = 0.06 + column * 0.46
            figure.text(x, y, f"{label}:", fontsize=8.5, color="#555555")
            shown = value if len(value) <= 46 else "…" + value[-45:]
            figure.text(x + 0.12, y, shown, fontsize=8.5)
    table_top = 0.885 - half * 0.016 - 0.015

    overall = report["overall"]
    grade = overall["grade"]
    figure.text(0.06, table_top - 0.01, "Overall severity:", fontsize=13, va="top")
    figure.text(
        0.27,
        table_top - 0.01,
        f"{grade}",
        fontsize=13,
        va="top",
        fontweight="bold",
        color="white",
        bbox={"boxstyle": "round,pad=0.3", "facecolor": GRADE_COLORS.get(grade, "gray"), "edgecolor": "none"},
    )
    figure.text(
        0.35,
        table_top - 0.01,
        f"{GRADE_DESCRIPTIONS.get(grade, '')}  (grade of the worse lung)",
        fontsize=10,
        va="top",
        color="#333333",
    )

    table_ax = figure.add_axes((0.06, table_top - 0.17, 0.88, 0.13))
    _severity_table(table_ax, report)
    legend = "   ".join(f"{g}: {d}" for g, d in GRADE_DESCRIPTIONS.items())
    figure.text(
        0.06, table_top - 0.175, f"Grades per lung — {legend}.", fontsize=7, color="#444444", wrap=True
    )
    figure.text(0.06, table_top - 0.19, _uncounted_note(report), fontsize=7, color="#444444")

    # Coronal overview.
    y_plane = select_coronal_plane(lungs, infection)
    spacing = ct.geometry.spacing_mm
    planes = {
        "hu": coronal_image(ct.hu, y_plane),
        "lungs": coronal_image(lungs, y_plane),
        "infection": coronal_image(infection, y_plane),
        "probability": None if probability is None else coronal_image(probability, y_plane),
    }
    view_top = table_top - 0.225
    figure.text(
        0.06,
        view_top,
        f"Coronal view (plane y = {y_plane}, the plane with the most infection)",
        fontsize=10,
        fontweight="bold",
    )
    axes = [
        figure.add_axes((0.05, 0.2, 0.44, view_top - 0.245)),
        figure.add_axes((0.51, 0.2, 0.44, view_top - 0.245)),
    ]
    mappable = _plane_panels(axes, planes, (spacing[2], spacing[0]), ("S", "I"))
    axes[0].set_title("Lungs and infection", fontsize=9)
    axes[1].set_title("Infection probability (JET)", fontsize=9)
    _legend_and_colorbar(figure, mappable, 0.16)

    # Run details.
    software = report.get("software", {})
    model_key = report.get("model", "")
    model_title = MODELS[model_key].title if model_key in MODELS else model_key
    sha = report.get("weights_sha256") or "unknown"
    details = [
        f"Model: {model_title} ({model_key}); weights SHA-256 {sha[:16]}{'…' if len(sha) > 16 else ''}",
        f"Device: {report.get('device', '')}; runtime {report.get('runtime_s', 0.0):.1f} s; voxel spacing "
        f"{' × '.join(f'{s:g}' for s in spacing)} mm (x × y × z)",
        "Software: " + ", ".join(f"{k} {v}" for k, v in software.items()),
    ]
    for i, line in enumerate(details):
        figure.text(0.06, 0.088 - i * 0.013, line, fontsize=7.5, color="#333333")
    warnings = report.get("warnings", [])
    if warnings:
        figure.text(  # below the colour bar's label, two lines above the run details
            0.06,
            0.121,
            _shortened("Warnings: " + " ".join(warnings), 260),
            fontsize=7.5,
            color="#b71c1c",
            wrap=True,
            va="top",
        )
    _footer(figure, 1, n_pages, report)
    return figure


def _shortened(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (report.json has the whole text)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _legend_and_colorbar(figure: Figure, mappable: Any, y: float) -> None:
    items = [
        ("right lung", LUNG_COLORS[RIGHT_LUNG][:3]),
        ("left lung", LUNG_COLORS[LEFT_LUNG][:3]),
        ("infection", INFECTION_COLORS[1][:3]),
    ]
    for i, (name, color) in enumerate(items):
        x = 0.07 + i * 0.13
        figure.add_artist(
            Rectangle(
                (x, y - 0.005), 0.018, 0.01, transform=figure.transFigure, facecolor=color, edgecolor="none"
            )
        )
        figure.text(x + 0.025, y, name, fontsize=8, va="center")
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
    page: int = 2,
    n_pages: int = 2,
) -> Figure:
    """Page 2: the axial slices with the most infection, overlays on the left, JET on the right."""
    figure = _new_page()
    figure.text(0.06, 0.955, "Axial key slices", fontsize=15, fontweight="bold")
    figure.text(
        0.06,
        0.938,
        "Slices with the most infection; lung window W 1500 / L −600 HU. "
        "Contours: right lung blue, left lung green; infection red.",
        fontsize=8.5,
        color="#444444",
    )
    spacing = ct.geometry.spacing_mm
    slices = select_key_slices(lungs, infection, n_slices)
    voxel_ml = ct.geometry.voxel_volume_ml
    row_height = 0.8 / max(1, len(slices))
    mappable = None
    for i, z in enumerate(slices):
        bottom = 0.925 - (i + 1) * row_height + 0.01
        planes = {
            "hu": axial_image(ct.hu, z),
            "lungs": axial_image(lungs, z),
            "infection": axial_image(infection, z),
            "probability": None if probability is None else axial_image(probability, z),
        }
        axes = [
            figure.add_axes((0.05, bottom, 0.44, row_height - 0.035)),
            figure.add_axes((0.51, bottom, 0.44, row_height - 0.035)),
        ]
        mappable = _plane_panels(axes, planes, (spacing[1], spacing[0]), ("A", "P")) or mappable
        infected_ml = np.count_nonzero(infection[z]) * voxel_ml
        position_mm = ct.geometry.origin_mm[2] + z * spacing[2]
        figure.text(
            0.06,
            bottom + row_height - 0.03,
            f"Slice {z + 1} of {ct.shape[0]} (z = {position_mm:.1f} mm): {_fmt(infected_ml)} mL infected "
            "in this slice",
            fontsize=9,
            fontweight="bold",
        )
    _legend_and_colorbar(figure, mappable, 0.1)
    _footer(figure, page, n_pages, report)
    return figure


def render_report_figures(
    report: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None = None,
    *,
    infection_is_clean: bool = False,
) -> list[Figure]:
    """All pages of the PDF report, in order.

    The red overlay and the choice of key slices use the infection as counted in the figures
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
    figures = [
        render_summary_page(report, ct, lungs, infection, probability),
        render_key_slices_page(report, ct, lungs, infection, probability),
    ]
    for figure in figures:  # names and paths in any script, not just DejaVu Sans's
        cover_missing_glyphs(figure)
    return figures
