"""Severity table follows edits and undo; exports write the CLI's report and masks in the CT's geometry."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from napari_chsnet.io.readers import read_ct
from napari_chsnet.io.writers import read_mask, write_volume
from napari_chsnet.napari_hooks import ct_layer
from napari_chsnet.registry import INFECTION_LAYER, LEFT_LUNG, LUNGS_LAYER, RIGHT_LUNG
from napari_chsnet.report import CSV_COLUMNS
from napari_chsnet.report.severity import shown_grade
from napari_chsnet.widgets.layer_facts import layer_geometry
from napari_chsnet.widgets.report_panel import ADD_ROW, EDITED_WARNING, REPLACE_ROWS

from .conftest import add_ct, show_known_result

pytestmark = pytest.mark.gui
TABLE_TIMEOUT_MS = 5_000
EXPORT_TIMEOUT_MS = 30_000


def test_table_follows_an_undoable_edit_and_its_undo(panel, qtbot, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    lungs = viewer.layers[LUNGS_LAYER]
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    before = widget.severity.severity
    right_before = widget.severity.cell(0, 0)
    assert before.right.volume_ml == pytest.approx(small_phantom.lung_volume_ml[RIGHT_LUNG])
    assert before.right.involvement_pct == pytest.approx(small_phantom.involvement_pct[RIGHT_LUNG], abs=1e-6)

    # Move 400 voxels from the right lung to the left one, as one undoable edit.
    moved = np.argwhere(lungs.data == RIGHT_LUNG)[:400]
    lungs.data_setitem(tuple(moved.T), LEFT_LUNG)
    voxel_ml = layer_geometry(lungs).voxel_volume_ml
    qtbot.waitUntil(lambda: widget.severity.cell(0, 0) != right_before, timeout=TABLE_TIMEOUT_MS)
    after = widget.severity.severity
    assert after.right.lung_voxels == before.right.lung_voxels - 400
    assert after.left.lung_voxels == before.left.lung_voxels + 400
    assert widget.severity.cell(0, 0) == f"{before.right.volume_ml - 400 * voxel_ml:.1f}"

    lungs.undo()  # what Ctrl+Z does
    qtbot.waitUntil(lambda: widget.severity.cell(0, 0) == right_before, timeout=TABLE_TIMEOUT_MS)
    assert widget.severity.severity.right.lung_voxels == before.right.lung_voxels


def test_table_follows_undo_and_redo_on_a_hidden_mask(panel, qtbot, small_phantom):
    """napari refreshes only a visible layer and an undo emitted nothing else: a radiologist who hid
    the infection overlay to read the CT and pressed Ctrl+Z kept the table's figures from before it,
    while the exports read the restored data."""
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    infection, lungs = viewer.layers[INFECTION_LAYER], viewer.layers[LUNGS_LAYER]
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    infected_before = widget.severity.severity.right.infected_voxels
    healthy = np.argwhere((lungs.data == RIGHT_LUNG) & (infection.data == 0))[:300]
    infection.data_setitem(tuple(healthy.T), 1)
    qtbot.waitUntil(
        lambda: widget.severity.severity.right.infected_voxels == infected_before + 300,
        timeout=TABLE_TIMEOUT_MS,
    )
    infection.visible = False
    infection.undo()  # what Ctrl+Z does on the active layer, hidden or not
    qtbot.waitUntil(
        lambda: widget.severity.severity.right.infected_voxels == infected_before, timeout=TABLE_TIMEOUT_MS
    )
    exported = widget.report.build_report()["lungs"]["right"]["infected_ml"]  # rounded to 1e-6 mL
    assert exported == pytest.approx(widget.severity.severity.right.infected_ml, abs=1e-6)
    infection.redo()
    qtbot.waitUntil(
        lambda: widget.severity.severity.right.infected_voxels == infected_before + 300,
        timeout=TABLE_TIMEOUT_MS,
    )
    assert not infection.visible


def test_table_without_result_layers_says_what_to_do(panel, qtbot):
    _viewer, widget = panel
    assert widget.severity.cell(0, 0) == "—"
    assert "press Segment" in widget.severity.note.value


@pytest.fixture
def ct_from_ras_file(panel, small_phantom, tmp_path):
    """The phantom saved as a RAS NIfTI and opened the plugin's way (source orientation RAS)."""
    viewer, widget = panel
    path = tmp_path / "case_7.nii.gz"
    source = small_phantom.ct.geometry
    write_volume(
        path, small_phantom.ct.hu, type(source)(source.spacing_mm, source.origin_mm, source.direction, "RAS")
    )
    volume = read_ct(path)
    assert volume.geometry.source_orientation == "RAS"
    data, kwargs, _ = ct_layer(volume)
    ct = viewer.add_image(data, **kwargs)
    show_known_result(widget, ct, small_phantom)
    return viewer, widget, path


