"""Orientation and slice choice of the report pictures (radiological convention)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from cli.dicom_series import write_dicom_series
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.report import RunInfo, build_report_json, compute_severity
from napari_chsnet.report.pdf_images import (
    axial_image,
    coronal_image,
    select_coronal_plane,
    select_key_slices,
)
from napari_chsnet.report.pdf_text import run_details
from napari_chsnet.report.rendering import render_report_figures


def test_axial_image_puts_patient_right_on_the_left():
    volume = np.zeros((3, 4, 5), dtype=np.uint8)
    volume[:, :, 0] = RIGHT_LUNG  # x index 0 = patient's right (LPS display)
    volume[:, :, -1] = LEFT_LUNG
    image = axial_image(volume, 1)
    assert (image[:, 0] == RIGHT_LUNG).all() and (image[:, -1] == LEFT_LUNG).all()


def test_coronal_image_puts_superior_at_the_top_and_right_on_the_left():
    volume = np.zeros((6, 4, 5), dtype=np.uint8)
    volume[-1] = 7  # last slice = most superior
    volume[:, :, 0] = RIGHT_LUNG
    image = coronal_image(volume, 2)
    assert image.shape == (6, 5)
    assert (image[0, 1:] == 7).all() and (image[-1, 1:] == 0).all()
    assert (image[:, 0] == RIGHT_LUNG).all()


def test_key_slices_pick_most_infected_slices_apart_superior_first():
    lungs = np.ones((40, 8, 8), dtype=np.uint8)
    infection = np.zeros_like(lungs, dtype=bool)
    counts = {5: 30, 6: 29, 20: 20, 33: 10, 34: 40}
    for z, n in counts.items():
        infection[z].flat[:n] = True
    # min gap = 40 / 12 -> 3 slices: 6 is too close to 5, 33 to 34.
    assert select_key_slices(lungs, infection, 3) == [34, 20, 5]


def test_key_slices_without_infection_spread_over_the_lungs():
    lungs = np.zeros((20, 4, 4), dtype=np.uint8)
    lungs[4:16] = RIGHT_LUNG
    # Lungs span z 4..15: the quarter points 6.75, 9.5, 12.25 rounded (9.5 -> 10, half to even).
    assert select_key_slices(lungs, np.zeros_like(lungs, dtype=bool), 3) == [12, 10, 7]


def test_coronal_plane_is_the_most_infected():
    lungs = np.ones((5, 10, 6), dtype=np.uint8)
    infection = np.zeros_like(lungs, dtype=bool)
    infection[:, 7, :3] = True
    assert select_coronal_plane(lungs, infection) == 7


def test_figures_are_a4_and_leave_pyplot_alone(synthetic_case):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    report = build_report_json(severity, RunInfo("eamc", "cpu", 1.0), synthetic_case.ct.metadata, False)
    figures = render_report_figures(
        report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, synthetic_case.probability
    )
    assert len(figures) == 2 and all(isinstance(f, Figure) for f in figures)
    assert all(tuple(np.round(f.get_size_inches(), 2)) == (8.27, 11.69) for f in figures)
    assert plt.get_fignums() == open_before
    # The image panels carry R on the left and L on the right of each image.
    texts = [t for ax in figures[1].axes for t in ax.texts if t.get_text() in {"R", "L"}]
    assert texts and all((t.get_position()[0] < 0.5) == (t.get_text() == "R") for t in texts)


def test_small_nonzero_amounts_never_print_as_zero():
    from napari_chsnet.report.severity import format_figure

    shown = tuple(format_figure(v) for v in (0.0, 0.03, 0.05, 1234.56))
    assert shown == ("0.0", "< 0.1", "0.1", "1,234.6")


def test_pictures_use_the_infection_as_counted(synthetic_case):
    # With a threshold above every lesion nothing is counted, so no key slice claims infection.
    severity = compute_severity(
        synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry, min_lesion_ml=1e6
    )
    assert severity.overall_grade == "CT-0"
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), {}, False)
    figures = render_report_figures(
        report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, synthetic_case.probability
    )
    titles = [t.get_text() for t in figures[1].texts if t.get_text().startswith("Axial slice ")]
    assert len(titles) == 3 and all("0.0 mL infected" in t for t in titles)


def _page_texts(figures, tmp_path) -> list[str]:
    """The text of each page of the PDF these figures make, as pypdf extracts it."""
    pypdf = pytest.importorskip("pypdf", reason="PDF text checks need pypdf (testing extra)")
    from matplotlib import rc_context
    from matplotlib.backends.backend_pdf import PdfPages

    path = tmp_path / "pages.pdf"
    with rc_context({"pdf.fonttype": 42}), PdfPages(path) as pdf:
        for figure in figures:
            pdf.savefig(figure)
    return [page.extract_text() for page in pypdf.PdfReader(str(path)).pages]


def _flat(text: str) -> str:
    """Whitespace runs as one space: lines wrapped on the page read as the sentence they came from."""
    return " ".join(text.split())


def _overlapping_texts(figure) -> list[tuple[str, str]]:
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    texts = list(figure.texts)
    for ax in figure.axes:  # panel titles, the colour bar's label and numbers
        texts += [ax.title, *([ax.xaxis.label, *ax.get_xticklabels()] if ax.axison else [])]
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    return [
        (texts[i].get_text(), texts[j].get_text())
        for i in range(len(texts))
        for j in range(i + 1, len(texts))
        if boxes[i].overlaps(boxes[j])
    ]


def _box_of(figure, gid):
    return next(a for a in figure.artists if a.get_gid() == gid).get_window_extent(
        figure.canvas.get_renderer()
    )


def test_a_one_slice_scan_shows_every_warning_in_full_under_the_grade(synthetic_case, tmp_path):
    """A single DICOM slice (pydicom's CT_small.dcm) crashed the coronal view: its plane is one row.
    Its lungs are under 100 mL, so the page carries a long small-lung warning (one per lung then): the
    warnings were joined and cut at 260 characters in small print at the page's foot."""
    import dataclasses

    middle = synthetic_case.lungs.shape[0] // 2
    one = slice(middle, middle + 1)
    ct = dataclasses.replace(synthetic_case.ct, hu=synthetic_case.ct.hu[one])
    lungs, infection = synthetic_case.lungs[one], synthetic_case.infection[one]
    severity = compute_severity(lungs, infection, ct.geometry)
    assert sum("far less than a lung" in w for w in severity.warnings) == 1
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), ct.metadata, False)
    report["warnings"].append("series is not ORIGINAL/PRIMARY (ImageType missing)")
    figures = render_report_figures(report, ct, lungs, infection, synthetic_case.probability[one])
    assert len(figures) == 2
    page_one = _flat(_page_texts(figures, tmp_path)[0])
    for warning in report["warnings"]:
        assert _flat(warning) in page_one  # whole, never cut
    page = figures[0]
    bullets = [t for t in page.texts if t.get_text() == "•"]
    assert len(bullets) == len(report["warnings"])  # one bullet each
    badge = next(t for t in page.texts if t.get_gid() == "grade-badge")
    assert badge.get_text() == "not measured — see warnings below"  # no lung reaches 100 mL: none graded
    # the box sits right under the grade and above the table
    renderer = page.canvas.get_renderer()
    page.draw(renderer)
    box = _box_of(page, "warnings-box")
    table = next(ax for ax in page.axes if ax.tables).tables[0].get_window_extent(renderer)
    assert table.y1 < box.y0 and box.y1 < badge.get_window_extent(renderer).y0
    assert all(box.y0 < b.get_window_extent(renderer).y0 < box.y1 for b in bullets)
    assert _overlapping_texts(page) == []


