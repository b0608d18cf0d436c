"""A corpus of files that can never become a batch (tests/data/bad_files, made by
tests/data/make_bad_files.py): each is refused with a specific code and a message saying
what was expected and what was found, and no batch is created.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from fxbatch import UnusableFileError, Workbench
from tests.conftest import DATA, HEADER, TODAY, good_row

BAD_FILES = Path(__file__).resolve().parent.parent / "data" / "bad_files"
EXPECTS_COLUMNS = "expected column names such as client_cif"

# file -> (code, fragments the message must contain: what was expected, what was found)
CORPUS: dict[str, tuple[str, list[str]]] = {
    "empty.csv": ("EMPTY_FILE", ["empty.csv is empty", "expected a header row and trade rows"]),
    "blank_lines_only.csv": ("EMPTY_FILE", ["is empty", "expected a header row"]),
    "bom_only.csv": ("EMPTY_FILE", ["is empty", "expected a header row"]),
    "header_only.csv": ("NO_DATA_ROWS", ["has a header row (row 1)", "no trade rows below it"]),
    "header_and_blank_rows.csv": ("NO_DATA_ROWS", ["has a header row (row 1)", "no trade rows below it"]),
    "binary.csv": ("NOT_A_SPREADSHEET", ["expected CSV text, XLSX or Parquet", "found binary data"]),
    "report.pdf.csv": ("NOT_A_SPREADSHEET", ["expected CSV text, XLSX or Parquet", "found a PDF document"]),
    "not_really.xlsx": (
        "NOT_A_SPREADSHEET",
        ["named .xlsx but is not a valid XLSX file", "found plain text starting 'trade_id,client_cif"],
    ),
    "not_really.parquet": ("NOT_A_SPREADSHEET", ["named .parquet but is not a valid PARQUET file", "plain text"]),
    "web_export.xls": ("NOT_A_SPREADSHEET", ["named .xls but is not a valid XLS file", "found an HTML page"]),
    "truncated.xlsx": ("UNREADABLE_FILE", ["could not be opened as a workbook", "expected XLSX, XLS or ODS"]),
    "zip_of_a_csv.xlsx": ("UNREADABLE_FILE", ["could not be opened as a workbook", "expected XLSX, XLS or ODS"]),
    "no_header.csv": (
        "NO_HEADER",
        ["No header row found in the first 30 rows", EXPECTS_COLUMNS, "the first non-blank row is ['T1', '0123456789'"],
    ),
    "title_only.csv": ("NO_HEADER", [EXPECTS_COLUMNS, "the first non-blank row is ['Morning batch 30 Nov']"]),
    "json_named_csv.csv": ("NO_HEADER", [EXPECTS_COLUMNS, '[{"client_cif"']),
    "semicolons_everywhere.csv": ("NO_HEADER", [EXPECTS_COLUMNS, "the first non-blank row is ['a;b;c']"]),
    "no_header.xlsx": ("NO_HEADER", ["sheet 'Trades' of no_header.xlsx", EXPECTS_COLUMNS, "['Morning batch']"]),
    "header_only.xlsx": ("NO_DATA_ROWS", ["has a header row (row 1)", "no trade rows"]),
    "empty_sheet.xlsx": ("EMPTY_FILE", ["Sheet 'Trades' of empty_sheet.xlsx is empty", "expected a header row"]),
    "no_trade_columns.parquet": (
        "NO_HEADER",
        ["has no trade columns", EXPECTS_COLUMNS, "its columns are ['date', 'open', 'close']"],
    ),
    "no_rows.parquet": ("NO_DATA_ROWS", ["no trade rows"]),
    "missing_amount_column.csv": (
        "MISSING_COLUMN",
        ["missing: amount.", "Expected the template columns", "found 'trade_id', 'client_cif'"],
    ),
    "legacy_without_curpair.csv": (
        "MISSING_COLUMN",
        ["missing: currency_pair, side.", "legacy desk columns", "found 'Client CIF', 'Amount ZAR'"],
    ),
    "ambiguous_columns.csv": ("AMBIGUOUS_COLUMNS", ["'amount' and 'Notional' both mean amount"]),
    "all_rows_invalid.csv": (
        "NO_VALID_ROWS",
        ["None of the 3 trade rows", "no batch was created", "row 2 side", "row 4 amount", "row 5 client_cif"],
    ),
    "only_totals_row.csv": ("NO_VALID_ROWS", ["None of the 1 trade rows", "totals row"]),
}


def test_every_file_in_the_corpus_has_an_expectation() -> None:
    assert sorted(p.name for p in BAD_FILES.iterdir()) == sorted(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_a_bad_file_is_refused_with_a_clear_error_and_no_batch(wb: Workbench, name: str) -> None:
    code, fragments = CORPUS[name]
    with pytest.raises(UnusableFileError) as err:
        wb.load(BAD_FILES / name, today=TODAY)
    assert err.value.code == code, err.value.message
    for fragment in fragments:
        assert fragment in err.value.message
    assert err.value.to_dict() == {"code": code, "message": err.value.message}
    assert wb.batches() == []


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_a_refused_file_leaves_no_temporary_tables_and_the_next_load_works(wb: Workbench, name: str) -> None:
    with pytest.raises(UnusableFileError):
        wb.load(BAD_FILES / name, today=TODAY)
    cur = wb.store.cursor()
    assert cur.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall() == []
    assert cur.execute("SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal").fetchall() == []
    result = wb.load(DATA / "sample_trades.csv", today=TODAY)
    assert (result.accepted, result.rejected) == (200, 0)
    assert [b.batch_id for b in wb.batches()] == [result.batch_id]


def test_a_file_that_does_not_exist_is_refused_naming_it(wb: Workbench, tmp_path: Path) -> None:
    with pytest.raises(UnusableFileError) as err:
        wb.load(tmp_path / "missing.csv", today=TODAY)
    assert err.value.code == "UNREADABLE_FILE"
    assert "Cannot open missing.csv" in err.value.message
    assert wb.batches() == []


def test_a_directory_is_refused(wb: Workbench, tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(UnusableFileError) as err:
        wb.load(tmp_path / "folder.csv", today=TODAY)
    assert err.value.code == "UNREADABLE_FILE"


def test_a_column_map_naming_an_unknown_field_is_refused(wb: Workbench, write_file: Callable[..., Path]) -> None:
    with pytest.raises(UnusableFileError) as err:
        wb.load(write_file(HEADER + "\n" + good_row(1) + "\n"), column_map={"amount": "amt"}, today=TODAY)
    assert err.value.code == "BAD_MAPPING"
    assert wb.batches() == []


def test_a_corrupt_line_in_an_otherwise_good_file_is_one_rejected_row(
    wb: Workbench, write_file: Callable[..., Path]
) -> None:
    lines = [HEADER.encode()] + [good_row(i).encode() for i in range(1, 301)]
    lines += [b"\xff\xfejunk," * 30, good_row(301).encode()]  # a NUL is refused file-wide (test_hostile_files)
    result = wb.load(write_file(b"\n".join(lines) + b"\n"), today=TODAY)
    assert (result.rows, result.accepted, result.rejected, result.ignored) == (302, 301, 1, 0)
    assert {r.row for r in result.rejections} == {302}
    assert "EXTRA_VALUES" in {r.code for r in result.rejections}
    assert wb.trades(result.batch_id)["row"].iloc[-1] == 303


def test_a_workbook_whose_sheet_is_cut_short_is_refused_as_unreadable(wb: Workbench, tmp_path: Path) -> None:
    import zipfile

    from fxbatch.samples import make_trades, write_xlsx

    good = write_xlsx(make_trades(50, seed=3), tmp_path / "good.xlsx")
    cut = tmp_path / "cut.xlsx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(cut, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.startswith("xl/worksheets/"):
                data = data[: len(data) // 2]  # the sheet's XML stops in the middle of a row
            dst.writestr(item, data)
    with pytest.raises(UnusableFileError) as err:
        wb.load(cut, today=TODAY)
    assert err.value.code == "UNREADABLE_FILE" and "cut.xlsx could not be opened as a workbook" in err.value.message