def test_report_exports_match_the_table_and_never_overwrite_silently(ct_from_ras_file, qtbot, user, tmp_path):
    viewer, widget, _ct_path = ct_from_ras_file
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    severity = widget.severity.severity
    out = tmp_path / "out"
    out.mkdir()

    user.save_paths += [out / "r.json", out / "r.csv", out / "r.pdf"]
    for button in (widget.report.export_json, widget.report.export_csv, widget.report.export_pdf):
        button.native.click()
        qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)

    report = json.loads((out / "r.json").read_text())
    assert report["case"] == "case_7"
    assert report["model"] == "chsnet"
    assert report["lungs"]["right"]["volume_ml"] == pytest.approx(severity.right.volume_ml, abs=1e-6)
    assert report["lungs"]["left"]["infected_ml"] == pytest.approx(severity.left.infected_ml, abs=1e-6)
    assert shown_grade(report["overall"]) == widget.severity.cell(2, 3)  # "not measured": 10 mL phantom lungs
    assert EDITED_WARNING not in report["warnings"]
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1
    assert rows[0]["right_grade"] == shown_grade(severity.right.to_dict())  # "not measured" here
    assert (out / "r.pdf").read_bytes().startswith(b"%PDF")

    # An existing JSON is replaced only after a yes; a CSV gets one more row after a yes.
    json_text = (out / "r.json").read_text()
    user.save_paths.append(out / "r.json")
    user.confirm_answers.append(False)
    widget.report.export_json.native.click()
    assert not widget.report.busy
    assert (out / "r.json").read_text() == json_text
    assert "exists" in user.questions[-1]

    # Edit, then export the case to the CSV again: asked whether its row gives way to the corrected
    # reading or the new row goes after it; Cancel writes nothing.
    lungs = viewer.layers[LUNGS_LAYER]
    lungs.data_setitem(tuple(np.argwhere(lungs.data == RIGHT_LUNG)[:100].T), 0)
    corrected_ml = severity.right.volume_ml - 100 * layer_geometry(lungs).voxel_volume_ml
    sheet = (out / "r.csv").read_bytes()
    user.save_paths += [out / "r.csv"] * 3
    user.choices += [None, ADD_ROW, REPLACE_ROWS]
    widget.report.export_csv.native.click()
    assert (out / "r.csv").read_bytes() == sheet
    assert "already holds 1 row(s) for case 'case_7'" in user.questions[-1]
    widget.report.export_csv.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert len(rows) == 2
    assert float(rows[1]["right_volume_ml"]) == pytest.approx(corrected_ml, abs=1e-3)
    widget.report.export_csv.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    assert "already holds 2 row(s)" in user.questions[-1]
    rows = list(csv.DictReader((out / "r.csv").open()))
    assert [row["case"] for row in rows] == ["case_7"]
    assert float(rows[0]["right_volume_ml"]) == pytest.approx(corrected_ml, abs=1e-3)
    # A sheet of other cases only: one row appended after a yes.
    others = out / "others.csv"
    others.write_text((out / "r.csv").read_text().replace("case_7,", "case_8,"))
    user.save_paths.append(others)
    user.confirm_answers.append(True)
    widget.report.export_csv.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    assert user.questions[-1] == f"{others} exists. Append one row for this case to it?"
    assert [row["case"] for row in csv.DictReader(others.open())] == ["case_8", "case_7"]
    user.save_paths.append(out / "edited.json")
    widget.report.export_json.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    assert EDITED_WARNING in json.loads((out / "edited.json").read_text())["warnings"]