def test_without_warnings_the_badge_is_the_grade_alone(synthetic_case):
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), synthetic_case.ct.metadata, False)
    assert report["warnings"] == []
    page = render_report_figures(
        report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, synthetic_case.probability
    )[0]
    assert (
        next(t for t in page.texts if t.get_gid() == "grade-badge").get_text() == report["overall"]["grade"]
    )
    assert not any(a.get_gid() == "warnings-box" for a in page.artists)


def _long_warning(i: int, n_words: int = 45) -> str:
    return (
        f"Warning number {i}: " + " ".join(f"word{i}x{k}" for k in range(n_words)) + f" (end of warning {i})."
    )


def test_warnings_that_do_not_fit_page_one_continue_on_page_two(synthetic_case, tmp_path):
    lungs = synthetic_case.lungs.copy()
    lungs[lungs == LEFT_LUNG] = 0  # an empty lung: a long warning of the severity's own
    infection = synthetic_case.infection * (lungs > 0)
    severity = compute_severity(lungs, infection, synthetic_case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), synthetic_case.ct.metadata, False)
    report["warnings"] += [_long_warning(i, 25) for i in range(6)]
    figures = render_report_figures(report, synthetic_case.ct, lungs, infection, synthetic_case.probability)
    assert len(figures) == 2
    pages = [_flat(text) for text in _page_texts(figures, tmp_path)]
    assert "continued on the next page" in pages[0]
    assert "Warnings (continued from page 1)" in pages[1]
    for warning in report["warnings"]:  # each whole, on one of the two pages
        assert sum(_flat(warning) in page for page in pages) == 1
    first_on_page_two = next(i for i, w in enumerate(report["warnings"]) if _flat(w) in pages[1])
    assert first_on_page_two > 0 and all(_flat(w) in pages[1] for w in report["warnings"][first_on_page_two:])
    for page in figures:
        assert _overlapping_texts(page) == []
    # page 1's box ends above the table, page 2's above the key slices
    renderer = figures[0].canvas.get_renderer()
    table = next(ax for ax in figures[0].axes if ax.tables).tables[0].get_window_extent(renderer)
    assert table.y1 < _box_of(figures[0], "warnings-box").y0
    images = [ax.get_window_extent(renderer) for ax in figures[1].axes if ax.images]
    assert max(b.y1 for b in images) < _box_of(figures[1], "warnings-box").y0
    # the empty lung is "not measured", not a healthy lung's green CT-0
    cells = [
        cell.get_text()
        for ax in figures[0].axes
        for table in ax.tables
        for cell in table.get_celld().values()
    ]
    assert any(text.get_text() == "not measured" and text.get_color() == "#777777" for text in cells)
    assert any(text.get_text().endswith("(right lung only)") for text in cells)


