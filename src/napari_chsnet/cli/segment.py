"""``chsnet segment``: CT scans (or the built-in synthetic CT) → masks, probability map and report.

One input writes into OUTDIR; several inputs write one subfolder per case and one ``report.csv`` in
OUTDIR. Every check that can fail (inputs exist, outputs free, device present, weights readable) runs
before any scan is read, so a typo never costs a long run. ``report.csv`` is appended to (one row per
case, across runs); with ``--overwrite`` a case's earlier rows are replaced by its new one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from napari_chsnet.cli._common import each_case, segment_with_bar
from napari_chsnet.cli.options import (
    DefaultsHelpFormatter,
    add_model_options,
    model_settings,
    non_negative_float,
    positive_int,
    probability,
)
from napari_chsnet.errors import CHSNetError, InvalidVolumeError, OutputError, OutputExistsError
from napari_chsnet.inference.cleaning import DEFAULT_MIN_LESION_ML
from napari_chsnet.io.hounsfield import INTENSITY_CHOICES
from napari_chsnet.listing import first_and_more

VOLUME_OUTPUTS = ("lungs.nii.gz", "infection.nii.gz", "probability.nii.gz")
REPORT_OUTPUTS = ("report.json", "report.pdf")
CSV_NAME = "report.csv"
SAMPLE_CASE = "sample"


@dataclass(frozen=True)
class Case:
    name: str
    source: Path | None  # None = the built-in synthetic CT
    folder: Path

    def outputs(self) -> list[Path]:
        return [self.folder / name for name in VOLUME_OUTPUTS + REPORT_OUTPUTS]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment lungs and infection of CT scans and write the severity report",
        description="Segment the lungs (1 = right, 2 = left) and COVID-19 infection of each CT and write "
        "lungs.nii.gz, infection.nii.gz, probability.nii.gz (in the scan's geometry), report.json, report.csv "
        "and report.pdf. Several inputs: one subfolder per case, one report.csv.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="*", type=Path, metavar="INPUT",
        help="a DICOM series folder, a .dcm file, or a .nii/.nii.gz/.mha/.mhd/.nrrd volume",
    )  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    add_model_options(parser)
    parser.add_argument("--batch-size", type=positive_int, default=4, help="slices per network call")
    parser.add_argument(
        "--threshold", type=probability, default=0.5,
        help="infection probability threshold; EAMC: each member's vote threshold (the mask is the members' "
        "majority vote, probability.nii.gz their mean probability)",
    )  # fmt: skip
    parser.add_argument(
        "--min-lesion-ml", type=non_negative_float, default=DEFAULT_MIN_LESION_ML,
        help="infection components smaller than this (mL) are not counted; 0 counts every voxel",
    )  # fmt: skip
    parser.add_argument(
        "--intensity", choices=INTENSITY_CHOICES, default="auto",
        help="what the scan's values are: auto tells Hounsfield units, 8-bit display values (0-255, read "
        "through the training slices' window) and HU + 1024 apart; or say which (docs/io.md)",
    )  # fmt: skip
    parser.add_argument(
        "--fill-missing-slices", action="store_true",
        help="DICOM: interpolate the slices a series lacks (a gap in its positions) instead of refusing it; "
        "the report lists the interpolated slices",
    )  # fmt: skip
    parser.add_argument(
        "--anonymize",
        action="store_true",
        help="leave names, IDs, UIDs, dates, descriptions, institution and the input path out of the reports "
        "(the case name, the input's file or folder name, stays unless it holds the patient's name or ID)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace existing output files; the report.csv rows of a case written again are replaced by its "
        "new row (without it, a case's outputs must not exist and rows are only appended)",
    )  # fmt: skip
    parser.add_argument(
        "--sample", action="store_true", help="segment the built-in synthetic chest CT instead of INPUT"
    )
    parser.set_defaults(run=run, parser=parser)
    return parser


def plan_cases(inputs: list[Path], sample: bool, output: Path) -> list[Case]:
    """The cases and their output folders (several inputs: ``OUTDIR/<case name>``, made unique)."""
    from napari_chsnet.inference.run_info import case_name

    if sample:
        return [Case(SAMPLE_CASE, None, output)]
    if len(inputs) == 1:
        return [Case(case_name(str(inputs[0])), inputs[0], output)]
    # Names are compared case-folded: on macOS and Windows file systems CT.nii.gz and ct.nii.gz would
    # otherwise share one case folder, the second case's files replacing the first's.
    cases, used = [], set()
    for path in inputs:
        name = base = _folder_name(case_name(str(path)))
        suffix = 2
        while name.casefold() in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name.casefold())
        cases.append(Case(name, path, output / name))
    return cases


def _folder_name(name: str) -> str:
    """A case subfolder name that cannot be the batch CSV (a folder input named ``report.csv``)."""
    return f"{name}_case" if name.lower() == CSV_NAME else name


def make_output_folders(cases: list[Case], output: Path) -> list[Path]:
    """Create OUTDIR and the case folders now, so an unusable ``-o`` stops the run before any scan.

    Returns the folders this call created (not those that were there), which ``remove_empty_folders``
    may take away again when a case fails.
    """
    created: list[Path] = []
    for folder in dict.fromkeys([output, *(case.folder for case in cases)]):
        missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
        try:
            folder.mkdir(parents=True)
            created += reversed(missing)  # the parents mkdir made too, outermost first
        except FileExistsError as error:
            if not folder.is_dir():
                raise OutputError(
                    f"cannot create output folder {folder} (a file is in the way); choose another -o"
                ) from error
        except OSError as error:
            raise OutputError(
                f"cannot create output folder {folder} ({error.strerror or error}); choose another -o"
            ) from error
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(
                f"output folder {folder} is not writable; choose another -o or fix its permissions"
            )
    return created


def remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders this run created that are still empty (a failed or interrupted case): an
    empty case folder would look like a result. ``rmdir`` never removes a folder that holds a file."""
    for folder in reversed(created):  # case folders before OUTDIR
        # not empty (a case was written, or a run beside this one writes there) or already gone: kept
        with contextlib.suppress(OSError):
            folder.rmdir()


