"""Known answers for the rows of ``report.csv`` (``report/exports.py`` ``add_csv_row``, docs/report.md
"report.csv"): one row per input, a failed row gives way only to its own case, and an append never
glues two rows together."""

from __future__ import annotations

import csv

from napari_chsnet.report.exports import CSV_COLUMNS, STATUS_OK, add_csv_row, csv_rows_of_case, failed_csv_row


def ok_row(case: str, timestamp: str = "1") -> dict[str, str]:
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update(
        case=case, input=case, timestamp=timestamp, model="chsnet", status=STATUS_OK, overall_grade="CT-1"
    )
    return row


def read_rows(path):
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_a_row_appended_to_a_csv_without_a_final_newline_starts_its_own_line(tmp_path):
    # A CSV saved by a spreadsheet or an editor often lacks the last line's newline; the next row
    # must still be a row of its own (glued on, it would make one row of 2 x 31 cells).
    target = tmp_path / "report.csv"
    add_csv_row(target, ok_row("a"))
    target.write_text(target.read_text(encoding="utf-8").rstrip("\n"), encoding="utf-8")
    add_csv_row(target, ok_row("b"))
    header, *rows = read_rows(target)
    assert tuple(header) == CSV_COLUMNS
    assert [len(r) for r in rows] == [len(CSV_COLUMNS)] * 2
    assert [r[0] for r in rows] == ["a", "b"]


def test_other_names_of_a_case_replace_only_its_failed_rows(tmp_path):
    # failed_as: the names an anonymised batch gave the case's failed rows; only a row with status
    # "failed" gives way. A written ("ok") row that happens to carry such a name is another case's
    # result and stays, so the CSV keeps one row per input.
    target = tmp_path / "report.csv"
    add_csv_row(target, ok_row("case-0123456789ab"))
    add_csv_row(target, failed_csv_row("case-ba9876543210", "case-ba9876543210", "2", "chsnet", "unreadable"))
    add_csv_row(target, ok_row("scan_7", "3"), failed_as=["case-0123456789ab", "case-ba9876543210"])
    _, *rows = read_rows(target)
    status = CSV_COLUMNS.index("status")
    assert [(r[0], r[status]) for r in rows] == [("case-0123456789ab", "ok"), ("scan_7", "ok")]


def test_csv_rows_of_case_counts_the_case_s_rows_of_a_report_csv_only(tmp_path):
    """What the Report tab asks before exporting a case the sheet already holds: its rows' count; 0 for
    a missing file, another table or a file that is not UTF-8 (writing to those is refused later)."""
    sheet = tmp_path / "report.csv"
    assert csv_rows_of_case(sheet, "P001") == 0
    for case in ("P001", "P002", "P001"):
        add_csv_row(sheet, ok_row(case))
    assert [csv_rows_of_case(sheet, case) for case in ("P001", "P002", "P003")] == [2, 1, 0]
    other = tmp_path / "other.csv"
    other.write_text("case,score\nP001,1\n")
    assert csv_rows_of_case(other, "P001") == 0
    latin = tmp_path / "latin.csv"
    latin.write_bytes(",".join(CSV_COLUMNS).encode() + b"\nP\xe9rez\n")
    assert csv_rows_of_case(latin, "P001") == 0