def test_masks_are_exported_in_the_ct_files_geometry(ct_from_ras_file, qtbot, user, tmp_path):
    viewer, widget, ct_path = ct_from_ras_file
    out = tmp_path / "masks"
    out.mkdir()
    user.folders.append(out)

    widget.report.export_masks.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)

    names = sorted(p.name for p in out.iterdir())
    assert names == ["case_7_infection.nii.gz", "case_7_infection_probability.nii.gz", "case_7_lungs.nii.gz"]
    source = sitk.ReadImage(str(ct_path))
    for name in names:
        written = sitk.ReadImage(str(out / name))
        assert written.GetSize() == source.GetSize()
        np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), rtol=1e-5)
    geometry = layer_geometry(viewer.layers[LUNGS_LAYER])
    for layer_name, file_name in (
        (LUNGS_LAYER, "case_7_lungs.nii.gz"),
        (INFECTION_LAYER, "case_7_infection.nii.gz"),
    ):
        np.testing.assert_array_equal(read_mask(out / file_name, geometry), viewer.layers[layer_name].data)

    # A second export asks before replacing; "no" leaves the files alone.
    stamp = (out / "case_7_lungs.nii.gz").stat().st_mtime_ns
    user.folders.append(out)
    user.confirm_answers.append(False)
    widget.report.export_masks.native.click()
    assert not widget.report.busy
    assert (out / "case_7_lungs.nii.gz").stat().st_mtime_ns == stamp
    assert "case_7_lungs.nii.gz" in user.questions[-1]


def test_report_of_unedited_layers_carries_what_the_run_removed_and_edited_ones_count_the_layers(
    panel, qtbot, small_phantom
):
    """A run's infection layer holds only the cleaned mask: until it is edited, the table and the
    report add what the run removed; once painted, they count what is in the layers."""
    from napari_chsnet.report import RunInfo, UncountedInfection, compute_severity
    from napari_chsnet.report.case import CaseResult

    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    lungs, infection = small_phantom.lungs.copy(), small_phantom.infection.copy()
    removed = UncountedInfection(removed_components=3, removed_ml=0.25, outside_lungs_ml=1.5)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, uncounted_infection=removed.to_dict())
    severity = compute_severity(lungs, infection, small_phantom.ct.geometry)
    result = CaseResult(lungs, infection, np.zeros(lungs.shape, np.float32), run, "cpu", severity=severity)
    widget.results.show(result, ct)
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    assert widget.severity.severity.uncounted == removed
    assert "1.50 mL of infection (" in widget.severity.note.value
    report = widget.report.build_report()
    assert report["small_lesions_removed"] == {"components": 3, "volume_ml": 0.25}
    assert report["infection_outside_lungs_ml"] == 1.5

    # Paint one voxel (below 0.1 mL) in the left lung, away from any lesion: the figures now
    # describe the layers, where that voxel is the only island and nothing lies outside.
    layer = viewer.layers[INFECTION_LAYER]
    free = np.argwhere((lungs == LEFT_LUNG) & (ndimage.binary_dilation(infection > 0, iterations=2) == 0))[0]
    layer.data_setitem(tuple(free[:, None]), 1)
    qtbot.waitUntil(lambda: widget.severity.severity.removed_components == 1, timeout=TABLE_TIMEOUT_MS)
    voxel_ml = layer_geometry(layer).voxel_volume_ml
    assert widget.severity.severity.uncounted == UncountedInfection(1, voxel_ml, 0.0)
    report = widget.report.build_report()
    assert report["small_lesions_removed"]["components"] == 1 and report["infection_outside_lungs_ml"] == 0.0
    assert EDITED_WARNING in report["warnings"]


