"""Per-lung COVID-19 severity report: numbers (``severity``), run manifest (``manifest``),
pictures (``rendering``) and files (``exports``).

Importing this package loads numpy/scipy only; matplotlib is imported when a PDF is written.
"""

from napari_chsnet.report.exports import (
    CSV_COLUMNS,
    ReportFormatError,
    append_report_csv,
    write_report_json,
    write_report_pdf,
)
from napari_chsnet.report.manifest import (
    DISCLAIMER,
    RunInfo,
    build_report_json,
    file_sha256,
    software_versions,
)
from napari_chsnet.report.severity import (
    DEFAULT_MIN_LESION_ML,
    GRADES,
    LungSeverity,
    SeverityReport,
    compute_severity,
    grade_for_involvement,
)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MIN_LESION_ML",
    "DISCLAIMER",
    "GRADES",
    "LungSeverity",
    "ReportFormatError",
    "RunInfo",
    "SeverityReport",
    "append_report_csv",
    "build_report_json",
    "compute_severity",
    "file_sha256",
    "grade_for_involvement",
    "software_versions",
    "write_report_json",
    "write_report_pdf",
]
