"""Severity table (always visible) and the Report tab's exports.

The table is recomputed from the CURRENT ``lungs`` and ``infection`` layers (so it always
matches the screen): ``ResultLayers.changed`` restarts a 300 ms single-shot timer, and the
figures are computed by ``severity_of_layers`` in a worker thread. A run's infection layer holds
only the cleaned mask; until that layer is edited by hand, the figures also carry what the run's
cleaning took out (small islands, infection outside the lungs: ``RunInfo.uncounted_infection``).
Exports build the same report as the command line (``report.build_report_json`` and its writers)
from the same layers, and write masks back in the CT's original geometry (``io.writers.write_volume``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QHeaderView,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_chsnet.errors import CHSNetError, InvalidVolumeError
from napari_chsnet.inference.run_info import case_name, utc_timestamp
from napari_chsnet.io.writers import WRITE_SUFFIXES, write_volume
from napari_chsnet.napari_hooks import SOURCE_KEY
from napari_chsnet.registry import INFECTION_LAYER, LUNGS_LAYER
from napari_chsnet.report import (
    RunInfo,
    SeverityReport,
    UncountedInfection,
    append_report_csv,
    build_report_json,
    clean_infection,
    csv_rows_of_case,
    severity_from_cleaned,
    write_report_json,
    write_report_pdf,
)
from napari_chsnet.report.severity import format_figure, format_percent, shown_grade
from napari_chsnet.widgets.dialogs import Dialogs
from napari_chsnet.widgets.layer_facts import ct_volume_from_layer, layer_geometry, mask_kind, run_info_of
from napari_chsnet.widgets.layout import end_with_stretch, paragraph, row
from napari_chsnet.widgets.results import ResultLayers
from napari_chsnet.widgets.tooltips import TOOLTIPS

if TYPE_CHECKING:
    import napari

    from napari_chsnet.io.volume import CTVolume

DEBOUNCE_MS = 300
TABLE_COLUMNS = ("Lung\nmL", "Infected\nmL", "Involved\n%", "Grade")  # two lines: a narrower table
TABLE_ROWS = ("Right lung", "Left lung", "Overall")
EDITED_WARNING = "The masks were corrected by hand after the model run."
# Exporting a case the CSV already holds: its earlier rows give way, or the new one goes after them.
REPLACE_ROWS, ADD_ROW = "Replace", "Add a row"
NO_MASKS = f"No '{LUNGS_LAYER}' and '{INFECTION_LAYER}' layers yet: press Segment."
FOUND_BY_NAME = (
    f"result layers are found by their names ('{LUNGS_LAYER}', '{INFECTION_LAYER}'), so a renamed or "
    "closed one is not counted"
)
OTHER_INFECTION_LABELS = (
    f"The '{INFECTION_LAYER}' layer holds labels above 1 (drawn magenta); they count as infection."
)


def current_masks(results: ResultLayers) -> tuple[np.ndarray, np.ndarray, Any]:
    """The lungs and infection arrays on screen, and their grid's geometry.

    Raises:
        InvalidVolumeError: a layer is missing or the two are not on one grid.
    """
    lungs, infection = results.lungs, results.infection
    if lungs is None or infection is None:
        raise InvalidVolumeError(missing_masks_message(results))
    if lungs.data.shape != infection.data.shape:
        raise InvalidVolumeError(
            f"'{LUNGS_LAYER}' {lungs.data.shape} and '{INFECTION_LAYER}' {infection.data.shape} are not on "
            "the same grid; segment again to get matching layers."
        )
    return np.asarray(lungs.data), np.asarray(infection.data), layer_geometry(lungs)


def missing_masks_message(results: ResultLayers) -> str:
    """What is missing of the ``lungs`` and ``infection`` layers, and how the panel finds them."""
    missing = [name for name in (LUNGS_LAYER, INFECTION_LAYER) if results.layer(name) is None]
    named = {name: results.named(name) for name in missing}
    if len(missing) == 2 and not any(named.values()) and not results.renamed_results():
        opened = _masks_under_other_names(results)
        if not opened:
            return NO_MASKS
        renames = " and ".join(
            " or ".join(f"'{name}'" for name in names) + f" to '{kind}'" for kind, names in opened.items()
        )
        return (
            f"No '{LUNGS_LAYER}' and '{INFECTION_LAYER}' layers: masks are found by these names. Rename "
            f"{renames} (double-click the name in the layer list), or press Segment."
        )
    problems = [
        f"'{name}' is not a Labels layer" if named[name] is not None else f"no '{name}' layer"
        for name in missing
    ]
    text = " and ".join(problems)
    names = " and ".join(f"'{name}'" for name in missing)
    masks, its = ("mask", "its") if len(missing) == 1 else ("masks", "their")
    return (
        f"{text[0].upper()}{text[1:]}: {FOUND_BY_NAME}. Name the {masks} {names} again (double-click "
        f"{its} name in the layer list), or press Segment."
    )


def _masks_under_other_names(results: ResultLayers, most: int = 3) -> dict[str, list[str]]:
    """Names (``most`` of each kind at most) of the 3-D Labels layers that look like the lungs or
    the infection mask (``mask_kind``), by kind: the files this panel exports (``<case>_lungs``,
    ``<case>_infection``) opened again, for one."""
    found: dict[str, list[str]] = {LUNGS_LAYER: [], INFECTION_LAYER: []}
    for layer in results.labels_layers():
        kind = mask_kind(layer) if layer.ndim == 3 else None
        if kind in found and len(found[kind]) < most:
            found[kind].append(layer.name)
    return {kind: names for kind, names in found.items() if names}


def removed_by_run(results: ResultLayers) -> UncountedInfection:
    """What the run that wrote the infection layer took out of it; nothing once the user edited
    it (the report then counts what is in the layers) or for a layer no run wrote."""
    layer = results.infection
    run = run_info_of(layer) if layer is not None else None
    if run is None or results.is_edited(INFECTION_LAYER):
        return UncountedInfection()
    return UncountedInfection.from_dict(run.uncounted_infection)


def severity_of_layers(
    lungs: np.ndarray,
    infection: np.ndarray,
    geometry: Any,
    min_lesion_ml: float,
    removed_before: UncountedInfection,
    more_warnings: tuple[str, ...] = (),
) -> SeverityReport:
    """The figures of the layers as they are, plus what was taken out before they were shown.

    ``more_warnings`` (e.g. ``ResultLayers.spacing_warning()``) join the severity's own warnings,
    so the table's note and the report say the same.
    """
    cleaned = clean_infection(lungs, infection, geometry, min_lesion_ml)
    cleaned = dataclasses.replace(cleaned, uncounted=cleaned.uncounted + removed_before)
    severity = severity_from_cleaned(lungs, cleaned, geometry)
    extra = list(more_warnings)
    if infection.size and infection.max() > 1:
        extra.append(OTHER_INFECTION_LABELS)
    return dataclasses.replace(severity, warnings=(*severity.warnings, *extra)) if extra else severity


def _more_warnings(results: ResultLayers) -> tuple[str, ...]:
    """Warnings about the layers that their arrays cannot tell (read on the GUI thread): the voxel
    size, and what the run noticed about the scan (``RunInfo.warnings``)."""
    spacing = results.spacing_warning()
    lungs = results.lungs
    run = run_info_of(lungs) if lungs is not None else None
    return (*((spacing,) if spacing else ()), *(run.warnings if run is not None else ()))


def _writable(folder: Path) -> bool:
    """Whether files can be written into ``folder`` (not a CD or a read-only PACS export)."""
    return os.access(folder, os.W_OK)


def _row_values(volume_ml: float, infected_ml: float, involvement_pct: float, grade: str) -> tuple[str, ...]:
    return (format_figure(volume_ml), format_figure(infected_ml), format_percent(involvement_pct), grade)


class SeverityTable(QWidget):
    """Per-lung volume, infected volume, involvement and grade, plus the overall row."""

    def __init__(self, results: ResultLayers, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._results = results
        self._pending = False
        self._computing = False
        self._closed = False  # the panel was closed: its Qt widgets are gone or about to be
        self.severity: SeverityReport | None = None

        self.table = QTableWidget(len(TABLE_ROWS), len(TABLE_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.setVerticalHeaderLabels(TABLE_ROWS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setToolTip(TOOLTIPS["severity_table"])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # Three rows: as tall as its content, never a scrollbar inside the panel's own scroll area.
        self.table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.note = Label(value=NO_MASKS)
        self.note.native.setWordWrap(True)
        # Wrapped to the panel's width: Qt's minimum for a wrapped label grows with its text, and
        # several warnings would otherwise widen the whole panel.
        policy = self.note.native.sizePolicy()
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        self.note.native.setSizePolicy(policy)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table)
        layout.addWidget(self.note.native)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._recompute)
        results.changed.connect(self.schedule)
        self._show(None, NO_MASKS)
        self.schedule()  # result layers may already be open (an earlier panel's)

    def release(self) -> None:
        """The panel is closed: a computation still running shows nothing."""
        self._closed = True
        self._timer.stop()

    def schedule(self) -> None:
        """Recompute in DEBOUNCE_MS unless asked again meanwhile."""
        self._timer.start()

    def cell(self, row: int, column: int) -> str:
        item = self.table.item(row, column)
        return item.text() if item is not None else ""

    def _recompute(self) -> None:
        if self._computing:
            self._pending = True
            return
        try:
            lungs, infection, geometry = current_masks(self._results)
        except CHSNetError as exc:
            self._show(None, str(exc))
            return
        # Snapshots: the user may paint while the worker counts.
        worker = create_worker(
            severity_of_layers,
            np.array(lungs, copy=True),
            np.array(infection, copy=True),
            geometry,
            self._results.min_lesion_ml,
            removed_by_run(self._results),
            _more_warnings(self._results),
            _ignore_errors=True,
        )
        worker.returned.connect(self._on_computed)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._computing = True
        worker.start()

    def _on_computed(self, severity: SeverityReport) -> None:
        if self._closed:
            return
        note = " ".join(severity.warnings) or (
            f"Grade = worse lung (MosMed). Lesions below {severity.min_lesion_ml:g} mL are not counted."
        )
        self._show(severity, note)

    def _on_error(self, exc: BaseException) -> None:
        if not self._closed:
            self._show(None, str(exc))

    def _on_finished(self) -> None:
        self._computing = False
        if self._pending and not self._closed:
            self._pending = False
            self._timer.start()

    def _show(self, severity: SeverityReport | None, note: str) -> None:
        self.severity = severity
        if severity is None:
            rows = [("—",) * len(TABLE_COLUMNS)] * len(TABLE_ROWS)
        else:
            figures = severity.to_dict()  # shown_grade: "not measured" for a mask too small to grade
            rows = [
                _row_values(
                    lung.volume_ml,
                    lung.infected_ml,
                    lung.involvement_pct,
                    shown_grade(figures["lungs"][side]),
                )
                for side, lung in severity.lungs.items()
            ]
            rows.append(
                _row_values(
                    severity.overall_volume_ml,
                    severity.overall_infected_ml,
                    severity.overall_involvement_pct,
                    shown_grade(figures["overall"]),
                )
            )
        bold = QFont()
        bold.setBold(True)
        for r, values in enumerate(rows):
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == len(TABLE_COLUMNS) - 1 or r == len(TABLE_ROWS) - 1:
                    item.setFont(bold)
                self.table.setItem(r, c, item)
        self.note.value = note
        self._fit_columns()

    def _fit_columns(self) -> None:
        """Make the table at least as wide as its headers and figures: the columns share the
        panel's width equally (stretch) but never below the widest one's need, so no figure or
        header is cut off (the panel keeps itself as wide as the table needs)."""
        header = self.table.horizontalHeader()
        count = self.table.columnCount()
        widest = max(max(header.sectionSizeHint(c), self.table.sizeHintForColumn(c)) for c in range(count))
        # + count: stretched sections share the viewport in whole pixels, one of them may lose one
        width = (
            self.table.verticalHeader().sizeHint().width()
            + count * (widest + 1)
            + 2 * self.table.frameWidth()
        )
        if width != self.table.minimumWidth():
            self.table.setMinimumWidth(width)


class ReportPanel(Container):
    """The Report tab: report files and masks in the CT's geometry."""

    def __init__(self, viewer: napari.Viewer, results: ResultLayers, dialogs: Dialogs) -> None:
        self._viewer = viewer
        self._results = results
        self.dialogs = dialogs
        self._busy = False
        self._closed = False  # the panel was closed: its Qt widgets are gone or about to be
        self._last_folder: Path | None = None  # where the user last saved a report or masks

        self.anonymize = CheckBox(
            text="Anonymise (no names, IDs, dates, paths)", value=False, tooltip=TOOLTIPS["anonymize"]
        )
        self.export_pdf = PushButton(text="PDF…", tooltip=TOOLTIPS["export_pdf"])
        self.export_csv = PushButton(text="CSV…", tooltip=TOOLTIPS["export_csv"])
        self.export_json = PushButton(text="JSON…", tooltip=TOOLTIPS["export_json"])
        self.mask_format = ComboBox(
            label="Mask format", choices=list(WRITE_SUFFIXES), tooltip=TOOLTIPS["mask_format"]
        )
        self.export_masks = PushButton(text="Export masks…", tooltip=TOOLTIPS["export_masks"])
        super().__init__(
            widgets=[
                paragraph("Report of the layers on screen\n(same content as `chsnet segment`):")[0],
                self.anonymize,
                row(self.export_pdf, self.export_csv, self.export_json),
                self.mask_format,
                self.export_masks,
                paragraph(
                    "File → Save Selected Layers writes one\nlayer in the CT's geometry too: choose\n"
                    "the 'CT geometry (CHS-Net)' file type."
                )[0],
            ]
        )
        end_with_stretch(self)
        self._buttons = (self.export_pdf, self.export_csv, self.export_json, self.export_masks)
        self.export_pdf.changed.connect(partial(self.export_report, "pdf"))
        self.export_csv.changed.connect(partial(self.export_report, "csv"))
        self.export_json.changed.connect(partial(self.export_report, "json"))
        self.export_masks.changed.connect(self.export_mask_files)

    @property
    def busy(self) -> bool:
        return self._busy

    def release(self) -> None:
        """The panel is closed: a running export still finishes (and says so), but touches no
        widget of the panel from now on."""
        self._closed = True

    # ------------------------------------------------------------------ what is exported
    def _ct_volume(self, required: bool) -> CTVolume | None:
        layer = self._results.ct_layer()
        if layer is None:
            if required:
                raise InvalidVolumeError(self._no_ct_message())
            return None
        return ct_volume_from_layer(layer)

    def _no_ct_message(self) -> str:
        """Why the CT of the masks on screen is not found (``ResultLayers.ct_layer`` gave None)."""
        name = self._results.recorded_ct_name()
        if name is not None:
            return f"The CT the masks belong to ('{name}') is not open; open that CT's file again or segment again."
        matches = self._ambiguous_cts()
        if matches:
            return (
                f"The CT the masks belong to is not known: they record none, and the open CTs {matches} "
                "all lie on their grid; close the ones they do not belong to, or segment again."
            )
        return (
            "The CT the masks belong to is not open: no open CT lies on their grid; open the CT they "
            "were drawn on, or segment again."
        )

    def _ambiguous_cts(self) -> str:
        """The quoted names of the open CTs that masks recording no CT all lie on, when more than one
        does ("" otherwise)."""
        if self._results.recorded_ct_name() is not None:
            return ""
        names = [layer.name for layer in self._results.cts_on_the_masks_grid()]
        return ", ".join(f"'{name}'" for name in names) if len(names) > 1 else ""

    def _missing_ct_note(self) -> str | None:
        """Why the report has no study fields, when the CT of the masks cannot be found: the CT the
        masks record is closed, or masks that record none lie on several open CTs' grid."""
        name = self._results.recorded_ct_name()
        if self._results.ct_layer() is not None:
            return None
        if name is None:
            matches = self._ambiguous_cts()
            if not matches:
                return None
            return (
                f"The masks record no CT and the open CTs {matches} all lie on their grid, so the report "
                "has no study fields (patient, series); close the ones they do not belong to to include them."
            )
        return (
            f"The CT the masks were computed on ('{name}') is not open, so the report has no study "
            "fields (patient, series); open that CT again or segment again to include them."
        )

    def build_report(self) -> dict[str, Any]:
        """The report dict of the layers on screen (raises CHSNetError with the reason)."""
        lungs, infection, geometry = current_masks(self._results)
        severity = severity_of_layers(
            lungs,
            infection,
            geometry,
            self._results.min_lesion_ml,
            removed_by_run(self._results),
            _more_warnings(self._results),
        )
        ct = self._ct_volume(required=False)
        lungs_layer = self._results.lungs
        run = run_info_of(lungs_layer) if lungs_layer is not None else None
        if run is None:  # masks opened or drawn by hand: no model produced them
            run = RunInfo(model="manual", device="none", runtime_s=0.0, input=ct.source if ct else "")
        run = dataclasses.replace(run, case=self._case())  # the masks' files get the same name
        report = build_report_json(
            severity,
            run,
            ct.metadata if ct else None,
            anonymize=bool(self.anonymize.value),
            geometry=geometry,
        )
        if any(self._results.is_edited(name) for name in (LUNGS_LAYER, INFECTION_LAYER)):
            report["warnings"].append(EDITED_WARNING)
        missing_ct = self._missing_ct_note()
        if missing_ct:
            report["warnings"].append(missing_ct)
        return report

    def _case(self) -> str:
        """The case name of the layers on screen, for the report and the mask files alike: the one
        the run recorded (its input's name), else the CT's, else "case"."""
        lungs = self._results.lungs
        run = run_info_of(lungs) if lungs is not None else None
        if run is not None and (run.case or run.input):
            return run.case or case_name(run.input)
        ct = self._results.ct_layer()
        if ct is not None:
            return case_name(str(ct.metadata.get(SOURCE_KEY) or ct.name))
        return "case"

    def _suggested_folder(self) -> Path:
        """The folder the user last saved a report or masks to from this tab (PDF, CSV, JSON and masks
        in turn go together, and a study's CSV grows in one place); before the first save, the scan's
        folder (taken from the layers: an anonymised report's input is only the case name) when it can
        be written to (not a CD or a PACS export), else the home folder."""
        if self._last_folder is not None and self._last_folder.is_dir():
            return self._last_folder
        lungs, ct = self._results.lungs, self._results.ct_layer()
        run = run_info_of(lungs) if lungs is not None else None
        for given in (
            run.input if run else "",
            str(ct.metadata.get(SOURCE_KEY) or "") if ct is not None else "",
        ):
            if given and Path(given).parent.is_dir() and _writable(Path(given).parent):
                return Path(given).parent
        return Path.home()

    # ------------------------------------------------------------------ exports
    def export_report(self, kind: str, *_args: Any) -> None:
        """Ask for a file and write the report as ``kind`` ("pdf", "csv" or "json")."""
        try:
            report = self.build_report()
            ct = self._ct_volume(required=kind == "pdf")
        except CHSNetError as exc:
            show_error(str(exc))
            return
        missing_ct = self._missing_ct_note()
        if missing_ct:  # said in the file too, but the user should not find out only there
            show_warning(missing_ct)
        path = self.dialogs.save_file(
            f"Save the severity report ({kind.upper()})",
            self._suggested_folder() / f"{report['case'] or 'case'}_report.{kind}",
            f"{kind.upper()} (*.{kind})",
        )
        if path is None:
            return
        self._last_folder = path.parent
        if path.suffix.lower() != f".{kind}":
            path = path.with_name(f"{path.name}.{kind}")
        overwrite = self._ask_before_writing(path, kind, report["case"] or "")
        if overwrite is None:
            return
        report["exported_at"] = utc_timestamp()  # when written, not when the dialog opened
        if kind == "json":
            task: Callable[[], Path] = partial(write_report_json, path, report, overwrite=overwrite)
        elif kind == "csv":
            task = partial(append_report_csv, path, report, replace_case=overwrite)
        else:
            lungs, infection, _geometry = current_masks(self._results)
            probability = self._results.probability
            prob = (
                np.asarray(probability.data)
                if probability is not None and probability.data.shape == lungs.shape
                else None
            )
            task = partial(
                write_report_pdf,
                path,
                report,
                ct,
                np.array(lungs),
                np.array(infection),
                prob,
                overwrite=overwrite,
            )
        self._run(f"Report written to {path}", task)

    def _ask_before_writing(self, path: Path, kind: str, case: str) -> bool | None:
        """Whether to replace ``path`` (a CSV: the case's rows in it), asking when it exists; None when
        the user declines."""
        if not path.exists():
            return False
        earlier_rows = csv_rows_of_case(path, case) if kind == "csv" else 0
        if earlier_rows:
            # A corrected reading: a study sheet wants one row per case, a history keeps both.
            answer = self.dialogs.choose(
                "File exists",
                f"{path} already holds {earlier_rows} row(s) for case '{case}'. Add this reading as "
                "another row, or replace them with it?",
                (ADD_ROW, REPLACE_ROWS),  # the default loses nothing
            )
            return None if answer is None else answer == REPLACE_ROWS
        question = (
            f"{path} exists. Append one row for this case to it?"
            if kind == "csv"
            else f"{path} exists. Replace it?"
        )
        if not self.dialogs.confirm("File exists", question):
            return None
        return kind != "csv"

    def export_mask_files(self) -> None:
        """Ask for a folder and write lungs, infection (and probability) in the CT's geometry."""
        try:
            lungs, infection, geometry = current_masks(self._results)
        except CHSNetError as exc:
            show_error(str(exc))
            return
        folder = self.dialogs.folder(
            "Folder for the masks (written in the CT's original geometry)", self._suggested_folder()
        )
        if folder is None:
            return
        self._last_folder = folder
        case = self._case()
        suffix = self.mask_format.value
        arrays: list[tuple[Path, np.ndarray, bool]] = [
            (folder / f"{case}_lungs{suffix}", np.array(lungs), True),
            (folder / f"{case}_infection{suffix}", np.array(infection), True),
        ]
        probability = self._results.probability
        if probability is not None and probability.data.shape == lungs.shape:
            arrays.append(
                (folder / f"{case}_infection_probability{suffix}", np.array(probability.data), False)
            )
        existing = [path for path, _, _ in arrays if path.exists()]
        if existing and not self.dialogs.confirm(
            "Files exist", "Replace these files?\n" + "\n".join(str(path) for path in existing)
        ):
            return

        def write_all() -> list[Path]:
            return [
                write_volume(path, array, geometry, overwrite=path in existing, is_label=is_label)
                for path, array, is_label in arrays
            ]

        self._run(f"Masks written to {folder}", write_all)

    def _run(self, done_message: str, task: Callable[[], Any]) -> None:
        if self._busy:
            show_info("An export is still running; try again when it is done.")
            return
        worker = create_worker(task, _ignore_errors=True)
        worker.returned.connect(lambda _result: show_info(done_message))
        worker.errored.connect(
            lambda exc: show_error(str(exc) if isinstance(exc, CHSNetError) else f"Export failed: {exc}")
        )
        worker.finished.connect(partial(self._set_busy, False))
        self._set_busy(True)
        worker.start()

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        if self._closed:
            return
        for button in self._buttons:
            button.enabled = not busy