def check_inputs(cases: list[Case]) -> None:
    """Every input exists, is readable, is given once and looks like a CT (all problems in one message)."""
    from napari_chsnet.io.readers import SUPPORTED, is_supported_path

    missing = [str(c.source) for c in cases if c.source is not None and not c.source.exists()]
    if missing:
        raise InvalidVolumeError(f"input not found: {', '.join(missing)}; check the path(s)")
    # A folder is read by listing it (r) and opening its files (x).
    unreadable = [
        str(c.source)
        for c in cases
        if c.source is not None
        and not os.access(c.source, os.R_OK | os.X_OK if c.source.is_dir() else os.R_OK)
    ]
    if unreadable:
        raise InvalidVolumeError(
            f"cannot read {', '.join(unreadable)} (permission denied); fix the permissions (chmod u+r) or "
            "run as a user who may read it"
        )
    _refuse_repeated_inputs(cases)
    unsupported = [str(c.source) for c in cases if c.source is not None and not is_supported_path(c.source)]
    if unsupported:
        raise InvalidVolumeError(f"not a CT file or folder: {', '.join(unsupported)}; give {SUPPORTED}")


def _refuse_repeated_inputs(cases: list[Case]) -> None:
    """The same scan twice in one batch (two spellings, or a link to it) would be segmented twice."""
    seen: dict[Path, Path] = {}
    for case in cases:
        if case.source is None:
            continue
        resolved = case.source.resolve()
        if resolved not in seen:
            seen[resolved] = case.source
            continue
        first = seen[resolved]
        if str(first) == str(case.source):
            raise InvalidVolumeError(f"input {first} is given twice; give each scan once")
        raise InvalidVolumeError(
            f"inputs {first} and {case.source} are the same scan ({resolved}); give each scan once"
        )


