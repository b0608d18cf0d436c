"""Validate without storing, correct rejected rows, map unrecognised headers: ``wb.check``,
``wb.load(fixes=..., column_map=...)`` and the CLI's ``load --fixes/--map``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fxbatch import FxBatchError, Workbench
from fxbatch.errors import BadFixError, UnusableFileError
from tests.conftest import HEADER, TODAY, good_row
from tests.integration.test_cli import fxbatch

WriteFile = Callable[..., Path]

BAD_FILE = (
    "\n".join(
        [
            HEADER,
            good_row(1),  # row 2
            good_row(2, side="HOLD"),  # row 3
            good_row(3, amount="-5", currency_pair="XXX/ZAR"),  # row 4: two problems
            "",  # row 5 blank
            good_row(1, reference="same id as row 2"),  # row 6: duplicate trade_id
            good_row(4, amount="12.345"),  # row 7
        ]
    )
    + "\n"
)


def test_check_reports_without_creating_a_batch(wb: Workbench, write_file: WriteFile) -> None:
    report = wb.check(write_file(BAD_FILE), today=TODAY)
    assert (report.rows, report.accepted, report.rejected, report.ignored) == (6, 1, 4, 1)
    assert [r.row for r in report.rejected_rows] == [3, 4, 6, 7]
    assert wb.batches() == []
    row4 = report.rejected_rows[1]
    assert row4.values["amount"] == "-5" and row4.values["currency_pair"] == "XXX/ZAR"
    assert len(row4.problems) == 2 and {p.split()[0] for p in row4.problems} == {"amount", "currency_pair"}
    dup = report.rejected_rows[2]
    assert dup.values["trade_id"] == "T00001" and dup.values["reference"] == "same id as row 2"
    assert report.headers == HEADER.split(",")
    assert report.column_map["client_cif"] == "client_cif"


def test_fixes_revalidate_and_load_the_corrected_rows(wb: Workbench, write_file: WriteFile) -> None:
    path = write_file(BAD_FILE)
    fixes = {3: {"side": "sell"}, 4: {"amount": "5"}, 6: {"trade_id": "T00009"}, 7: {"amount": "12.34"}}
    report = wb.check(path, fixes=fixes, today=TODAY)
    # row 4 still names an unknown currency; the others now pass
    assert report.fixed == [3, 4, 6, 7] and report.fixed_still_rejected == [4]
    assert [r.row for r in report.rejected_rows] == [4]
    assert report.rejected_rows[0].values["amount"] == "5"  # the correction, shown for the next edit
    assert (report.accepted, report.rejected) == (4, 1)

    result = wb.load(path, fixes=fixes, today=TODAY)
    assert result.fixed == [3, 6, 7] and (result.accepted, result.rejected, result.ignored) == (4, 1, 1)
    trades = wb.trades(result.batch_id)
    assert trades["row"].tolist() == [2, 3, 6, 7]  # file row numbers kept, in order
    assert trades.set_index("row").loc[3, "side"] == "SELL"
    assert trades.set_index("row").loc[6, "trade_id"] == "T00009"
    assert str(trades.set_index("row").loc[7, "amount"]) in {"12.34", "12.340"}
    rejections = wb.rejections(result.batch_id)
    assert rejections["row"].tolist() == [4] and rejections["code"].tolist() == ["UNKNOWN_CURRENCY"]
    # What the file said is kept with the batch, beside what replaced it.
    corrections = wb.corrections(result.batch_id)
    assert corrections.values.tolist() == [
        [3, "side", "HOLD", "sell"],
        [4, "amount", "-5", "5"],
        [6, "trade_id", "T00001", "T00009"],
        [7, "amount", "12.345", "12.34"],
    ]
    assert wb.corrections(result.batch_id, limit=2, offset=1).values.tolist() == corrections.values.tolist()[1:3]
    wb.delete_batch(result.batch_id)
    assert query_count(wb, "corrections") == 0


def query_count(wb: Workbench, table: str) -> int:
    return int(wb.store.cursor().execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def test_a_correction_can_create_a_duplicate(wb: Workbench, write_file: WriteFile) -> None:
    report = wb.check(write_file(BAD_FILE), fixes={3: {"side": "BUY", "trade_id": "T00001"}}, today=TODAY)
    problems = {r.row: r.problems for r in report.rejected_rows}
    assert any("already used on row 2" in p for p in problems[3])


@pytest.mark.parametrize(
    ("fixes", "needle"),
    [
        ({99: {"side": "BUY"}}, "Row 99 of trades.csv holds no trade"),
        ({5: {"side": "BUY"}}, "Row 5 of trades.csv holds no trade"),
        ({1: {"side": "BUY"}}, "Row 1 of trades.csv holds no trade"),
        ({3: {"colour": "red"}}, "'colour' is not a trade field"),
        ({"x": {"side": "BUY"}}, "Row 'x': a correction names a row by its number"),
    ],
)
def test_bad_fixes_name_the_row_and_field(
    wb: Workbench, write_file: WriteFile, fixes: dict[int, dict[str, str]], needle: str
) -> None:
    path = write_file(BAD_FILE)
    with pytest.raises(BadFixError, match=needle):
        wb.check(path, fixes=fixes, today=TODAY)
    with pytest.raises(BadFixError, match=needle):
        wb.load(path, fixes=fixes, today=TODAY)
    assert wb.batches() == []


def test_fix_of_an_unmapped_field_is_refused(wb: Workbench, write_file: WriteFile) -> None:
    text = "client_cif,account_number,currency_pair,side,amount\n0123456789,0012345678,USD/ZAR,HOLD,10\n"
    with pytest.raises(BadFixError, match="no column for value_date"):
        wb.check(write_file(text), fixes={2: {"value_date": "2026-12-02"}}, today=TODAY)


def test_fixes_on_the_fast_csv_path_of_a_bigger_file(wb: Workbench, write_file: WriteFile) -> None:
    lines = [good_row(i) if i % 97 else good_row(i, side="??") for i in range(1, 3001)]
    path = write_file("\n".join([HEADER, *lines]) + "\n")
    bad_rows = [i + 1 for i in range(1, 3001) if i % 97 == 0]
    report = wb.check(path, today=TODAY)
    assert [r.row for r in report.rejected_rows] == bad_rows
    result = wb.load(path, fixes={row: {"side": "B"} for row in bad_rows[:10]}, today=TODAY)
    assert result.rejected == len(bad_rows) - 10
    rows = wb.trades(result.batch_id)["row"].tolist()
    assert rows == sorted(rows) and len(rows) == 3000 - len(bad_rows) + 10
    assert set(bad_rows[:10]) <= set(rows)


def test_legacy_duplicate_row_rebuilds_the_curpair(wb: Workbench, write_file: WriteFile) -> None:
    text = (
        "Trade ID,Client CIF,Account Number,Amount ZAR,Spread,CurPair\n"
        "L1,0123456789,0012345678,100,25,ZARUSD\n"
        "L1,0123456789,0012345678,200,25,USDZAR\n"
    )
    report = wb.check(write_file(text), today=TODAY)
    assert report.layout.value == "legacy"
    (dup,) = report.rejected_rows
    assert dup.values["currency_pair"] == "USDZAR"  # as the file wrote it, not USD/ZAR
    result = wb.load(write_file(text), fixes={3: {"trade_id": "L2"}}, today=TODAY)
    trades = wb.trades(result.batch_id).set_index("row")
    assert (trades.loc[3, "currency_pair"], trades.loc[3, "side"]) == ("USD/ZAR", "SELL")
    assert (trades.loc[2, "currency_pair"], trades.loc[2, "side"]) == ("USD/ZAR", "BUY")


ODD = "Cust No,Acct,Pair,Dir,Amt\n0123456789,0012345678,USD/ZAR,BUY,100\n"
ODD_MAP = {"Cust No": "client_cif", "Acct": "account_number", "Dir": "side", "Amt": "amount"}


def test_unrecognised_headers_are_offered_for_mapping(wb: Workbench, write_file: WriteFile) -> None:
    path = write_file(ODD)
    with pytest.raises(UnusableFileError) as caught:
        wb.check(path, today=TODAY)
    assert caught.value.code == "NO_HEADER" and caught.value.headers == ["Cust No", "Acct", "Pair", "Dir", "Amt"]
    partial = {k: v for k, v in ODD_MAP.items() if k != "Amt"}
    with pytest.raises(UnusableFileError, match="missing: amount") as caught:
        wb.check(path, column_map=partial, today=TODAY)
    assert caught.value.headers == ["Cust No", "Acct", "Pair", "Dir", "Amt"]
    report = wb.check(path, column_map=ODD_MAP, today=TODAY)
    assert report.accepted == 1 and report.column_map["Amt"] == "amount"
    result = wb.load(path, column_map=ODD_MAP, today=TODAY)
    assert wb.trades(result.batch_id)["amount"].tolist() == [100]


def test_cli_load_with_map_and_fixes(tmp_path: Path, write_file: WriteFile) -> None:
    db = tmp_path / "cli.duckdb"
    odd = write_file(ODD, "odd.csv")
    maps = [a for k, v in ODD_MAP.items() for a in ("--map", f"{k}={v}")]
    done = fxbatch("--db", db, "load", odd, *maps, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accepted"] == 1

    bad = write_file(BAD_FILE, "bad.csv")
    fixes = write_file("row,side,amount,trade_id\n3,SELL,,\n6,,,T00009\n", "fixes.csv")
    done = fxbatch("--db", db, "load", bad, "--fixes", fixes, "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["fixed"] == [3, 6] and payload["accepted"] == 3

    wrong = write_file("row,side\nthree,SELL\n", "wrong.csv")
    done = fxbatch("--db", db, "load", bad, "--fixes", wrong)
    assert done.returncode == 2 and "line 2" in done.stderr and "'row' column" in done.stderr
    done = fxbatch("--db", db, "load", odd, "--map", "Amt")
    assert done.returncode == 2 and "HEADER=field" in done.stderr


def test_error_types_are_fxbatch_errors() -> None:
    assert issubclass(BadFixError, FxBatchError) and BadFixError("x").code == "BAD_FIX"


@pytest.mark.parametrize(
    ("row", "kept"),
    [
        (good_row(2, side="HOLD", spread_pips='"1"500'), ("spread_pips", "BAD_QUOTES")),
        (good_row(2, side="HOLD") + ",9999", ("column L", "EXTRA_VALUES")),
    ],
    ids=["badly-quoted", "beyond-the-header"],
)
def test_a_correction_of_another_field_leaves_a_cell_the_reader_could_not_read_rejected(
    wb: Workbench, write_file: WriteFile, row: str, kept: tuple[str, str]
) -> None:
    # The row is rebuilt from its cells, which do not hold what the reader found wrong: fixing
    # only the side must not load the row with the misread cell (150 pips) or drop the extra value.
    path = write_file(HEADER + "\n" + good_row(1) + "\n" + row + "\n")
    report = wb.check(path, fixes={3: {"side": "BUY"}}, today=TODAY)
    assert report.fixed_still_rejected == [3]
    assert [(r.row, r.column, r.code) for r in report.rejections] == [(3, *kept)]
    if kept[1] == "BAD_QUOTES":  # typing the cell anew settles it
        fixed = wb.load(path, fixes={3: {"side": "BUY", "spread_pips": "150"}}, today=TODAY)
        assert fixed.accepted == 2 and wb.trades(fixed.batch_id)["spread_pips"].tolist() == [25, 150]


def test_a_correction_that_empties_every_cell_is_not_reported_as_loaded(wb: Workbench, write_file: WriteFile) -> None:
    from fxbatch.ingest.layout import FIELDS

    path = write_file(BAD_FILE)
    result = wb.load(path, fixes={3: dict.fromkeys(FIELDS, "")}, today=TODAY)
    assert 3 not in result.fixed and 3 not in wb.trades(result.batch_id)["row"].tolist()


def test_a_fixes_file_saved_by_excel_as_windows_1252_or_without_a_row_column_is_read_or_refused_clearly(
    write_file: WriteFile, tmp_path: Path
) -> None:
    path, db = write_file(BAD_FILE), tmp_path / "cli.duckdb"
    fixes = tmp_path / "fixes.csv"
    fixes.write_bytes("row,side,reference\n3,SELL,caf\xe9\n".encode("cp1252"))
    out = fxbatch("--db", db, "load", path, "--fixes", fixes, "--json")
    assert "Traceback" not in out.stderr, out.stderr
    assert 3 in json.loads(out.stdout)["fixed"]
    fixes.write_text("row;side\n3;SELL\n")
    refused = fxbatch("--db", db, "load", path, "--fixes", fixes)
    assert refused.returncode == 2 and "no 'row' column" in refused.stderr, refused.stderr
