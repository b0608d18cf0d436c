"""Exports of a run's results and of the simulated bank's ledger: one row per trade, safe cells, text ids."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from python_calamine import CalamineWorkbook

from fxbatch import Settings, Workbench
from fxbatch.errors import NotFoundError, SettingsError
from fxbatch.export import csv_bytes, export_ledger, export_run
from tests.conftest import DATA, HEADER, TODAY, good_row

ISSUE_COLUMNS = [
    "trade_id", "client_cif", "account_number", "currency_pair", "side", "amount", "amount_currency",
    "status", "failure_code", "failure_message", "quote_id", "quote_rate", "deal_transaction_id", "deal_rate",
    "attempts", "executing_at", "quoted_at", "finished_at",
]  # fmt: skip
LEDGER_COLUMNS = ["deal_transaction_id", "quote_id", "trade_id", "run_id", "booked_at"]

# trade ids and references a spreadsheet would run as formulas, and identifiers with leading zeros
RISKY = [
    good_row(1, trade_id="=T1", reference='=HYPERLINK("http://evil.example")', client_cif="0001234567"),
    good_row(2, trade_id="@T2", reference="@SUM(A1:A9)", account_number="0000000042"),
    good_row(3, trade_id="+T3", reference="+1+2"),
    good_row(4, trade_id="-T4", reference="-2+3"),
    good_row(5, trade_id="T5", reference="plain = text"),
]
SAFE = {"=T1": "'=T1", "@T2": "'@T2", "+T3": "'+T3", "-T4": "'-T4", "T5": "T5"}
SAFE_REFERENCES = ['\'=HYPERLINK("http://evil.example")', "'@SUM(A1:A9)", "'+1+2", "'-2+3", "plain = text"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_xlsx(path: Path) -> list[dict[str, Any]]:
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
    header = [str(h) for h in rows[0]]
    return [dict(zip(header, r, strict=True)) for r in rows[1:]]


def read_parquet(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


READERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    ".csv": read_csv,
    ".xlsx": read_xlsx,
    ".parquet": read_parquet,
}


@pytest.fixture(scope="module")
def wb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workbench]:
    """One database for this module: exports only read the runs each test makes or shares."""
    with Workbench.open(settings=Settings(db=tmp_path_factory.mktemp("exports") / "exports.duckdb")) as workbench:
        yield workbench


@pytest.fixture(scope="module")
def sample(wb: Workbench) -> int:
    return wb.load(DATA / "sample_trades.csv", today=TODAY).batch_id


@pytest.fixture(scope="module")
def risky_run(wb: Workbench, tmp_path_factory: pytest.TempPathFactory) -> int:
    path = tmp_path_factory.mktemp("risky") / "risky.csv"
    path.write_text("\n".join([HEADER, *RISKY]) + "\n", encoding="utf-8")
    result = wb.load(path, today=TODAY)
    assert result.accepted == len(RISKY), result.rejections
    return wb.run(result.batch_id, success_rate=1.0).run_id


def quote_ids(wb: Workbench, run_id: int) -> dict[int, str]:
    rows = wb.store.cursor().execute("SELECT src_row, quote_id FROM run_trades WHERE run_id = ?", [run_id]).fetchall()
    return {r[0]: str(r[1]) for r in rows}


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet"])
def test_a_run_export_has_one_row_per_trade_with_the_issue_columns(
    wb: Workbench, sample: int, tmp_path: Path, suffix: str
) -> None:
    batch = sample
    summary = wb.run(batch, success_rate=0.6, seed=2)
    path = tmp_path / f"run{suffix}"
    assert export_run(wb.store, summary.run_id, path) == 200
    rows = READERS[suffix](path)
    assert len(rows) == 200
    assert set(ISSUE_COLUMNS) <= set(rows[0])
    statuses = [r["status"] for r in rows]
    assert statuses.count("SUCCESS") == summary.counts["SUCCESS"]
    assert statuses.count("FAILED") == summary.counts["FAILED"]
    assert [r["trade_id"] for r in rows] == wb.trades(batch)["trade_id"].tolist()


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet"])
def test_identifiers_stay_text_with_their_leading_zeros_and_every_digit(
    wb: Workbench, risky_run: int, tmp_path: Path, suffix: str
) -> None:
    export_run(wb.store, risky_run, tmp_path / f"run{suffix}", unmask=True)
    rows = READERS[suffix](tmp_path / f"run-UNMASKED{suffix}")  # full accounts only where the name says so
    assert rows[0]["client_cif"] == "0001234567"
    assert rows[1]["account_number"] == "0000000042"
    expected = quote_ids(wb, risky_run)
    assert all(len(q) >= 15 for q in expected.values())  # more digits than a spreadsheet number keeps
    assert {int(r["row"]): r["quote_id"] for r in rows} == expected


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_cells_a_spreadsheet_would_read_as_formulas_are_neutralised(
    wb: Workbench, risky_run: int, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"run{suffix}"
    export_run(wb.store, risky_run, path)
    rows = READERS[suffix](path)
    assert [r["trade_id"] for r in rows] == list(SAFE.values())
    assert [r["reference"] for r in rows] == SAFE_REFERENCES


def test_a_parquet_export_keeps_the_values_as_loaded(wb: Workbench, risky_run: int, tmp_path: Path) -> None:
    path = tmp_path / "run.parquet"
    export_run(wb.store, risky_run, path)
    table = pq.read_table(path)
    assert table.column("trade_id").to_pylist() == list(SAFE)
    for name in ("trade_id", "client_cif", "account_number", "quote_id", "deal_transaction_id"):
        assert table.schema.field(name).type == pa.string(), name


def test_the_export_of_a_retry_run_has_its_trades_only(wb: Workbench, sample: int, tmp_path: Path) -> None:
    batch = sample
    first = wb.run(batch, success_rate=0.5, seed=1)
    retry = wb.run(batch, success_rate=0.5, seed=2, retry_of_run=first.run_id)
    path = tmp_path / "retry.csv"
    assert export_run(wb.store, retry.run_id, path) == first.counts["FAILED"]
    assert len(read_csv(path)) == first.counts["FAILED"]


def test_exporting_to_an_unknown_format_or_a_missing_run_is_refused(
    wb: Workbench, risky_run: int, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=r"\.csv, \.xlsx or \.parquet"):
        export_run(wb.store, risky_run, tmp_path / "run.json")
    with pytest.raises(NotFoundError, match="no run 999"):
        export_run(wb.store, 999, tmp_path / "run.csv")
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".parquet"])
def test_the_ledger_export_lists_each_booked_deal_with_its_trade(
    wb: Workbench, sample: int, tmp_path: Path, suffix: str
) -> None:
    batch = sample
    wb.run(batch, success_rate=0.5, seed=1)
    second = wb.run(batch, success_rate=1.0)
    booked = sum(r.counts["SUCCESS"] for r in wb.runs())  # every run of this module's database
    path = tmp_path / f"ledger{suffix}"
    assert export_ledger(wb.store, path) == booked
    rows = READERS[suffix](path)
    assert set(LEDGER_COLUMNS) <= set(rows[0])
    assert len(rows) == booked
    assert len({r["deal_transaction_id"] for r in rows}) == len(rows)
    one = tmp_path / f"ledger_one{suffix}"
    with pytest.raises(NotFoundError, match="no run 9999"):  # not an empty file, as if it had booked nothing
        export_ledger(wb.store, one, 9999)
    assert not one.exists()
    assert export_ledger(wb.store, one, second.run_id) == 200
    only = READERS[suffix](one)
    assert {int(r["run_id"]) for r in only} == {second.run_id}
    success = (
        wb.store.cursor()
        .execute(
            "SELECT r.deal_transaction_id, CAST(r.quote_id AS VARCHAR), t.trade_id FROM run_trades r "
            "JOIN trades t ON t.batch_id = ? AND t.src_row = r.src_row WHERE r.run_id = ?",
            [batch, second.run_id],
        )
        .fetchall()
    )
    assert sorted((r["deal_transaction_id"], r["quote_id"], r["trade_id"]) for r in only) == sorted(success)
    assert all(r["booked_at"] not in (None, "") for r in only)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_the_ledger_export_neutralises_formula_like_trade_ids(
    wb: Workbench, risky_run: int, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"ledger{suffix}"
    export_ledger(wb.store, path, risky_run)
    assert sorted(r["trade_id"] for r in READERS[suffix](path)) == sorted(SAFE.values())


def test_a_run_too_big_for_an_excel_sheet_is_refused_with_the_alternatives(
    wb: Workbench, risky_run: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fxbatch.export.EXCEL_MAX_ROWS", 4)
    with pytest.raises(SettingsError, match=r"do not fit in an Excel sheet.*\.csv or \.parquet"):
        export_run(wb.store, risky_run, tmp_path / "big.xlsx")
    assert not (tmp_path / "big.xlsx").exists()
    assert export_run(wb.store, risky_run, tmp_path / "big.csv") == 5


def test_the_rejections_download_neutralises_formula_like_cells(wb: Workbench, tmp_path: Path) -> None:
    """The Batches page's "Download all rejections (CSV)" goes through the exports' neutralising."""
    path = tmp_path / "hostile.csv"
    rows = [good_row(1, amount='=HYPERLINK("http://evil.example")'), good_row(2, amount="-5"), good_row(3)]
    path.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    batch = wb.load(path, today=TODAY).batch_id
    written = list(csv.DictReader(csv_bytes(wb.rejections(batch)).decode().splitlines()))
    values = {r["row"]: r["value"] for r in written if r["column"] == "amount"}
    assert values == {"2": '\'=HYPERLINK("http://evil.example")', "3": "'-5"}