def test_warnings_beyond_two_pages_get_pages_of_their_own(synthetic_case, tmp_path):
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), {}, False)
    report["warnings"] = [_long_warning(i) for i in range(40)]
    figures = render_report_figures(
        report, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection, synthetic_case.probability
    )
    assert len(figures) > 2
    text = _flat(" ".join(_page_texts(figures, tmp_path)))
    assert all(_flat(w) in text for w in report["warnings"])
    assert f"page {len(figures)} of {len(figures)}" in text


DICOM_FIELDS = {
    "PatientName": "DOE^JANE",
    "PatientID": "MRN-12345",
    "PatientBirthDate": "19600102",
    "PatientSex": "F",
    "PatientAge": "060Y",
    "StudyDate": "20200415",
    "StudyTime": "101500",
    "StudyDescription": "CT CHEST WITHOUT CONTRAST, LOW DOSE, INSPIRATION, FOLLOW-UP OF COVID-19 PNEUMONIA",
    "AccessionNumber": "ACC-777",
    "SeriesDescription": "Lung 2mm",
    "Modality": "CT",
    "Manufacturer": "SIEMENS",
    "ManufacturerModelName": "SOMATOM Definition Edge",
    "InstitutionName": "St Elsewhere Hospital, Department of Diagnostic and Interventional Radiology",
    "SliceThickness": 6.0,
    "KVP": 120,
    "ConvolutionKernel": "B70f",
}


@pytest.fixture(scope="module")
def dicom_case(synthetic_case, tmp_path_factory):
    """The synthetic case read back from a DICOM series carrying every field the header shows,
    stored under a long path."""
    from napari_chsnet.io.readers import read_ct

    deep = tmp_path_factory.mktemp("dicom").joinpath(
        "shared", "data", "hospital_exports", "2020", "chest_ct_followups_covid19_cohort", "DOE^JANE_12345"
    )
    folder = write_dicom_series(
        deep, synthetic_case.ct.hu, (4.0, 4.0, 6.0), (-160.0, -128.0, -120.0), DICOM_FIELDS
    )
    ct = read_ct(folder)
    assert ct.shape == synthetic_case.ct.shape
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0, input=str(folder)), ct.metadata, False)
    return ct, report


