"""Final records are buffered at zero latency: losing the buffer (a crash) loses no trade and books
nothing twice, because resume settles buffered trades from the in-flight rows and the ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fxbatch import Workbench
from fxbatch.bank.port import BookBatch, BookReplies
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.engine.worker import Worker
from fxbatch.models import RunStatus
from fxbatch.samples import make_trades, write_csv
from tests.conftest import TODAY


def _outcomes(wb: Workbench, run_id: int) -> list[tuple[int, str, str]]:
    return (
        wb.store.cursor()
        .execute(
            "SELECT src_row, status, coalesce(failure_code, '') FROM run_trades WHERE run_id = ? ORDER BY src_row",
            [run_id],
        )
        .fetchall()
    )


def test_a_crash_that_loses_buffered_finals_is_resumed_without_double_booking(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = wb.load(write_csv(make_trades(600, seed=3), tmp_path / "b.csv"), today=TODAY).batch_id
    reference = wb.run(batch, seed=9, success_rate=0.8, chunk_size=50)

    calls = {"book": 0}
    real_book = SimulatedBank.book_deals

    def dying_book(self: SimulatedBank, batch_: BookBatch, max_in_flight: int) -> BookReplies:
        calls["book"] += 1
        if calls["book"] == 7:  # the process "dies" after several waves were booked
            raise RuntimeError("killed")
        return real_book(self, batch_, max_in_flight)

    monkeypatch.setattr(SimulatedBank, "book_deals", dying_book)
    monkeypatch.setattr(Worker, "_flush", lambda self, cur: None)  # the buffer dies with the process
    crashed = wb.run(batch, seed=9, success_rate=0.8, chunk_size=50)
    assert crashed.status is RunStatus.INTERRUPTED
    assert crashed.counts["PENDING"] == 600  # nothing final was written
    monkeypatch.undo()

    ledger_before = (
        wb.store.cursor().execute("SELECT count(*) FROM sim_ledger WHERE run_id = ?", [crashed.run_id]).fetchall()[0][0]
    )
    assert ledger_before > 0, "bookings happened before the crash"
    resumed = wb.resume(crashed.run_id)
    assert resumed.status is reference.status
    assert resumed.counts == reference.counts
    got = _outcomes(wb, crashed.run_id)
    want = _outcomes(wb, reference.run_id)
    assert got == want
    ledger = (
        wb.store.cursor()
        .execute(
            "SELECT count(*), count(DISTINCT deal_transaction_id) FROM sim_ledger WHERE run_id = ?", [crashed.run_id]
        )
        .fetchall()[0]
    )
    assert ledger[0] == ledger[1] == resumed.counts["SUCCESS"]


def test_buffered_finals_are_written_when_a_run_stops_on_an_error(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = wb.load(write_csv(make_trades(400, seed=4), tmp_path / "b.csv"), today=TODAY).batch_id
    calls = {"book": 0}
    real_book = SimulatedBank.book_deals

    def failing_book(self: SimulatedBank, batch_: BookBatch, max_in_flight: int) -> BookReplies:
        calls["book"] += 1
        if calls["book"] == 4:
            raise RuntimeError("bank adapter bug")
        return real_book(self, batch_, max_in_flight)

    monkeypatch.setattr(SimulatedBank, "book_deals", failing_book)
    run = wb.run(batch, seed=1, chunk_size=50)
    assert run.status is RunStatus.INTERRUPTED
    assert "bank adapter bug" in (run.error or "")
    final = run.counts["SUCCESS"] + run.counts["FAILED"]
    assert final >= 3 * 50 * 0.9, "the waves finished before the error were written"
    assert np.isclose(final + run.counts["PENDING"], 400)