def check_outputs(cases: list[Case], output: Path, overwrite: bool) -> None:
    """Output folder usable, no output file in the way (unless ``overwrite``), CSV appendable."""
    from napari_chsnet.report.exports import CSV_COLUMNS, ReportFormatError

    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output {output} is a file; give a folder with -o")
    for case in cases:
        if case.folder.exists() and not case.folder.is_dir():
            raise OutputExistsError(f"{case.folder} is a file, not a folder; remove it or choose another -o")
    existing = [str(path) for case in cases for path in case.outputs() if path.exists()]
    if existing and not overwrite:
        shown = first_and_more(existing, 4)
        raise OutputExistsError(f"outputs already exist: {shown}; pass --overwrite or choose another -o")
    csv_path = output / CSV_NAME
    if csv_path.exists() and not csv_path.is_file():
        raise OutputExistsError(
            f"{csv_path} is a folder (or not a file), so no CSV row can be written there; move it away or "
            "choose another -o"
        )
    if csv_path.is_file():
        try:
            with open(csv_path, encoding="utf-8") as handle:
                header = handle.readline().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else "not UTF-8 text"
            raise OutputError(
                f"cannot read {csv_path} ({reason}), which every case's row is added to; fix its permissions, "
                "move it away or choose another -o"
            ) from error
        if header and tuple(header.split(",")) != CSV_COLUMNS:
            raise ReportFormatError(
                f"{csv_path} has other columns than this version writes; move it away or choose another -o"
            )


def _read(case: Case, intensity: str, fill_missing_slices: bool):
    if case.source is None:
        from napari_chsnet.io.phantom import sample_ct

        return sample_ct().ct
    from napari_chsnet.io.readers import read_ct
    from napari_chsnet.io.writers import grid_skew_deg

    volume = read_ct(case.source, intensity=intensity, fill_missing_slices=fill_missing_slices)
    skew = grid_skew_deg(volume.geometry)
    if skew is not None:  # refused before the networks run, not when the masks are written
        raise InvalidVolumeError(
            f"{case.source}: its voxel axes are {skew:.2f}° from perpendicular (a skewed grid, e.g. a "
            "gantry-tilted scan stored with its shear), which the NIfTI masks cannot lie on; resample the "
            "scan onto a perpendicular grid first"
        )
    return volume