def test_a_runs_warning_about_the_scan_stays_under_the_table_and_in_the_report(panel, qtbot, small_phantom):
    """What a run noticed about the scan (a field of view cutting the body) travels with its layers:
    the table's note and the exported report keep it, after edits too."""
    from napari_chsnet.report import RunInfo, compute_severity
    from napari_chsnet.report.case import CaseResult

    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    lungs, infection = small_phantom.lungs.copy(), small_phantom.infection.copy()
    warning = "The field of view cuts the body near the midline on the patient's right: check it."
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, warnings=(warning,))
    severity = compute_severity(lungs, infection, small_phantom.ct.geometry)
    widget.results.show(
        CaseResult(lungs, infection, np.zeros(lungs.shape, np.float32), run, "cpu", severity=severity), ct
    )
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    assert warning in widget.severity.note.value
    assert widget.report.build_report()["warnings"].count(warning) == 1
    viewer.layers[INFECTION_LAYER].data_setitem((np.array([0]), np.array([0]), np.array([0])), 1)
    qtbot.waitUntil(
        lambda: EDITED_WARNING in widget.report.build_report()["warnings"], timeout=TABLE_TIMEOUT_MS
    )
    assert widget.report.build_report()["warnings"].count(warning) == 1


def test_an_edit_made_while_the_mask_was_renamed_still_counts(panel, small_phantom):
    viewer, widget = panel
    show_known_result(widget, add_ct(viewer, small_phantom), small_phantom)
    infection = viewer.layers[INFECTION_LAYER]
    infection.name = "infection (tmp)"
    infection.data_setitem(tuple(np.argwhere(infection.data > 0)[:100].T), 0)
    infection.name = INFECTION_LAYER

    assert widget.results.would_lose_work() == [INFECTION_LAYER]  # a new run asks first
    assert EDITED_WARNING in widget.report.build_report()["warnings"]


def test_a_corrected_mask_kept_by_renaming_stays_corrected_after_a_new_run(panel, small_phantom):
    """The docs' advice: rename a corrected layer, segment again, then use the corrected one."""
    from napari_chsnet.report import RunInfo, UncountedInfection, compute_severity
    from napari_chsnet.report.case import CaseResult

    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    removed = UncountedInfection(removed_components=3, removed_ml=0.25, outside_lungs_ml=1.5)
    run = RunInfo(model="chsnet", device="cpu", runtime_s=1.0, uncounted_infection=removed.to_dict())

    def segment() -> None:
        lungs, infection = small_phantom.lungs.copy(), small_phantom.infection.copy()
        severity = compute_severity(lungs, infection, small_phantom.ct.geometry)
        probability = np.zeros(lungs.shape, np.float32)
        widget.results.show(CaseResult(lungs, infection, probability, run, "cpu", severity=severity), ct)

    segment()
    corrected = viewer.layers[INFECTION_LAYER]
    corrected.data_setitem(tuple(np.argwhere(corrected.data > 0)[:100].T), 0)
    corrected.name = "infection corrected"
    segment()
    viewer.layers.remove(INFECTION_LAYER)
    corrected.name = INFECTION_LAYER

    report = widget.report.build_report()
    assert EDITED_WARNING in report["warnings"]
    assert report["infection_outside_lungs_ml"] == 0.0  # the new run's cleaning is not added to it


def add_ct_of_patient(viewer, phantom, name: str, patient: str, source: str):
    data, kwargs, _ = ct_layer(phantom.ct, name=name)
    kwargs["metadata"] = {**kwargs["metadata"], "PatientID": patient, "chsnet_source": source}
    return viewer.add_image(data, **kwargs)


def test_the_report_finds_the_masks_ct_after_the_ct_is_renamed(panel, small_phantom):
    viewer, widget = panel
    ct = add_ct_of_patient(viewer, small_phantom, "ct", "P42", "/data/P42/ct.nii.gz")
    show_known_result(widget, ct, small_phantom)
    ct.name = "ct - patient 42"
    assert widget.report.build_report()["study"]["PatientID"] == "P42"


