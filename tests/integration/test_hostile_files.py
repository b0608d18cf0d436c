"""Hostile files through ``python -m fxbatch load`` (issue 15, items 4 and 6): a file over a size limit,
a zip bomb, damaged text, each refused with exit 2 and a message naming the line or the limit and its
setting, the database holding exactly what it held before; a cell over the limit rejects only its row.

Small hostile files are in tests/data/hostile_files (made by tests/data/make_bad_files.py); big ones
are built here, in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from fxbatch import Settings, UnusableFileError, Workbench
from fxbatch.cli import main
from fxbatch.ingest.limits import MAX_CELL_CHARS, MAX_FILE_MB, MAX_ROWS, MB
from tests.conftest import DATA, good_row
from tests.conftest import HEADER as CANONICAL
from tests.data.make_bad_files import HEADER, HOSTILE, claims_to_unzip_to, csv_with_long_cell, zip_bomb
from tests.integration.test_hostile_cli import contents  # what the database holds, before and after


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile_files") / "template.duckdb"
    with Workbench.open(settings=Settings(db=path)) as wb:
        wb.load(DATA / "sample_trades.csv")
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("FXBATCH_") and n != "FXBATCH_TODAY"]:
        monkeypatch.delenv(name)
    copy = tmp_path / "hostile.duckdb"
    shutil.copyfile(template, copy)
    return copy


def load(db: Path, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """``load PATH --json``: the exit code and the JSON document, after checking there is no traceback."""
    code = main(["--db", str(db), "load", str(path), "--json"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, json.loads(out)


def assert_refused(db: Path, path: Path, capsys: pytest.CaptureFixture[str], code: str, *words: str) -> None:
    before = contents(db)
    exit_code, out = load(db, path, capsys)
    assert exit_code == 2
    assert out["error"]["code"] == code
    for word in words:
        assert word in out["error"]["message"]
    assert contents(db) == before


def test_a_cell_over_the_limit_near_the_top_rejects_its_row_and_the_rest_loads(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_with_long_cell(tmp_path / "top.csv", 2, "reference", 140_000)
    code, out = load(db, path, capsys)
    assert code == 0
    assert (out["rows"], out["accepted"], out["rejected"]) == (60, 59, 1)
    [rejection] = out["rejections"]
    assert (rejection["row"], rejection["column"], rejection["code"]) == (2, "reference", "CELL_TOO_LONG")
    assert "140,000 characters" in rejection["message"] and "FXBATCH_MAX_CELL_CHARS" in rejection["message"]


def test_a_long_cell_on_line_42_rejects_that_row_with_its_column_not_the_whole_file(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = csv_with_long_cell(tmp_path / "line42.csv", 42, "amount", 3_000_000)  # past DuckDB's 2 MB line
    code, out = load(db, path, capsys)
    assert code == 0
    assert (out["accepted"], out["rejected"]) == (59, 1)
    assert [(r["row"], r["column"], r["code"]) for r in out["rejections"]] == [(42, "amount", "CELL_TOO_LONG")]


def test_a_cell_at_the_limit_is_read(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = csv_with_long_cell(tmp_path / "at_limit.csv", 5, "trade_id", MAX_CELL_CHARS)
    code, out = load(db, path, capsys)
    assert code == 0 and out["rejected"] == 0


def test_a_quote_that_never_closes_is_refused_naming_the_line_and_column(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(
        db, HOSTILE / "unclosed_quote.csv", capsys, "CSV_PARSE_ERROR", "line 42, column reference", "never closed"
    )


def test_a_file_mixing_encodings_is_refused_naming_the_first_line_not_in_utf8(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(db, HOSTILE / "mixed_encodings.csv", capsys, "MIXED_ENCODING", "line 4 is not UTF-8", "line 7")


def test_a_windows_1252_file_keeps_its_accents(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = load(db, HOSTILE / "windows_1252.csv", capsys)
    assert code == 0 and out["accepted"] == 3
    with duckdb.connect(str(db), read_only=True) as con:
        found = con.execute("SELECT DISTINCT reference FROM trades WHERE batch_id = ?", [out["batch_id"]]).fetchall()
    assert found == [("José €",)]


def test_a_nul_byte_far_down_the_file_is_refused_naming_its_line(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(db, HOSTILE / "nul_on_line_300.csv", capsys, "NUL_BYTE", "on line 300")


def test_a_zip_bomb_is_refused_before_any_sheet_is_parsed(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = zip_bomb(tmp_path / "bomb.xlsx", unzipped_mb=40)
    assert path.stat().st_size < MB
    assert_refused(db, path, capsys, "ZIP_BOMB", "looks like a zip bomb", "FXBATCH_MAX_ZIP_RATIO")


def test_a_workbook_claiming_to_unzip_past_the_limit_is_refused(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = claims_to_unzip_to(tmp_path / "huge.xlsx", 2**32 - 1)
    assert_refused(db, path, capsys, "FILE_TOO_LARGE", "unzips to 4,096 MB", "FXBATCH_MAX_UNZIPPED_MB")


def test_a_stray_cell_at_xfd1048576_is_refused_not_a_crash(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(db, HOSTILE / "far_cell.xlsx", capsys, "TOO_MANY_CELLS", "16,384 columns", "FXBATCH_MAX_CELLS")


def test_a_file_over_the_size_limit_is_refused_naming_the_setting(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.csv"
    with path.open("wb") as fh:
        fh.write((HEADER + "\n").encode())
        fh.truncate(MAX_FILE_MB * MB + 1)  # sparse: nothing is written to disk
    assert_refused(db, path, capsys, "FILE_TOO_LARGE", f"at most {MAX_FILE_MB} MB", "FXBATCH_MAX_FILE_MB")


def test_a_csv_over_the_row_limit_is_refused_naming_the_setting(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(HEADER + "\n" + "x\n" * MAX_ROWS, encoding="utf-8")
    assert_refused(db, path, capsys, "TOO_MANY_ROWS", f"{MAX_ROWS + 1:,} rows", "FXBATCH_MAX_ROWS")


@pytest.mark.parametrize(
    ("encoding", "end", "rows"),
    [("utf-8", "", 1), ("utf-8", "\n", 1), ("utf-8", "\r\n", 30), ("cp1252", "", 2), ("utf-8", "\r", 1),
     ("utf-16", "\n", 1)],
)  # fmt: skip
def test_a_quote_the_file_ends_in_is_refused_never_loaded_cut_short(
    wb: Workbench, tmp_path: Path, encoding: str, end: str, rows: int
) -> None:
    """A transfer cut short mid-value: ``"1250`` loaded as 125 (or, with a line end, as 1250), unflagged."""
    lines = [CANONICAL] + [
        good_row(n, reference="Caf\u00e9 \u20ac" if encoding == "cp1252" else "x") for n in range(1, rows)
    ]
    lines.append(good_row(rows).rsplit(",", 6)[0] + ',"1250')  # the amount opens a quote, then the file ends
    path = tmp_path / "cut.csv"
    path.write_bytes((("\r" if end == "\r" else "\n").join(lines) + end).encode(encoding))
    with pytest.raises(UnusableFileError, match=rf"line {rows + 1}, column amount: a quoted value opens there and "
                                                r"is never closed, before the file ends \(was it cut short\?\)"):  # fmt: skip
        wb.check(path)


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])
def test_a_last_record_whose_quoted_cell_spans_lines_loads(wb: Workbench, tmp_path: Path, encoding: str) -> None:
    """Alt+Enter in Excel's last cell: a quote closed on the next line is no quote the file ends in."""
    first = good_row(1, reference="Caf\u00e9") if encoding == "cp1252" else good_row(1)  # cp1252: decoded
    lines = [CANONICAL, first, good_row(2).rsplit(",", 1)[0] + ',"line one\nline two\n"']  # ends in a break
    path = tmp_path / "multiline.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    assert wb.check(path).accepted == 2
    loaded = wb.load(path)
    assert wb.trades(loaded.batch_id)["reference"].tolist()[-1].startswith("line one\nline two")
