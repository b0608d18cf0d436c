"""Size limits and the CSV reader's answers to hostile text (issue 15, items 4 and 6), on the readers
directly: each limit refuses naming itself and its setting; a cell over the limit only rejects its row."""

from __future__ import annotations

import tomllib
from pathlib import Path

import duckdb
import pytest
import xlsxwriter

from fxbatch.errors import UnusableFileError
from fxbatch.ingest.limits import MB, Limits
from fxbatch.ingest.readers import csv_exact, csv_read_error, read_into
from fxbatch.settings import PROJECT_DIR, Settings, load_settings
from tests.data.make_bad_files import (
    HEADER,
    HOSTILE,
    claims_to_unzip_to,
    csv_with_long_cell,
    rows_text,
    zip_bomb,
)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def refused(con: duckdb.DuckDBPyConnection, path: Path, limits: Limits | None = None) -> UnusableFileError:
    with pytest.raises(UnusableFileError) as caught:
        read_into(con, path, limits=limits)
    return caught.value


def write_csv(path: Path, rows: int) -> Path:
    path.write_text(HEADER + "\n" + "\n".join(rows_text(rows)) + "\n", encoding="utf-8")
    return path


def test_the_apps_upload_limit_is_the_file_size_limit_and_the_apis() -> None:
    config = tomllib.loads((PROJECT_DIR / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    defaults = Settings()
    assert config["server"]["maxUploadSize"] == defaults.max_file_mb == defaults.api_max_upload_mb
    assert Limits().max_file_mb == defaults.max_file_mb


def test_the_limits_come_from_the_settings_and_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Limits.from_settings(Settings()) == Limits()
    monkeypatch.setenv("FXBATCH_MAX_ROWS", "10")
    monkeypatch.setenv("FXBATCH_MAX_ZIP_RATIO", "7")
    limits = Limits.from_settings(load_settings())
    assert (limits.max_rows, limits.max_zip_ratio) == (10, 7)


def test_every_limit_setting_is_described() -> None:
    for name in ("max_file_mb", "max_rows", "max_cells", "max_cell_chars", "max_unzipped_mb", "max_zip_ratio"):
        assert Settings.model_fields[name].description


def test_a_file_over_the_size_limit_is_refused_naming_the_setting(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    with path.open("wb") as fh:
        fh.truncate(2 * MB + 1)  # sparse: no content is read
    error = refused(con, path, Limits(max_file_mb=2))
    assert error.code == "FILE_TOO_LARGE"
    assert "big.csv is 2.0 MB" in error.message and "FXBATCH_MAX_FILE_MB" in error.message


def test_a_csv_over_the_row_limit_is_refused_before_it_is_read(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    error = refused(con, write_csv(tmp_path / "long.csv", 20), Limits(max_rows=10))
    assert error.code == "TOO_MANY_ROWS"
    assert "long.csv has 21 rows" in error.message and "FXBATCH_MAX_ROWS" in error.message


def test_a_csv_over_the_cell_limit_is_refused(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    error = refused(con, write_csv(tmp_path / "wide.csv", 20), Limits(max_cells=100))
    assert error.code == "TOO_MANY_CELLS" and "21 rows x 11 columns" in error.message
    assert "FXBATCH_MAX_CELLS" in error.message


def test_a_zip_bomb_is_refused_from_its_zip_directory(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    error = refused(con, zip_bomb(tmp_path / "bomb.xlsx", unzipped_mb=8))
    assert error.code == "ZIP_BOMB"
    assert "xl/worksheets/sheet1.xml" in error.message and "FXBATCH_MAX_ZIP_RATIO" in error.message


def test_a_workbook_that_unzips_too_large_is_refused_without_unzipping_it(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = claims_to_unzip_to(tmp_path / "huge.xlsx", 3 * MB)
    error = refused(con, path, Limits(max_unzipped_mb=2))
    assert error.code == "FILE_TOO_LARGE"
    assert "huge.xlsx unzips to 3 MB" in error.message and "FXBATCH_MAX_UNZIPPED_MB" in error.message


def test_a_stray_cell_far_from_the_trades_is_refused_before_the_sheet_is_parsed(
    con: duckdb.DuckDBPyConnection,
) -> None:
    error = refused(con, HOSTILE / "far_cell.xlsx")
    assert error.code == "TOO_MANY_CELLS"
    assert "1,048,576 rows x 16,384 columns" in error.message


def test_a_sheet_over_the_row_limit_is_refused_before_it_is_parsed(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "rows.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        ws = book.add_worksheet("Trades")
        for r, line in enumerate([HEADER, *rows_text(30)]):
            for c, value in enumerate(line.split(",")):
                ws.write_string(r, c, value)
    error = refused(con, path, Limits(max_rows=20))
    assert error.code == "TOO_MANY_ROWS" and "31 rows" in error.message


def test_the_sheet_scan_finds_the_widest_column(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "wide.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        ws = book.add_worksheet("Trades")
        for c, value in enumerate(HEADER.split(",")):
            ws.write_string(0, c, value)
        ws.write_string(3, 40, "note")  # AO4
    error = refused(con, path, Limits(max_cells=4 * 41 - 1))
    assert "4 rows x 41 columns" in error.message
    read_into(con, path, limits=Limits(max_cells=4 * 41))


def test_a_cell_over_the_limit_near_the_top_is_noted_not_a_missing_header(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    raw = read_into(con, csv_with_long_cell(tmp_path / "top.csv", 2, "reference", 140_000))
    assert [(c.row, raw.headers[c.column], c.chars) for c in raw.long_cells] == [(2, "reference", 140_000)]
    assert con.execute("SELECT count(*), count(c10) FROM raw").fetchall() == [(60, 59)]


def test_a_cell_over_the_limit_in_a_workbook_is_noted_and_emptied(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "long.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        ws = book.add_worksheet("Trades")
        for r, line in enumerate([HEADER, *rows_text(5)]):
            for c, value in enumerate(line.split(",")):
                ws.write_string(r, c, value)
        ws.write_string(3, 10, "y" * 40)
    raw = read_into(con, path, limits=Limits(max_cell_chars=30))
    assert [(c.row, c.column, c.chars) for c in raw.long_cells] == [(4, 10, 40)]
    assert con.execute("SELECT c10 FROM raw WHERE src_row = 4").fetchall() == [(None,)]


def test_a_file_mixing_encodings_is_refused_naming_the_first_line_that_is_not_utf8(
    con: duckdb.DuckDBPyConnection,
) -> None:
    error = refused(con, HOSTILE / "mixed_encodings.csv")
    assert error.code == "MIXED_ENCODING"
    assert "line 4 is not UTF-8" in error.message and "line 7 is UTF-8" in error.message


def test_a_windows_1252_file_is_still_read_as_windows_1252(con: duckdb.DuckDBPyConnection) -> None:
    raw = read_into(con, HOSTILE / "windows_1252.csv")
    assert raw.source_encoding == "cp1252"
    assert con.execute("SELECT DISTINCT c10 FROM raw").fetchall() == [("José €",)]


def test_a_nul_byte_past_the_first_8kb_is_refused_naming_its_line(con: duckdb.DuckDBPyConnection) -> None:
    error = refused(con, HOSTILE / "nul_on_line_300.csv")
    assert error.code == "NUL_BYTE" and "on line 300" in error.message


def test_a_nul_byte_in_utf16_text_is_refused_naming_its_line(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    path = tmp_path / "unicode.csv"
    text = HEADER + "\n" + "\n".join(rows_text(3)) + "\n"
    path.write_text(text.replace("T3,", "T\x003,"), encoding="utf-16")
    error = refused(con, path)
    assert error.code == "NUL_BYTE" and "on line 3" in error.message


def test_a_quote_that_never_closes_is_refused_naming_line_and_column(con: duckdb.DuckDBPyConnection) -> None:
    raw = read_into(con, HOSTILE / "unclosed_quote.csv")  # the fast path finds too few records, then reads exactly
    with pytest.raises(UnusableFileError) as caught:
        csv_exact(con, raw)
    error = caught.value
    assert error.code == "CSV_PARSE_ERROR"
    assert "line 42, column reference" in error.message and "never closed" in error.message


def test_a_quote_that_never_closes_beyond_the_headers_names_the_column_as_a_spreadsheet_does(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "open_quote.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows_text(40)) + "\n" + rows_text(1, 42)[0] + ',"an open note\n'
                    + "\n".join(rows_text(5, 43)) + "\n", encoding="utf-8")  # fmt: skip
    raw = read_into(con, path)
    with pytest.raises(UnusableFileError) as caught:
        csv_exact(con, raw)
    assert "line 42, column L: a quoted value opens there" in caught.value.message


def test_a_duckdb_csv_error_is_told_as_its_line_and_reason() -> None:
    exc = duckdb.InvalidInputException(
        "Invalid Input Error: CSV Error on Line: 42\nOriginal Line: a,b\n"
        "Maximum line size of 2000000 bytes exceeded. Actual Size:3000059 bytes.\n\n"
        "Possible Solution: Change the maximum length size\n\n  file = x.csv"
    )
    error = csv_read_error("x.csv", ",", exc)
    assert error.code == "CSV_PARSE_ERROR"
    assert error.message == (
        "x.csv could not be read as ','-separated text: line 42: "
        "Maximum line size of 2000000 bytes exceeded. Actual Size:3000059 bytes."
    )


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_work_given_to_read_alongside_runs_on_another_thread_and_ends_with_the_read(
    con: duckdb.DuckDBPyConnection, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from fxbatch.ingest import readers

    rows = [["trade_id", "client_cif", "account_number", "currency_pair", "side", "amount"],
            ["T1", "CIF1", "1234567890", "USDZAR", "BUY", "1000"]]  # fmt: skip
    path = tmp_path / f"trades.{kind}"
    if kind == "csv":
        path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    else:
        with xlsxwriter.Workbook(str(path)) as book:
            sheet = book.add_worksheet()
            for i, row in enumerate(rows):
                sheet.write_row(i, 0, row)
    seen: list[str] = []
    release = threading.Event()

    def work() -> None:
        release.wait(60)  # still running when the read itself is done: read_into waits for it
        seen.append(threading.current_thread().name)

    reader = "_read_csv" if kind == "csv" else "_read_workbook"
    real = getattr(readers, reader)

    def read_then_release(*args: object) -> object:
        raw = real(*args)
        release.set()
        return raw

    monkeypatch.setattr(readers, reader, read_then_release)
    raw = read_into(con, path, meanwhile=work)
    assert seen == ["fxbatch-alongside"]  # finished by the time read_into returned, on its own thread
    assert raw.headers[:2] == ["trade_id", "client_cif"]


def test_a_csv_with_a_line_of_thousands_of_delimiters_is_refused_not_checked_for_minutes(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    path = tmp_path / "commas.csv"
    path.write_text("client_cif,account_number,currency_pair,side,amount\n1,2,USD/ZAR,BUY,100" + "," * 10_000 + "\n")
    error = refused(con, path)
    assert error.code == "TOO_MANY_CELLS" and "commas.csv is 10,005 columns wide" in error.message
    assert "at most 1,024 columns" in error.message