def test_a_same_named_ct_of_another_scan_is_not_taken_for_the_masks_ct(
    panel, qtbot, small_phantom, user, tmp_path, notifications
):
    from napari_chsnet.io.phantom import make_phantom

    viewer, widget = panel
    ct_a = add_ct_of_patient(viewer, small_phantom, "ct", "PATIENT-A", "/data/A/ct.nii.gz")
    show_known_result(widget, ct_a, small_phantom)
    viewer.layers.remove(ct_a)
    other_scan = make_phantom(shape=small_phantom.ct.hu.shape, seed=7)
    ct_b = add_ct_of_patient(viewer, other_scan, "ct", "PATIENT-B", "/data/B/ct.nii.gz")  # same shape

    user.save_paths.append(tmp_path / "r.json")
    widget.report.export_json.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["study"] == {}
    assert any("is not open" in warning for warning in report["warnings"])
    assert any(n.severity == "warning" and "is not open" in str(n.message) for n in notifications)

    # Patient A's CT opened again (same file, same name): it is the masks' CT again.
    viewer.layers.remove(ct_b)
    add_ct_of_patient(viewer, small_phantom, "ct", "PATIENT-A", "/data/A/ct.nii.gz")
    assert widget.report.build_report()["study"]["PatientID"] == "PATIENT-A"


def test_the_table_follows_a_rename_that_changes_which_layer_is_infection(panel, qtbot, small_phantom):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    assert widget.severity.severity.overall_infected_ml > 0
    mine = viewer.add_labels(
        np.zeros_like(small_phantom.infection), name="my infection", scale=ct.scale, translate=ct.translate
    )

    viewer.layers[INFECTION_LAYER].name = "infection (model)"
    mine.name = INFECTION_LAYER

    qtbot.waitUntil(lambda: widget.severity.severity.overall_infected_ml == 0, timeout=TABLE_TIMEOUT_MS)
    assert widget.severity.severity.overall_grade == "CT-0"
    assert widget.severity.cell(2, 3) == "not measured"  # the small phantom's lungs hold 8-10 mL


def test_a_label_outside_the_expected_set_is_magenta_and_the_table_says_why(
    panel, qtbot, small_phantom, notifications
):
    """napari's "new label" button gives 3 on 'lungs' and 2 on 'infection': neither is drawn
    invisibly; a lungs label 3 is explained in plain words, an infection label 2 counts."""
    from napari_chsnet.errors import InvalidVolumeError
    from napari_chsnet.widgets.colormaps import UNEXPECTED_LABEL_COLOR
    from napari_chsnet.widgets.report_panel import OTHER_INFECTION_LABELS

    viewer, widget = panel
    show_known_result(widget, add_ct(viewer, small_phantom), small_phantom)
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    lungs, infection = viewer.layers[LUNGS_LAYER], viewer.layers[INFECTION_LAYER]
    for layer, value in ((lungs, 3), (infection, 2)):
        np.testing.assert_allclose(layer.colormap.map(np.array([value], np.uint8))[0], UNEXPECTED_LABEL_COLOR)
    assert lungs.colormap.map(np.array([0], np.uint8))[0][3] == 0  # background stays transparent

    # Lungs: label 3 painted over part of the right lung.
    before = widget.severity.severity
    lungs.data_setitem(tuple(np.argwhere(lungs.data == RIGHT_LUNG)[:50].T), 3)
    message = "The lungs mask holds label 3; paint lungs with 1 (right) or 2 (left) and erase with 0."
    qtbot.waitUntil(lambda: widget.severity.note.value == message, timeout=TABLE_TIMEOUT_MS)
    assert widget.severity.cell(0, 0) == "—" and widget.severity.severity is None
    with pytest.raises(InvalidVolumeError) as raised:
        widget.report.build_report()
    assert str(raised.value) == message
    widget.report.export_report("json")  # refused before any file dialog, with the same words
    assert str(notifications[-1].message) == message
    lungs.undo()
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)

    # Infection: label 2 painted in the left lung away from any lesion counts as infection.
    free = (lungs.data == LEFT_LUNG) & ~ndimage.binary_dilation(infection.data > 0, iterations=2)
    painted = np.argwhere(free)[:200]
    infection.data_setitem(tuple(painted.T), 2)
    qtbot.waitUntil(
        lambda: (
            widget.severity.severity is not None
            and widget.severity.severity.left.infected_voxels > before.left.infected_voxels
        ),
        timeout=TABLE_TIMEOUT_MS,
    )
    assert OTHER_INFECTION_LABELS in widget.severity.note.value
    report = widget.report.build_report()
    assert OTHER_INFECTION_LABELS in report["warnings"]
    assert report["lungs"]["left"]["infected_ml"] > before.left.infected_ml