def test_dicom_header_labels_never_run_into_their_values(dicom_case, synthetic_case, tmp_path):
    """Reviewer: "Slice thickness (mm):" overprinted its value; dates, time and age printed raw; the
    input path was cut from the left."""
    ct, report = dicom_case
    figures = render_report_figures(report, ct, synthetic_case.lungs, synthetic_case.infection)
    page = figures[0]
    assert _overlapping_texts(page) == []
    renderer = page.canvas.get_renderer()
    labels = [t for t in page.texts if t.get_gid() == "study-label"]
    values = [t for t in page.texts if t.get_gid() == "study-value"]
    assert len(labels) >= 15 and values
    for label in labels:  # every value starts right of its column's labels
        row = [v for v in values if 0 < v.get_position()[0] - label.get_position()[0] < 0.3]
        assert all(label.get_window_extent(renderer).x1 < v.get_window_extent(renderer).x0 for v in row)
    page_one = _page_texts(figures, tmp_path)[0]
    flat = _flat(page_one)
    for shown in ("Birth date: 1960-01-02", "Study date: 2020-04-15", "Study time: 10:15:00", "Age: 60 y"):
        assert shown in flat
    for raw in ("19600102", "20200415", "101500", "060Y"):
        assert raw not in page_one
    for long_value in (DICOM_FIELDS["StudyDescription"], DICOM_FIELDS["InstitutionName"]):
        assert _flat(long_value) in flat  # wrapped, whole
    # the path is wrapped, not cut: all of it is on the page
    assert "".join(report["input"].split()) in "".join(page_one.split())


def test_dicom_values_read_as_dates_times_and_ages():
    from napari_chsnet.io.dicom_headers import format_dicom_date as _dicom_date
    from napari_chsnet.report.pdf_text import _dicom_age, _dicom_time

    assert [_dicom_date(v) for v in ("19600102", "2020-04-15", "20201345", "")] == [
        "1960-01-02",
        "2020-04-15",
        "20201345",
        "",
    ]
    assert [_dicom_time(v) for v in ("101500", "101500.123456", "1015", "10", "10:15:00", "256000")] == [
        "10:15:00",
        "10:15:00",
        "10:15",
        "10",
        "10:15:00",
        "256000",
    ]
    assert [_dicom_age(v) for v in ("060Y", "006M", "003W", "010D", "60")] == [
        "60 y",
        "6 mo",
        "3 wk",
        "10 d",
        "60",
    ]


def test_acquisition_line_near_the_top(dicom_case, synthetic_case, tmp_path):
    ct, report = dicom_case
    dicom = render_report_figures(report, ct, synthetic_case.lungs, synthetic_case.infection)
    text = _flat(_page_texts(dicom, tmp_path)[0])
    line = text[text.index("Acquisition:") :]
    assert line.startswith(
        f"Acquisition: slice thickness {report['study']['SliceThickness']} mm · slice spacing 6 mm · "
        "in-plane 4 × 4 mm · 40 slices · scan length 240 mm · kernel B70f"
    )
    assert text.index("Acquisition:") < text.index("Overall severity")

    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    nifti = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0, input="/data/case.nii.gz"), {}, False)
    figures = render_report_figures(nifti, synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection)
    text = _flat(_page_texts(figures, tmp_path)[0])
    assert (
        "Acquisition: slice spacing 6 mm · in-plane 4 × 4 mm · 40 slices · scan length 240 mm · "
        "no DICOM acquisition fields" in text
    )


def test_the_model_card_is_named_only_for_the_bundled_weights(synthetic_case, tmp_path):
    from napari_chsnet.report import file_sha256
    from napari_chsnet.resources_path import bundled_weights_dir

    bundled = bundled_weights_dir() / "chsnet.safetensors"
    if not bundled.is_file():
        pytest.skip("no bundled weights in this checkout")
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    case = (synthetic_case.ct, synthetic_case.lungs, synthetic_case.infection)

    sha = file_sha256(bundled)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0, weights_sha256=sha), {}, False)
    pages = [_flat(t) for t in _page_texts(render_report_figures(report, *case), tmp_path)]
    assert (
        f"weights SHA-256 {sha[:16]}…, the bundled weights (model card resources/weights/chsnet.md)"
        in pages[0]
    )
    assert "user weights" not in " ".join(pages)
    limits = pages[1][pages[1].index("Limits") :]
    for fact in (
        "ground-glass opacity and consolidation",
        "not specific to COVID-19",
        "not assigned to lobes",
    ):
        assert fact in limits
    for false_positive in ("diaphragm domes", "pericardial fat", "dependent (gravity) density"):
        assert false_positive in limits
    assert "whole lungs" in limits and "model card resources/weights/chsnet.md" in limits

    other = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0, weights_sha256="0" * 64), {}, False)
    pages = [_flat(t) for t in _page_texts(render_report_figures(other, *case), tmp_path)]
    assert "user weights" in pages[0] and "the bundled weights" not in pages[0]
    assert "not the bundled ones" in pages[1]