def write_case(case: Case, volume, result, csv_path: Path, anonymize: bool, overwrite: bool) -> dict:
    """Write the three volumes and the reports of one case; returns the report dictionary.

    The files are written into a hidden staging folder in OUTDIR and moved into the case folder
    only when all five are complete, so an interruption or a failure leaves the previous run's
    set whole (never new masks beside an old PDF). The CSV row is appended last; with ``overwrite``
    it replaces the case's earlier rows, which describe the files just replaced.
    """
    from napari_chsnet.report import append_report_csv
    from napari_chsnet.report.anonymize import anonymous_input_name

    staging = csv_path.parent / f".chsnet-staging-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir()
        report = _write_files(case, staging, volume, result, anonymize)
        _move_into_place(staging, case, overwrite)
        failed_as = [anonymous_input_name(case.name, case.source)] if anonymize and case.source else []
        append_report_csv(csv_path, report, replace_case=overwrite, failed_as=failed_as)
    except OSError as error:
        if isinstance(error, CHSNetError):
            raise
        raise OutputError(
            f"could not write {error.filename or case.folder} ({error.strerror or error}); "
            "check free disk space and permissions"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _move_into_place(staging: Path, case: Case, overwrite: bool) -> None:
    targets = case.outputs()
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:  # appeared since the check at the start (another run)
        raise OutputExistsError(f"outputs appeared while segmenting: {', '.join(existing)}; pass --overwrite")
    case.folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        os.replace(staging / target.name, target)


def _write_files(case: Case, folder: Path, volume, result, anonymize: bool) -> dict:
    from napari_chsnet.io.writers import write_volume
    from napari_chsnet.report import build_report_json, write_report_json, write_report_pdf

    geometry = volume.geometry
    write_volume(folder / "lungs.nii.gz", result.lungs, geometry, is_label=True)
    write_volume(folder / "infection.nii.gz", result.infection, geometry, is_label=True)
    write_volume(folder / "probability.nii.gz", result.probability, geometry)
    run_info = replace(
        result.run_info, case=case.name, input=str(case.source) if case.source else volume.source
    )
    report = build_report_json(
        result.severity, run_info, volume.metadata, anonymize=anonymize, geometry=volume.geometry
    )
    write_report_json(folder / "report.json", report)
    write_report_pdf(
        folder / "report.pdf",
        report,
        volume,
        result.lungs,
        result.infection,
        result.probability,
        infection_is_clean=True,  # the pipeline's mask is the one it counted
    )
    return report


def _summary(case: Case, report: dict) -> str:
    from napari_chsnet.inference.run_info import reduced_precision
    from napari_chsnet.report.severity import NOT_MEASURED, format_figure, format_percent, shown_grade

    def side_words(side: str) -> str:
        lung = report["lungs"][side]
        if shown_grade(lung) == NOT_MEASURED:
            return f"{side} {NOT_MEASURED}: {format_figure(lung['volume_ml'])} mL"
        return f"{side} {lung['grade']} {format_percent(lung['involvement_pct'])} %"

    sides = ", ".join(side_words(side) for side in ("right", "left"))
    precision = reduced_precision(report.get("inference_options") or {})
    device = f"{report['device']}, {precision}" if precision else report["device"]
    return f"{case.name}: overall {shown_grade(report['overall'])} ({sides}) on {device} → {case.folder}"


def run(args: argparse.Namespace) -> int:
    from napari_chsnet.inference.device import resolve_device
    from napari_chsnet.inference.weights import resolve_weights

    if args.sample and args.inputs:
        args.parser.error("give INPUT paths or --sample, not both")
    if not args.sample and not args.inputs:
        args.parser.error("give at least one INPUT (a DICOM folder or a CT file), or --sample")
    cases = plan_cases(list(args.inputs), args.sample, args.output)
    check_inputs(cases)
    check_outputs(cases, args.output, args.overwrite)
    settings = model_settings(
        args, batch_size=args.batch_size, threshold=args.threshold, min_lesion_ml=args.min_lesion_ml
    )
    resolve_device(settings.device)
    resolve_weights(settings.model, settings.weights)
    created = make_output_folders(cases, args.output)
    try:
        failed = _segment_cases(cases, settings, args)
    finally:  # also on Ctrl-C/SIGTERM: no empty folder of a case that was not written stays behind
        remove_empty_folders(created)
    if len(cases) > 1 and failed == len(cases):
        print(f"chsnet: all {failed} cases failed; {CSV_NAME} lists their errors", file=sys.stderr)
        return 2
    if failed:
        print(f"chsnet: {failed} of {len(cases)} cases failed; the others were written", file=sys.stderr)
        return 2
    return 0


def _record_failure(csv_path: Path, case: Case, args: argparse.Namespace, error: str) -> None:
    """A batch's CSV row for a case that failed (status "failed", the error, no figures), so that
    the CSV holds one row per input; a CSV that cannot take it was already refused before the run."""
    from napari_chsnet.inference.run_info import utc_timestamp
    from napari_chsnet.report.anonymize import anonymous_input_name, scrub_identifiers
    from napari_chsnet.report.exports import add_csv_row, failed_csv_row

    name = case.name
    if args.anonymize and case.source is not None:
        # its patient fields are unknown, so its name may be the patient's: a keyed hash instead;
        # the error may name the input's path, PatientIDs, UIDs, dates
        name = anonymous_input_name(case.name, case.source)
        error = scrub_identifiers(error, [str(case.source), case.name])
    source = name if args.anonymize or case.source is None else str(case.source)
    row = failed_csv_row(name, source, utc_timestamp(), args.model, error)
    with contextlib.suppress(CHSNetError, OSError):  # the error itself is on stderr already
        add_csv_row(csv_path, row)  # in place of an earlier failure, never of a written case's row


def _segment_cases(cases: list[Case], settings, args: argparse.Namespace) -> int:
    """Segment and write each case; returns how many failed (a single case's error is raised)."""
    csv_path = args.output / CSV_NAME

    def segment_and_write(case: Case) -> None:
        volume = _read(case, args.intensity, args.fill_missing_slices)
        result = segment_with_bar(volume, settings, case.name)
        report = write_case(case, volume, result, csv_path, args.anonymize, args.overwrite)
        print(_summary(case, report))
        for warning in report["warnings"]:  # the report keeps them too; stderr so stdout stays one line
            print(f"chsnet: warning: {case.name}: {warning}", file=sys.stderr)

    def record(case: Case, error: CHSNetError) -> None:
        print(f"chsnet: error: {case.name}: {error}", file=sys.stderr)
        _record_failure(csv_path, case, args, str(error))

    return each_case("segment", cases, segment_and_write, record)