@pytest.mark.parametrize("how", ["renamed", "closed"])
def test_a_missing_mask_is_named_and_the_table_says_layers_are_found_by_name(
    panel, qtbot, small_phantom, how
):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)

    if how == "renamed":
        viewer.layers[INFECTION_LAYER].name = "infection corrected"
    else:
        viewer.layers.remove(INFECTION_LAYER)

    qtbot.waitUntil(lambda: widget.severity.severity is None, timeout=TABLE_TIMEOUT_MS)
    note = widget.severity.note.value
    assert note.startswith("No 'infection' layer:"), "names the missing layer, not both"
    assert "found by their names" in note and "press Segment" in note


def test_mask_files_and_report_use_one_case_name_after_the_ct_is_closed(
    panel, qtbot, small_phantom, user, tmp_path
):
    viewer, widget = panel
    ct = add_ct(viewer, small_phantom)
    show_known_result(widget, ct, small_phantom)
    viewer.layers.remove(ct)
    case = widget.report.build_report()["case"]
    user.folders.append(tmp_path)

    widget.report.export_masks.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)

    assert case and case != "case"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{case}_infection.nii.gz",
        f"{case}_infection_probability.nii.gz",
        f"{case}_lungs.nii.gz",
    ]


def test_masks_drawn_by_hand_without_a_ct_are_one_case_in_the_report_and_the_files(
    panel, qtbot, small_phantom, user, tmp_path
):
    viewer, widget = panel
    viewer.add_labels(small_phantom.lungs.copy(), name=LUNGS_LAYER)
    viewer.add_labels(small_phantom.infection.copy(), name=INFECTION_LAYER)
    user.folders.append(tmp_path)

    widget.report.export_masks.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)

    assert widget.report.build_report()["case"] == "case"  # not the working folder's name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_infection.nii.gz", "case_lungs.nii.gz"]


def test_the_report_says_when_it_was_written_not_when_its_dialog_opened(
    ct_from_ras_file, qtbot, user, tmp_path, monkeypatch
):
    from napari_chsnet.widgets import report_panel

    _viewer, widget, _ct_path = ct_from_ras_file
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)
    monkeypatch.setattr(
        report_panel, "utc_timestamp", lambda: "2031-01-01T00:00:00+00:00"
    )  # the answer's time
    user.save_paths.append(tmp_path / "r.json")
    widget.report.export_json.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["exported_at"] == "2031-01-01T00:00:00+00:00" != report["timestamp"]


@pytest.fixture
def exported_case(small_phantom, tmp_path):
    """A CT file and the mask files this tab exports for it, as an earlier session left them."""
    folder = tmp_path / "P001"
    folder.mkdir()
    geometry = small_phantom.ct.geometry
    write_volume(folder / "P001_ct_hu.nii.gz", small_phantom.ct.hu, geometry)
    write_volume(folder / "P001_ct_hu_lungs.nii.gz", small_phantom.lungs, geometry, is_label=True)
    write_volume(folder / "P001_ct_hu_infection.nii.gz", small_phantom.infection, geometry, is_label=True)
    return folder