def test_the_infection_is_an_outline_over_the_bare_ct(synthetic_case):
    """Both panels were overlays (solid red, JET): the infection is now a contour on the CT, whose
    outline runs along the edges of the counted voxels."""
    from napari_chsnet.registry import INFECTION_COLORS
    from napari_chsnet.report import clean_infection
    from napari_chsnet.report.pdf_images import _crop_box

    case = synthetic_case
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), {}, False)
    figures = render_report_figures(report, case.ct, case.lungs, case.infection, case.probability)
    infection = clean_infection(case.lungs, case.infection, case.ct.geometry).mask
    red = np.array(INFECTION_COLORS[1][:3])
    sx, sy, _ = case.ct.geometry.spacing_mm
    image_axes = [ax for ax in figures[1].axes if ax.images]
    slices = select_key_slices(case.lungs, infection, 3)
    assert len(image_axes) == 2 * len(slices)
    for z, outlined, jet in zip(slices, image_axes[::2], image_axes[1::2], strict=True):
        assert len(outlined.images) == 1  # the CT alone under the outlines
        assert len(jet.images) == 2  # CT + probability, as before
        rows, cols = _crop_box(case.lungs[z] > 0, (sy, sx))
        shown = infection[z][rows, cols]
        red_lines = [
            c for c in outlined.collections if np.allclose(np.asarray(c.get_edgecolor())[0, :3], red)
        ]
        if not shown.any():
            assert red_lines == []
            continue
        vertices = np.concatenate([p.vertices for c in red_lines for p in c.get_paths()])
        r, c = np.nonzero(shown)
        assert np.allclose(vertices[:, 0].min(), c.min() * sx) and np.allclose(
            vertices[:, 0].max(), (c.max() + 1) * sx
        )
        assert np.allclose(vertices[:, 1].min(), r.min() * sy) and np.allclose(
            vertices[:, 1].max(), (r.max() + 1) * sy
        )
    coronal = next(ax for ax in figures[0].axes if ax.get_title() == "CT with lung and infection outlines")
    assert len(coronal.images) == 1 and any(
        np.allclose(np.asarray(c.get_edgecolor())[0, :3], red) for c in coronal.collections
    )


