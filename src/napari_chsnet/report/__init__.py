"""Per-lung COVID-19 severity report: numbers (``severity``), run manifest (``manifest``),
pictures (``rendering``) and files (``exports``).

Importing this package loads numpy/scipy only; matplotlib is imported when a PDF is written.
"""

from napari_chsnet.inference.cleaning import (
    DEFAULT_MIN_LESION_ML,
    CleanedInfection,
    UncountedInfection,
    clean_infection,
)
from napari_chsnet.inference.run_info import RunInfo, software_versions
from napari_chsnet.io.checksums import file_sha256
from napari_chsnet.report.exports import (
    CSV_COLUMNS,
    ReportFormatError,
    append_report_csv,
    csv_rows_of_case,
    write_report_json,
    write_report_pdf,
)
from napari_chsnet.report.manifest import (
    DISCLAIMER,
    build_report_json,
)
from napari_chsnet.report.severity import (
    GRADES,
    LungSeverity,
    SeverityReport,
    compute_severity,
    grade_for_involvement,
    severity_from_cleaned,
)

__all__ = [
    "CSV_COLUMNS",
    "CleanedInfection",
    "DEFAULT_MIN_LESION_ML",
    "DISCLAIMER",
    "GRADES",
    "LungSeverity",
    "ReportFormatError",
    "RunInfo",
    "SeverityReport",
    "UncountedInfection",
    "append_report_csv",
    "build_report_json",
    "clean_infection",
    "compute_severity",
    "csv_rows_of_case",
    "file_sha256",
    "grade_for_involvement",
    "severity_from_cleaned",
    "software_versions",
    "write_report_json",
    "write_report_pdf",
]
