"""Shared helpers of the run tests: loading batches, reading results, invariants, a spy bank."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from fxbatch import Workbench
from fxbatch.bank.port import BookBatch, QuoteBatch, QuoteReplies, Replies, StatusReplies
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.engine import Job
from fxbatch.models import FINAL_TRADE, RunConfig
from fxbatch.samples import make_trades, write_csv
from tests.conftest import DATA, TODAY

FINAL = {s.value for s in FINAL_TRADE}
WAIT = 60.0  # seconds: generous upper bound for any job; a hang fails instead of blocking
DETAIL = "status, failure_code, attempts, quote_id, quote_rate, deal_rate"


def load_sample(wb: Workbench) -> int:
    return wb.load(DATA / "sample_trades.csv", today=TODAY).batch_id


def load_generated(wb: Workbench, tmp_path: Path, n: int, seed: int = 7) -> int:
    path = write_csv(make_trades(n, seed), tmp_path / f"generated_{n}_{seed}.csv")
    result = wb.load(path, today=TODAY)
    assert result.accepted == n
    return result.batch_id


def query(wb: Workbench, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return wb.store.cursor().execute(sql, list(params)).fetchall()


def outcomes(wb: Workbench, run_id: int, columns: str = "status, failure_code") -> dict[int, tuple[Any, ...]]:
    """Per-trade results of a run keyed by spreadsheet row."""
    rows = query(wb, f"SELECT src_row, {columns} FROM run_trades WHERE run_id = ? ORDER BY src_row", run_id)
    return {r[0]: tuple(r[1:]) for r in rows}


def finish(job: Job) -> None:
    assert job.wait(WAIT), f"run {job.run_id} did not end within {WAIT}s"


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(every)


def assert_every_trade_final(wb: Workbench, run_id: int) -> None:
    summary = wb.run_summary(run_id)
    rows = query(wb, "SELECT status, count(*) FROM run_trades WHERE run_id = ? GROUP BY status", run_id)
    assert {s for s, _ in rows} <= FINAL
    assert sum(n for _, n in rows) == summary.trades
    assert query(wb, "SELECT count(DISTINCT src_row) FROM run_trades WHERE run_id = ?", run_id)[0][0] == summary.trades
    for status in ("PENDING", "EXECUTING", "QUOTED"):
        assert summary.counts.get(status, 0) == 0, summary.counts
    assert sum(summary.counts.values()) == summary.trades


def assert_ledger_matches_successes(wb: Workbench, run_id: int) -> None:
    """Exactly one booked deal per SUCCESS trade, with its deal id and quote, and nothing else."""
    assert query(
        wb, "SELECT count(*) FROM (SELECT deal_transaction_id FROM sim_ledger GROUP BY 1 HAVING count(*) > 1)"
    ) == [(0,)]
    booked = query(
        wb,
        "SELECT deal_transaction_id, quote_id, src_row, deal_rate FROM sim_ledger WHERE run_id = ? ORDER BY 1",
        run_id,
    )
    success = query(
        wb,
        "SELECT deal_transaction_id, quote_id, src_row, deal_rate FROM run_trades "
        "WHERE run_id = ? AND status = 'SUCCESS' ORDER BY 1",
        run_id,
    )
    assert booked == success
    assert len(success) == wb.run_summary(run_id).counts["SUCCESS"]


class SpyBank:
    """A simulated bank that records every booking request and checks it was stored first."""

    def __init__(self, inner: SimulatedBank, wb: Workbench) -> None:
        self.inner = inner
        self.wb = wb
        self.bookings: list[tuple[int, int, str]] = []  # (src_row, attempt, deal id)
        self.not_stored_first: list[str] = []  # deal ids booked before their attempt was recorded
        self.status_asked: list[str] = []
        self.cancelled: list[int] = []  # quote ids released with cancelquote

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        return self.inner.create_quotes(batch, max_in_flight)

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> Any:
        ids = batch.deal_txn_id.to_pylist()
        asked = list(zip(batch.src_row.tolist(), batch.attempt.tolist(), ids, strict=True))
        # the engine records a booking attempt before asking, so a crash can ask the bank about it
        recorded = set(
            self.wb.store.cursor()
            .execute("SELECT src_row, attempt FROM run_inflight WHERE run_id = ?", [batch.run_id])
            .fetchall()
        )
        self.not_stored_first += [deal for row, attempt, deal in asked if (row, attempt) not in recorded]
        self.bookings += asked
        return self.inner.book_deals(batch, max_in_flight)

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        self.cancelled += quote_ids.tolist()
        return self.inner.cancel_quotes(quote_ids, max_in_flight)

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        self.status_asked += deal_txn_ids.to_pylist()
        return self.inner.transaction_status(deal_txn_ids, max_in_flight, run_id)

    def stop_sending(self) -> None:
        self.inner.stop_sending()

    def close(self) -> None:
        self.inner.close()


def install_spy(wb: Workbench) -> list[SpyBank]:
    spies: list[SpyBank] = []

    def factory(config: RunConfig) -> SpyBank:
        spy = SpyBank(SimulatedBank(wb.store, config.bank, config.seed, wb.rates.mids), wb)
        spies.append(spy)
        return spy

    wb.engine.bank_factory = factory
    return spies


def database_at(path: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A database file at schema ``version`` (as an older fxbatch left it), open to add rows to."""
    from fxbatch.store import MIGRATIONS

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)")
    for number, migrate in enumerate(MIGRATIONS[:version], start=1):
        migrate(con)
        con.execute("INSERT INTO schema_version VALUES (?, now())", [number])
    return con