def test_coronal_caption_gives_the_plane_in_mm(synthetic_case):
    from napari_chsnet.io.volume import Geometry
    from napari_chsnet.report.pdf_images import plane_position_mm

    case = synthetic_case
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), {}, False)
    page = render_report_figures(report, case.ct, case.lungs, case.infection, case.probability)[0]
    caption = next(t.get_text() for t in page.texts if t.get_text().startswith("Coronal view"))
    y_plane = select_coronal_plane(case.lungs, case.infection)
    y_mm = case.ct.geometry.origin_mm[1] + y_plane * case.ct.geometry.spacing_mm[1]
    assert (
        caption == f"Coronal view at y = {y_mm:.1f} mm (LPS, + posterior), the plane with the most infection"
    )
    assert f"y = {y_plane}," not in caption

    flipped = Geometry((1.0, 2.0, 3.0), (10.0, 20.0, 30.0), (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    assert plane_position_mm(flipped, (5, 6, 7), 1, 4) == 20.0 - 4 * 2.0
    assert plane_position_mm(flipped, (5, 6, 7), 0, 4) == 30.0 + 4 * 3.0


def test_slice_choice_counted_in_slabs_equals_the_whole_volume_count():
    rng = np.random.default_rng(3)
    lungs = rng.integers(0, 3, (37, 9, 11)).astype(np.uint8)  # 37 slices: three slabs, the last short
    lungs[:5] = 0
    infection = rng.random(lungs.shape) < 0.3
    per_slice = np.count_nonzero(infection & (lungs > 0), axis=(1, 2))
    best = np.argsort(-per_slice, kind="stable")
    assert select_key_slices(lungs, infection, 1) == [int(best[0])]
    assert select_coronal_plane(lungs, infection) == int(
        np.argmax(np.count_nonzero(infection & (lungs > 0), axis=(0, 2)))
    )
    assert select_coronal_plane(lungs, np.zeros_like(infection)) == int(
        np.argmax(np.count_nonzero(lungs > 0, axis=(0, 2)))
    )
    assert select_key_slices(lungs, infection.astype(np.uint8), 3) == select_key_slices(lungs, infection, 3)


def _drawn(figures) -> list:
    """What the pages show: every image's pixels and every text."""
    shown = []
    for figure in figures:
        shown += [t.get_text() for t in figure.texts]
        for ax in figure.axes:
            shown += [np.ma.getdata(image.get_array()).tobytes() for image in ax.images]
            shown += [t.get_text() for t in ax.texts]
    return shown


def test_an_already_clean_infection_is_drawn_without_cleaning_it_again(synthetic_case, monkeypatch):
    """The pipeline's infection is clean_infection's mask: infection_is_clean skips the second pass
    (a bool copy and a labelling of the whole volume) and the pages are the same."""
    from napari_chsnet.report import clean_infection, rendering, severity_from_cleaned

    case = synthetic_case
    raw = case.infection.copy()
    raw[0, 0, 0] = 1  # a speck outside the lungs, cleaned away
    cleaned = clean_infection(case.lungs, raw, case.ct.geometry)
    report = build_report_json(
        severity_from_cleaned(case.lungs, cleaned, case.ct.geometry), RunInfo("eamc", "cpu", 1.0), {}, False
    )
    pipeline_infection = cleaned.mask.view(np.uint8)  # what the pipeline returns
    expected = _drawn(render_report_figures(report, case.ct, case.lungs, raw, case.probability))

    def no_second_cleaning(*args, **kwargs):
        raise AssertionError("an already clean infection was cleaned again")

    monkeypatch.setattr(rendering, "clean_infection", no_second_cleaning)
    figures = render_report_figures(
        report, case.ct, case.lungs, pipeline_infection, case.probability, infection_is_clean=True
    )
    assert _drawn(figures) == expected


def test_axial_captions_number_slices_as_napari_s_slider_does(synthetic_case):
    """A radiologist read "Slice 58 of 148" in the PDF, went to 58 in napari and landed one slice
    off: napari's slider counts from 0 (its boxes show 57 and 147 with this CT alone open). The caption
    gives that index and range and the position in mm, which holds with other scans open too."""
    from napari_chsnet.inference.cleaning import clean_infection
    from napari_chsnet.report.pdf_images import plane_position_mm

    case = synthetic_case
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), {}, False)
    page = render_report_figures(report, case.ct, case.lungs, case.infection, case.probability)[1]
    captions = [t.get_text() for t in page.texts if t.get_text().startswith("Axial slice ")]
    counted = clean_infection(case.lungs, case.infection, case.ct.geometry, report["min_lesion_ml"]).mask
    slices = select_key_slices(case.lungs, counted, 3)  # the pictures use the infection as counted
    n = case.ct.shape[0]
    assert len(captions) == len(slices) == 3
    for caption, z in zip(captions, slices, strict=True):
        position = plane_position_mm(case.ct.geometry, case.ct.shape, 0, z)
        assert caption.startswith(f"Axial slice {z} of 0–{n - 1} (z = {position:.1f} mm): ")
    assert not any(t.get_text().startswith("Slice ") for t in page.texts)  # the old 1-based label
    # The longest caption a scan can give stays on the page.
    renderer = page.canvas.get_renderer()
    page.draw(renderer)
    widest = max(
        (t for t in page.texts if t.get_text().startswith("Axial slice ")),
        key=lambda t: t.get_window_extent(renderer).width,
    )
    widest.set_text("Axial slice 1023 of 0–1023 (z = -1234.5 mm): 1,234.5 mL infected in this slice")
    assert widest.get_window_extent(renderer).x1 < page.bbox.x1
    assert _overlapping_texts(page) == []


