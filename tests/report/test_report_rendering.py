"""Orientation and slice choice of the report pictures (radiological convention)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.report import RunInfo, build_report_json, compute_severity
from napari_chsnet.report.rendering import (
    axial_image,
    coronal_image,
    render_report_figures,
    select_coronal_plane,
    select_key_slices,
)


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
    from napari_chsnet.report.rendering import _fmt

    assert (_fmt(0.0), _fmt(0.03), _fmt(0.05), _fmt(1234.56)) == ("0.0", "< 0.1", "0.1", "1,234.6")


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
    titles = [t.get_text() for t in figures[1].texts if t.get_text().startswith("Slice ")]
    assert len(titles) == 3 and all("0.0 mL infected" in t for t in titles)


def test_a_one_slice_scan_renders_with_its_warnings_in_full_view(synthetic_case):
    """A single DICOM slice (pydicom's CT_small.dcm) crashed the coronal view: its plane is one row.
    Its lungs are under 100 mL, so the page also carries the long small-lung warnings."""
    import dataclasses

    from napari_chsnet.report.rendering import _shortened

    middle = synthetic_case.lungs.shape[0] // 2
    one = slice(middle, middle + 1)
    ct = dataclasses.replace(synthetic_case.ct, hu=synthetic_case.ct.hu[one])
    lungs, infection = synthetic_case.lungs[one], synthetic_case.infection[one]
    severity = compute_severity(lungs, infection, ct.geometry)
    assert sum("far less than a lung" in w for w in severity.warnings) == 2
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), ct.metadata, False)
    figures = render_report_figures(report, ct, lungs, infection, synthetic_case.probability[one])
    shown = [t.get_text() for t in figures[0].texts if t.get_text().startswith("Warnings: ")]
    assert shown == [_shortened("Warnings: " + " ".join(report["warnings"]), 260)]
    assert shown[0].endswith("…") and len(shown[0]) == 260


def test_page_one_warnings_overprint_neither_the_colour_bar_nor_the_run_details(synthetic_case):
    lungs = synthetic_case.lungs.copy()
    lungs[lungs == LEFT_LUNG] = 0  # an empty lung: a long warning
    infection = synthetic_case.infection * (lungs > 0)
    severity = compute_severity(lungs, infection, synthetic_case.ct.geometry)
    report = build_report_json(severity, RunInfo("chsnet", "cpu", 1.0), synthetic_case.ct.metadata, False)
    assert report["warnings"]
    page = render_report_figures(report, synthetic_case.ct, lungs, infection, synthetic_case.probability)[0]
    renderer = page.canvas.get_renderer()
    page.draw(renderer)
    warning = next(t for t in page.texts if t.get_text().startswith("Warnings:")).get_window_extent(renderer)
    colour_bar = page.axes[-1]
    others = [colour_bar.xaxis.label, *[t for t in colour_bar.get_xticklabels() if t.get_text()]]
    others += [t for t in page.texts if t.get_text().startswith(("Model:", "Device:", "Software:"))]
    assert [o.get_text() for o in others if o.get_window_extent(renderer).overlaps(warning)] == []

    # the empty lung's CT-0 is not shown in a healthy lung's green
    cells = [
        cell.get_text() for ax in page.axes for table in ax.tables for cell in table.get_celld().values()
    ]
    assert any(text.get_text() == "CT-0 not measured" and text.get_color() == "#777777" for text in cells)


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
