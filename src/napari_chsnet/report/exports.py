"""Writers of the report files: ``report.json``, the appendable ``report.csv`` and ``report.pdf``.

Every writer creates missing parent folders, refuses to replace an existing file unless
``overwrite=True`` (``OutputExistsError``), and writes to a temporary file in the target folder
that is renamed over the target only when complete, so a crash never leaves half a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_chsnet.errors import CHSNetError, InvalidVolumeError, OutputExistsError
from napari_chsnet.io.atomic import atomic_write
from napari_chsnet.io.volume import CTVolume
from napari_chsnet.report.severity import shown_grade

CSV_COLUMNS = (
    "case",
    "input",
    "timestamp",
    "model",
    "device",
    "right_volume_ml",
    "right_infected_ml",
    "right_involvement_pct",
    "right_grade",
    "left_volume_ml",
    "left_infected_ml",
    "left_involvement_pct",
    "left_grade",
    "overall_volume_ml",
    "overall_infected_ml",
    "overall_involvement_pct",
    "overall_grade",
    "min_lesion_ml",
    "threshold",
    "mirror_averaging",
    "spacing_x_mm",
    "spacing_y_mm",
    "spacing_z_mm",
    "input_intensity",
    "runtime_s",
    "weights_sha256",
    "lung_weights_sha256",
    "n_warnings",
    "warnings",
    "status",
    "error",
)
# What a batch row says of its case: "ok" (figures below) or "failed" (no figures; ``error`` says why).
STATUS_OK, STATUS_FAILED = "ok", "failed"
# Warnings are joined into one cell with this separator (they never contain it).
WARNING_SEPARATOR = " | "


class ReportFormatError(CHSNetError, ValueError):
    """An existing report file whose layout does not match what this version writes."""


def _check_target(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another output or pass overwrite=True (--overwrite)."
        )
    if path.exists() and path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give a file path for the report.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_text(path: Path, text: str) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write(path, write)


def write_report_json(path: str | Path, report_dict: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``report_dict`` (from ``build_report_json``) as indented UTF-8 JSON.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: the dictionary holds NaN/inf or non-JSON values (nothing is written).
    """
    path = _check_target(path, overwrite)
    text = json.dumps(report_dict, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    _write_text(path, text)
    return path


def report_csv_row(report_dict: dict[str, Any]) -> dict[str, str]:
    """The CSV row (column → text) of one report; volumes and percentages with 3 decimals."""
    lungs, overall = report_dict["lungs"], report_dict["overall"]
    row: dict[str, Any] = {
        "case": report_dict.get("case", ""),
        "input": report_dict.get("input", ""),
        "timestamp": report_dict.get("timestamp", ""),
        "model": report_dict.get("model", ""),
        "device": report_dict.get("device", ""),
    }
    # A grade cell reads "not measured" for a lung mask too small to grade, as the PDF and the tables:
    # a cohort sheet must not count it as graded (the JSON keeps the grade with ``measured: false``).
    for side in ("right", "left"):
        for key in ("volume_ml", "infected_ml", "involvement_pct"):
            row[f"{side}_{key}"] = lungs[side][key]
        row[f"{side}_grade"] = shown_grade(lungs[side])
    for key in ("volume_ml", "infected_ml", "involvement_pct"):
        row[f"overall_{key}"] = overall[key]
    row["overall_grade"] = shown_grade(overall)
    row["min_lesion_ml"] = report_dict.get("min_lesion_ml", "")
    options = report_dict.get("inference_options") or {}
    row["threshold"] = options.get("threshold", "")
    row["mirror_averaging"] = options.get("mirror_averaging", "")
    spacing = report_dict.get("voxel_spacing_mm") or ["", "", ""]
    row.update(zip(("spacing_x_mm", "spacing_y_mm", "spacing_z_mm"), spacing, strict=True))
    row["input_intensity"] = report_dict.get("input_intensity", "")
    row["runtime_s"] = report_dict.get("runtime_s", "")
    row["weights_sha256"] = report_dict.get("weights_sha256") or ""
    row["lung_weights_sha256"] = report_dict.get("lung_weights_sha256") or ""
    warnings = [str(w) for w in report_dict.get("warnings", [])]
    row["n_warnings"] = len(warnings)
    row["warnings"] = WARNING_SEPARATOR.join(w.replace(WARNING_SEPARATOR, "; ") for w in warnings)
    row["status"], row["error"] = STATUS_OK, ""
    return {k: _cell(v) for k, v in row.items()}


def failed_csv_row(case: str, input_path: str, timestamp: str, model: str, error: str) -> dict[str, str]:
    """The CSV row of a case that failed: its identity, ``status`` "failed" and the error, no figures,
    so that a batch's CSV holds one row per input."""
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(
        case=case, input=input_path, timestamp=timestamp, model=model, status=STATUS_FAILED, error=error
    )
    return row


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def append_report_csv(
    path: str | Path,
    report_dict: dict[str, Any],
    *,
    replace_case: bool = False,
    failed_as: Sequence[str] = (),
) -> Path:
    """Add the row of one report (``report_csv_row``) to ``path``; see ``add_csv_row``."""
    return add_csv_row(path, report_csv_row(report_dict), replace_case=replace_case, failed_as=failed_as)


def add_csv_row(
    path: str | Path, row: dict[str, str], *, replace_case: bool = False, failed_as: Sequence[str] = ()
) -> Path:
    """Add one case's row to ``path`` (the header first if the file is new or empty): in place of the
    case's rows that say it failed, else appended.

    The file grows across runs (like Lung CT Analyzer's ``results.csv``); the columns are
    ``CSV_COLUMNS``. The new content is written to a temporary copy and renamed into place. A case's
    failed row gives way to its next row, so that a rerun that succeeds leaves one row per input; a
    failed row never replaces a written case's row (its files are still there).

    Args:
        replace_case: the case's outputs were written again (``chsnet segment --overwrite``): all its
            earlier rows (same ``case``), which describe files that no longer exist, give way too.
        failed_as: other names the case's failed rows may carry (an anonymised batch names a case
            it could not read otherwise than one it reported); those rows give way as well.

    Raises:
        ReportFormatError: the existing file's header differs from ``CSV_COLUMNS`` (nothing is
            written; start a new file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _csv_lock(path):  # two runs into one folder would otherwise each drop the other's rows
        _add_row(path, row, replace_case, failed_as)
    return path


def csv_rows_of_case(path: str | Path, case: str) -> int:
    """How many rows of ``path`` (a report CSV of ``CSV_COLUMNS``) belong to ``case``; 0 for a missing
    file or one with other columns (writing to it is refused later, saying why)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return 0
    header, *rows = list(csv.reader(io.StringIO(text))) or [[]]
    if tuple(header) != CSV_COLUMNS:
        return 0
    case_column = CSV_COLUMNS.index("case")
    return sum(1 for row in rows if len(row) == len(CSV_COLUMNS) and row[case_column] == case)


@contextlib.contextmanager
def _csv_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the CSV's folder (POSIX; no lock where fcntl is absent).

    The folder, not the CSV, is locked because the CSV is replaced by a rename on every append,
    and not a lock file so the output folder holds only the outputs.
    """
    try:
        import fcntl
    except ImportError:  # Windows: appends from concurrent runs are not serialised
        yield
        return
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _add_row(path: Path, row: dict[str, str], replace_case: bool, failed_as: Sequence[str]) -> None:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing.strip():
        header = next(csv.reader(io.StringIO(existing)))
        if tuple(header) != CSV_COLUMNS:
            raise ReportFormatError(
                f"{path} has the columns {header}, not the {len(CSV_COLUMNS)} columns this version writes "
                f"({', '.join(CSV_COLUMNS)}); append to a new CSV file instead."
            )
        if not existing.endswith("\n"):
            existing += "\n"
    else:
        existing = ""
    if existing:
        replaced = _replace_case_rows(existing, row, also_written=replace_case, failed_as=failed_as)
        if replaced is not None:
            _write_text(path, replaced)
            return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    _write_text(path, existing + buffer.getvalue())


def _replace_case_rows(
    existing: str, row: dict[str, str], also_written: bool, failed_as: Sequence[str] = ()
) -> str | None:
    """``existing`` (header first) with ``row`` in place of the first of its case's failed rows (with
    ``also_written``, of all its rows) and without the others; ``None`` when no row matches (then
    ``row`` is appended)."""
    header, *rows = list(csv.reader(io.StringIO(existing)))
    case_column, status_column = CSV_COLUMNS.index("case"), CSV_COLUMNS.index("status")
    matching = [
        i
        for i, old in enumerate(rows)
        if len(old) == len(CSV_COLUMNS)
        and (
            (old[case_column] == row["case"] and (also_written or old[status_column] == STATUS_FAILED))
            or (old[case_column] in failed_as and old[status_column] == STATUS_FAILED)
        )
    ]
    if not matching:
        return None
    new_row = [row[column] for column in CSV_COLUMNS]
    first, dropped = matching[0], set(matching[1:])
    kept = [new_row if i == first else old for i, old in enumerate(rows) if i not in dropped]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([header, *kept])
    return buffer.getvalue()


def write_report_pdf(
    path: str | Path,
    report_dict: dict[str, Any],
    ct: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray,
    probability: np.ndarray | None = None,
    overwrite: bool = False,
    *,
    infection_is_clean: bool = False,
) -> Path:
    """Write the clinician-readable A4 PDF (summary page with the coronal view, axial key slices).

    Args:
        report_dict: from ``build_report_json`` (figures, study fields, run details).
        ct: the CT the masks belong to.
        lungs, infection, probability: ``(z, y, x)`` arrays on ``ct``'s grid (probability 0…1,
            optional).
        infection_is_clean: ``infection`` is the pipeline's already cleaned mask
            (``render_report_figures``): the drawing skips cleaning it again.
    """
    for name, array in (("lungs", lungs), ("infection", infection), ("probability", probability)):
        if array is not None and np.shape(array) != ct.shape:
            raise InvalidVolumeError(
                f"{name} has shape {np.shape(array)} but the CT has {ct.shape}; pass masks on the CT's grid."
            )
    path = _check_target(path, overwrite)
    # Imported here: matplotlib is only needed when a PDF is asked for.
    from matplotlib import rc_context
    from matplotlib.backends.backend_pdf import PdfPages

    from napari_chsnet.report.rendering import render_report_figures

    figures = render_report_figures(
        report_dict, ct, lungs, infection, probability, infection_is_clean=infection_is_clean
    )

    def write(temporary: Path) -> None:
        # TrueType fonts keep the text selectable and searchable (Type 3 is matplotlib's default).
        with (
            rc_context({"pdf.fonttype": 42}),
            PdfPages(
                temporary,
                metadata={
                    "Title": f"napari-chsnet severity report {report_dict.get('case', '')}".strip(),
                    "Subject": "Research tool — not for clinical diagnosis",
                    "Creator": "napari-chsnet",
                },
            ) as pdf,
        ):
            for figure in figures:
                pdf.savefig(figure)

    atomic_write(path, write)
    return path