def test_footer_gives_the_segmentation_time_and_when_the_report_was_written(synthetic_case, tmp_path):
    """A PDF exported after corrections said only the run's time (12:18:24) for a file written at
    12:20:33: the footer keeps the run's time and adds the report's."""
    case = synthetic_case
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry)
    case_name = "case_0042_follow-up_after_treatment"  # a long one: the footer must still fit
    run = RunInfo("chsnet", "cpu", 1.0, case=case_name, timestamp="2024-01-02T12:18:24+00:00")
    report = build_report_json(severity, run, {}, False, exported_at="2024-01-02T12:20:33+00:00")
    figures = render_report_figures(report, case.ct, case.lungs, case.infection, case.probability)
    for text in _page_texts(figures, tmp_path):
        assert "segmented 2024-01-02T12:18:24+00:00; report written 2024-01-02T12:20:33+00:00" in _flat(text)
        assert f"case {case_name}" in _flat(text)
    for page in figures:  # the longer footer keeps clear of the page number and the disclaimer
        assert _overlapping_texts(page) == []
        renderer = page.canvas.get_renderer()
        assert all(t.get_window_extent(renderer).x1 < page.bbox.x1 for t in page.texts)


def test_the_footer_of_masks_drawn_by_hand_says_when_the_report_was_built_not_segmented():
    from napari_chsnet.report.rendering import report_times

    report = {
        "model": "manual",
        "timestamp": "2026-12-05T12:55:07+00:00",
        "exported_at": "2026-12-05T12:56:00+00:00",
    }
    assert (
        report_times(report)
        == "report built 2026-12-05T12:55:07+00:00; report written 2026-12-05T12:56:00+00:00"
    )
    assert report_times({**report, "model": "chsnet"}).startswith("segmented 2026-12-05T12:55:07+00:00; ")


def test_the_run_details_give_the_settings_that_change_the_figures(synthetic_case, tmp_path):
    """The PDF omitted threshold, mirror averaging and min lesion size, which report.json and the CSV
    carry and which change every figure."""
    case = synthetic_case
    severity = compute_severity(case.lungs, case.infection, case.ct.geometry, min_lesion_ml=0.1)
    options = {"threshold": 0.5, "min_lesion_ml": 0.1, "mirror_averaging": True}
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0, inference_options=options), {}, False)
    figures = render_report_figures(report, case.ct, case.lungs, case.infection, case.probability)
    page_one = _flat(_page_texts(figures, tmp_path)[0])
    assert "Settings: threshold 0.5, mirror averaging on, lesions under 0.1 mL not counted" in page_one
    assert _overlapping_texts(figures[0]) == []

    eamc = build_report_json(severity, RunInfo("eamc", "cpu", 1.0, inference_options=options), {}, False)
    assert "Settings: threshold 0.5 (each member's vote), mirror averaging on," in " ".join(run_details(eamc))
    tiled = {**options, "overlapping_tiles": True}
    eamc = build_report_json(severity, RunInfo("eamc", "cpu", 1.0, inference_options=tiled), {}, False)
    assert "mirror averaging on, overlapping tiles, lesions under" in " ".join(run_details(eamc))


def test_the_run_details_say_in_which_precision_the_networks_ran(synthetic_case):
    """bfloat16 on an AMX CPU, float16 on a GPU, float32 elsewhere: the figures differ in the last
    digits, so the PDF says which; a report written before the pipeline recorded it says nothing."""
    severity = compute_severity(synthetic_case.lungs, synthetic_case.infection, synthetic_case.ct.geometry)
    for precision in ("bfloat16 autocast", "float32"):
        options = {"threshold": 0.5, "precision": precision}
        report = build_report_json(
            severity, RunInfo("chsnet", "cpu", 2.5, inference_options=options), {}, False
        )
        assert report["inference_options"]["precision"] == precision
        assert f"Device: cpu in {precision}; runtime 2.5 s" in run_details(report)
    older = build_report_json(severity, RunInfo("chsnet", "cpu", 2.5, inference_options={}), {}, False)
    assert "Device: cpu; runtime 2.5 s" in run_details(older)
