"""Pictures of the severity report: the A4 pages of ``report.pdf`` as matplotlib figures.

Pure rendering: figures are built from ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state),
so building a report inside napari never opens a window or touches napari's own figures.

The pages are laid out here, from the images of ``pdf_images`` and the text of ``pdf_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from napari_chsnet.inference.cleaning import clean_infection
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.registry import INFECTION_COLORS, LEFT_LUNG, LUNG_COLORS, RIGHT_LUNG
from napari_chsnet.report.fonts import cover_missing_glyphs
from napari_chsnet.report.manifest import DISCLAIMER
from napari_chsnet.report.pdf_images import (
    axial_image,
    coronal_image,
    plane_panels,
    plane_position_mm,
    select_coronal_plane,
    select_key_slices,
)
from napari_chsnet.report.pdf_text import (
    A4_PORTRAIT_IN,
    LEFT,
    PAGE_HEIGHT_PT,
    RIGHT,
    Bullet,
    Ruler,
    acquisition_line,
    limits_text,
    line_step,
    put_text,
    run_details,
    study_lines,
    warnings_box,
    wrap_warnings,
)
from napari_chsnet.report.severity import (
    GRADE_DESCRIPTIONS,
    MIN_PLAUSIBLE_LUNG_ML,
    NOT_MEASURED,
    format_figure,
    format_percent,
    shown_grade,
)

GRADE_COLORS = {
    "CT-0": "#2e7d32",
    "CT-1": "#9e9d24",
    "CT-2": "#ef6c00",
    "CT-3": "#d84315",
    "CT-4": "#b71c1c",
}
PAGE_WIDTH_PT = A4_PORTRAIT_IN[0] * 72
STUDY_SIZE = 8.5
DETAIL_SIZE = 7.5
LIMITS_SIZE = 7.5
MIN_CORONAL_HEIGHT = 0.17  # page 1 keeps at least this much of the page for the coronal images
MIN_AXIAL_ROW_HEIGHT = 0.15  # page 2 keeps at least this much per key slice
LEGEND_ABOVE = 0.045  # the legend's centre above the text under it: room for the colour bar's labels
TABLE_HEIGHT = 0.1  # the per-lung table (4 rows of 10 pt text, scaled 1.7)


# ---------------------------------------------------------------- pages


def _new_page() -> Figure:
    figure = Figure(figsize=A4_PORTRAIT_IN)
    FigureCanvasAgg(figure)
    return figure


def _footer(figure: Figure, page: int, n_pages: int, report: dict[str, Any]) -> None:
    figure.text(0.06, 0.036, DISCLAIMER, ha="left", va="bottom", fontsize=7.5, color="#b71c1c", wrap=True)
    # Two lines under the disclaimer: the case (any length) on the first, the times (of a fixed
    # length) beside the page number on the second, so that neither runs into the page number.
    put_text(
        figure,
        0.06,
        0.0275,
        f"napari-chsnet {report.get('software', {}).get('napari_chsnet', '')}  ·  case {report.get('case', '')}",
        fontsize=7,
        color="#555555",
    )
    put_text(figure, 0.06, 0.017, report_times(report), fontsize=7, color="#555555")
    figure.text(0.94, 0.017, f"page {page} of {n_pages}", ha="right", fontsize=7, color="#555555")


def report_times(report: dict[str, Any]) -> str:
    """The footer's times: when the masks were segmented (the run's ``timestamp``; for masks drawn or
    opened by hand, model ``manual``, no model ran and it is when the report was built) and when the
    report was written (``exported_at``; absent in a report built before it existed)."""
    made = "report built" if report.get("model") == "manual" else "segmented"
    times = [f"{made} {report.get('timestamp', '')}"]
    if report.get("exported_at"):
        times.append(f"report written {report['exported_at']}")
    return "; ".join(times)


def slice_caption(z: int, n_slices: int, position_mm: float) -> str:
    """An axial slice by its array index ``z`` (counted from 0, as napari's slider shows it when this
    CT alone is open: its boxes read ``z`` and ``n_slices - 1``) and its position in mm, which holds
    whatever else is open (with other scans napari's slider spans all of them). Counting from 1 put a
    reader who went to the PDF's slice number in napari one slice off."""
    return f"Axial slice {z} of 0–{n_slices - 1} (z = {position_mm:.1f} mm)"


FOOTER_TOP = 0.064  # above the footer's disclaimer (two lines), case line and times line


def _severity_table(ax: Axes, report: dict[str, Any]) -> None:
    lungs, overall = report["lungs"], report["overall"]
    rows = [
        ("Right lung", lungs["right"]),
        ("Left lung", lungs["left"]),
    ]
    # An empty or too small lung mask is "not measured" (the severity's warning), never the green
    # CT-0 of a healthy lung nor a grade from a fragment.
    cells = [
        [
            name,
            format_figure(v["volume_ml"]),
            format_figure(v["infected_ml"]),
            format_percent(v["involvement_pct"]),
            shown_grade(v),
        ]
        for name, v in rows
    ]
    cells.append(
        [
            "Both lungs",
            format_figure(overall["volume_ml"]),
            format_figure(overall["infected_ml"]),
            format_percent(overall["involvement_pct"]),
            _overall_cell(lungs, overall),
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


def _measured_sides(lungs: dict[str, Any]) -> list[str]:
    return [side for side in ("right", "left") if shown_grade(lungs[side]) != NOT_MEASURED]


def _overall_cell(lungs: dict[str, Any], overall: dict[str, Any]) -> str:
    """The overall grade and where it comes from: the worse lung, or the one lung measured."""
    measured = _measured_sides(lungs)
    if len(measured) == 1:
        return f"{overall['grade']} ({measured[0]} lung only)"
    return f"{overall['grade']} (worse lung)" if measured else NOT_MEASURED


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


def _field_rows(
    figure: Figure,
    ruler: Ruler,
    rows: Sequence[tuple[str, str]],
    x: float,
    value_x: float,
    right: float,
    top: float,
    breaks: str = " ",
) -> float:
    """Label/value rows, values wrapped between ``value_x`` and ``right``; returns the y below them."""
    line = line_step(STUDY_SIZE, 1.25)
    row_gap = line_step(STUDY_SIZE, 1.58) - line
    y = top
    for label, value in rows:
        put_text(figure, x, y, f"{label}:", fontsize=STUDY_SIZE, color="#555555", va="top", gid="study-label")
        for part in ruler.wrap(value, STUDY_SIZE, right - value_x, breaks=breaks):
            put_text(figure, value_x, y, part, fontsize=STUDY_SIZE, va="top", gid="study-value")
            y -= line
        y -= row_gap
    return y


def _study_block(figure: Figure, ruler: Ruler, report: dict[str, Any], ct: CTVolume, top: float) -> float:
    """Study fields in two columns, then the input and the acquisition across the page. Each label
    column is as wide as its widest label, so no label runs into its value; values wrap."""
    fields = study_lines(report)
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


def _grade_row(figure: Figure, ruler: Ruler, report: dict[str, Any], top: float) -> float:
    """ "Overall severity: [CT-n]" (the badge saying so when there are warnings) and the grade's meaning."""
    grade = shown_grade(report["overall"])
    badge = grade + (" — see warnings below" if report.get("warnings") else "")
    put_text(figure, LEFT, top, "Overall severity:", fontsize=13, va="top")
    pad_pt = 0.3 * 13
    badge_x = LEFT + ruler.width("Overall severity:", 13) + 0.02 + pad_pt / PAGE_WIDTH_PT
    put_text(
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
    measured = _measured_sides(report["lungs"])
    if not measured:
        description = f"no lung mask reaches {MIN_PLAUSIBLE_LUNG_ML:g} mL, so no lung is graded"
    elif len(measured) == 1:
        description = f"{GRADE_DESCRIPTIONS[grade]}  (grade of the {measured[0]} lung, the only one measured)"
    else:
        description = f"{GRADE_DESCRIPTIONS[grade]}  (grade of the worse lung)"
    lines = ruler.wrap(description, 10, RIGHT - description_x)
    for i, line in enumerate(lines):
        put_text(
            figure,
            description_x,
            top - 0.002 - i * line_step(10, 1.2),
            line,
            fontsize=10,
            va="top",
            color="#333333",
        )
    return top - max(line_step(13, 1.2) + 2 * pad_pt / PAGE_HEIGHT_PT, len(lines) * line_step(10, 1.2))


def _bottom_block(
    figure: Figure, ruler: Ruler, lines: Sequence[str], size: float, title: str | None = None
) -> float:
    """Lines of small text ending just above the footer (drawn top down, the order a PDF reader
    extracts them in); returns the top of the block."""
    step = line_step(size, 1.3)
    wrapped = [part for line in lines for part in ruler.wrap(line, size, RIGHT - LEFT)]
    title_step = line_step(size + 1, 1.4) if title else 0.0
    top = FOOTER_TOP + len(wrapped) * step + title_step
    y = top
    if title:
        put_text(figure, LEFT, y, title, fontsize=size + 1, fontweight="bold", va="top")
        y -= title_step
    for part in wrapped:
        put_text(figure, LEFT, y, part, fontsize=size, color="#333333", va="top")
        y -= step
    return top


def render_summary_page(
    report: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None,
) -> tuple[Figure, list[Bullet]]:
    """Page 1: study fields, acquisition, overall grade, warnings, per-lung table, coronal overview,
    run details. Returns the page and the warnings that did not fit on it (for the next page)."""
    figure = _new_page()
    ruler = Ruler(figure)
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
    details_top = _bottom_block(figure, ruler, run_details(report), DETAIL_SIZE)
    legend_y = details_top + LEGEND_ABOVE
    images_bottom = legend_y + 0.024
    # the table, the grading legend and the uncounted note; the view's title and the panels' titles
    below_grade = TABLE_HEIGHT + 0.05 + 0.06
    leftover: list[Bullet] = []
    if report.get("warnings"):
        bullets = wrap_warnings(ruler, report["warnings"])
        floor = images_bottom + MIN_CORONAL_HEIGHT + below_grade
        y, leftover = warnings_box(figure, bullets, y, floor, "Warnings — read before using the figures")
        y -= 0.01

    table_ax = figure.add_axes((0.06, y - TABLE_HEIGHT, 0.88, TABLE_HEIGHT))
    _severity_table(table_ax, report)
    y = table_ax.tables[0].get_window_extent(ruler.renderer).y0 / figure.bbox.height - 0.008
    legend = "   ".join(f"{g}: {d}" for g, d in GRADE_DESCRIPTIONS.items())
    for line in (f"Grades per lung — {legend}.", _uncounted_note(report)):
        figure.text(0.06, y, line, fontsize=7, color="#444444", va="top")
        y -= line_step(7, 1.45)

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
    mappable = plane_panels(axes, planes, (spacing[2], spacing[0]), ("S", "I"))
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
    warnings: list[Bullet] | None = None,
) -> tuple[Figure, list[Bullet]]:
    """Page 2: page 1's left-over warnings, the axial slices with the most infection (outlines on the
    left, JET on the right), the limits of the figures. Returns the page and the warnings still left."""
    figure = _new_page()
    ruler = Ruler(figure)
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
    leftover: list[Bullet] = []
    if warnings:
        floor = rows_bottom + n_slices * MIN_AXIAL_ROW_HEIGHT
        top, leftover = warnings_box(figure, warnings, 0.928, floor, "Warnings (continued from page 1)")
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
        mappable = plane_panels(axes, planes, (spacing[1], spacing[0]), ("A", "P")) or mappable
        infected_ml = np.count_nonzero(infection[z]) * voxel_ml
        position_mm = plane_position_mm(ct.geometry, ct.shape, 0, z)
        figure.text(
            0.06,
            row_top - 0.02,
            f"{slice_caption(z, ct.shape[0], position_mm)}: {format_figure(infected_ml)} mL infected "
            "in this slice",
            fontsize=9,
            fontweight="bold",
        )
    _legend_and_colorbar(figure, mappable, legend_y)
    return figure, leftover


def _warnings_page(bullets: list[Bullet], previous_page: int) -> tuple[Figure, list[Bullet]]:
    """A page of nothing but warnings, for the rare report whose warnings fill pages 1 and 2."""
    figure = _new_page()
    title = f"Warnings (continued from page {previous_page})"
    _, leftover = warnings_box(figure, bullets, 0.965, FOOTER_TOP + 0.01, title)
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