def test_masks_reopened_from_their_files_report_on_the_ct_of_their_grid(
    panel, qtbot, small_phantom, exported_case, user, tmp_path, notifications
):
    """The review's walk: yesterday's exported masks opened next to their CT and renamed. The PDF
    was refused ("The CT the masks belong to ('the CT') is not open") and the JSON said case
    'case', no input and no study fields."""
    viewer, widget = panel
    ct_path = exported_case / "P001_ct_hu.nii.gz"
    ct = viewer.open(str(ct_path), plugin="napari-chsnet")[0]
    ct.metadata["PatientID"] = "P001"  # as a DICOM series' would
    for kind in ("lungs", "infection"):
        viewer.open(str(exported_case / f"P001_ct_hu_{kind}.nii.gz"), plugin="napari-chsnet")

    # Not yet named as the tab finds them: the note names them and says what to do.
    qtbot.waitUntil(
        lambda: "'P001_ct_hu_lungs' to 'lungs'" in widget.severity.note.value, timeout=TABLE_TIMEOUT_MS
    )
    assert "'P001_ct_hu_infection' to 'infection'" in widget.severity.note.value
    viewer.layers["P001_ct_hu_lungs"].name = LUNGS_LAYER
    viewer.layers["P001_ct_hu_infection"].name = INFECTION_LAYER
    qtbot.waitUntil(lambda: widget.severity.severity is not None, timeout=TABLE_TIMEOUT_MS)

    report = widget.report.build_report()
    assert (report["case"], report["input"], report["study"]["PatientID"]) == (
        "P001_ct_hu",
        str(ct_path),
        "P001",
    )
    out = tmp_path / "out"
    out.mkdir()
    user.save_paths.append(out / "r.pdf")
    widget.report.export_pdf.native.click()
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    assert (out / "r.pdf").read_bytes().startswith(b"%PDF")
    assert not [n for n in notifications if n.severity == "error"]
    assert user.suggested[-1] == exported_case / "P001_ct_hu_report.pdf"
    assert widget.severity_box.title() == "Severity — 'P001_ct_hu'"

    # A second CT on the same grid: whose masks they are is not known, and both CTs are named.
    add_ct(viewer, small_phantom, name="P001 copy")
    widget.report.export_report("pdf")
    message = str(notifications[-1].message)
    assert notifications[-1].severity == "error"
    assert "'P001_ct_hu'" in message and "'P001 copy'" in message
    assert widget.report.build_report()["study"] == {}
    assert widget.severity_box.title() == "Severity (current layers)"


def test_the_save_dialog_opens_where_the_user_last_saved_else_in_a_writable_scan_folder(
    ct_from_ras_file, qtbot, user, tmp_path, monkeypatch
):
    """A CD or a PACS export: the scan's folder cannot be written to. Once the user saved somewhere,
    every dialog of the tab opens there (the reviewer exported PDF, CSV and JSON in turn and each
    dialog went back to the scan's folder)."""
    from napari_chsnet.widgets import report_panel

    _viewer, widget, ct_path = ct_from_ras_file
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    user.save_paths.append(None)
    widget.report.export_json.native.click()
    assert user.suggested[-1] == ct_path.parent / "case_7_report.json"  # writable: the scan's folder

    monkeypatch.setattr(report_panel, "_writable", lambda folder: folder != ct_path.parent)
    out = tmp_path / "reports"
    out.mkdir()
    user.save_paths += [None, out / "r.json", None]
    widget.report.export_json.native.click()
    assert user.suggested[-1] == home / "case_7_report.json"
    widget.report.export_json.native.click()  # saved here: the next dialog opens here
    qtbot.waitUntil(lambda: not widget.report.busy, timeout=EXPORT_TIMEOUT_MS)
    widget.report.export_csv.native.click()
    assert user.suggested[-1] == out / "case_7_report.csv"
    monkeypatch.undo()  # the scan's folder writable again: the folder last saved to still comes first
    user.save_paths.append(None)
    widget.report.export_pdf.native.click()
    assert user.suggested[-1] == out / "case_7_report.pdf"
    user.folders.append(None)
    widget.report.export_masks.native.click()  # the masks' folder dialog starts there too
    assert user.suggested[-1] == out
