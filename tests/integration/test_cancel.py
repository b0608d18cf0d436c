"""Cancel means stop (issue 15): after Cancel no new quote or booking is sent; the requests in
flight finish and their trades end as the bank answered; every other trade ends CANCELLED; the
quotes that will not be booked are released; the progress shown matches the final counts.

A wave of 64 requests, one in flight at a time at 60 ms each, takes about 3.8 s: the cancel,
asked for as soon as the call begins, comes long before the wave could finish, so the tests
hold on a busy machine too.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fxbatch import Workbench
from fxbatch.models import RunStatus
from tests.integration.run_helpers import (
    SpyBank,
    assert_every_trade_final,
    assert_ledger_matches_successes,
    finish,
    install_spy,
    load_generated,
    query,
    wait_until,
)

SLOW = {"latency_ms": 60, "concurrency": 1, "success_rate": 1.0}  # a wave: 64 requests, ~3.8 s
N = 64


def signalled(wb: Workbench, method: str) -> tuple[threading.Event, list[SpyBank]]:
    """Spy banks whose ``method`` signals the event as its call begins."""
    arrived = threading.Event()
    spies = install_spy(wb)
    make = wb.engine.bank_factory

    def factory(config: Any) -> Any:
        spy = make(config)
        inner = getattr(spy, method)

        def signalling(batch: Any, max_in_flight: int) -> Any:
            arrived.set()
            return inner(batch, max_in_flight)

        setattr(spy, method, signalling)
        return spy

    wb.engine.bank_factory = factory
    return arrived, spies


def cancelled_rows(wb: Workbench, run_id: int) -> list[tuple[Any, ...]]:
    return query(
        wb,
        "SELECT quote_id, attempts, executing_at, deal_transaction_id FROM run_trades "
        "WHERE run_id = ? AND status = 'CANCELLED'",
        run_id,
    )


def assert_progress_matches_the_stored_counts(wb: Workbench, job: Any) -> None:
    shown = job.progress.snapshot()
    stored = wb.run_summary(job.run_id).counts
    assert shown.status is RunStatus.CANCELLED and shown.done == shown.total
    assert {k: shown.counts.get(k, 0) for k in ("SUCCESS", "FAILED", "CANCELLED")} == {
        k: stored[k] for k in ("SUCCESS", "FAILED", "CANCELLED")
    }


def test_a_cancel_while_a_wave_is_quoted_sends_no_more_quotes_and_books_nothing(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, N)
    quoting, spies = signalled(wb, "create_quotes")
    job = wb.start_run(batch, **SLOW)
    assert quoting.wait(30)
    wb.cancel(job.run_id)
    finish(job)
    bank = spies[0].inner
    sent = bank.calls["createquote"]
    assert 1 <= sent < N, "the quotes not sent when the cancel came are never sent"
    assert bank.calls["bookquoteddeal"] == 0
    summary = wb.run_summary(job.run_id)
    assert summary.status is RunStatus.CANCELLED
    assert summary.counts["CANCELLED"] == N
    assert_every_trade_final(wb, job.run_id)
    rows = cancelled_rows(wb, job.run_id)
    quoted = [q for q, *_ in rows if q is not None]
    assert len(quoted) == sent and set(quoted) == set(spies[0].cancelled), "every quote answered is released"
    # The trades whose quote was never asked for made no attempt and never started.
    assert all(a == 0 and ex is None for q, a, ex, _ in rows if q is None)
    assert all(deal is None for *_, deal in rows)
    assert_progress_matches_the_stored_counts(wb, job)


def test_a_cancel_while_a_wave_is_booked_books_only_what_was_in_flight(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, N)
    booking, spies = signalled(wb, "book_deals")
    job = wb.start_run(batch, **SLOW)
    assert booking.wait(60)
    wb.cancel(job.run_id)
    finish(job)
    bank = spies[0].inner
    sent = bank.calls["bookquoteddeal"]
    assert bank.calls["createquote"] == N
    assert sent < N, "the bookings not sent when the cancel came are never sent"
    summary = wb.run_summary(job.run_id)
    assert summary.status is RunStatus.CANCELLED
    # The bookings in flight end as the bank answered (all succeed here); the rest are CANCELLED.
    assert summary.counts["SUCCESS"] == sent
    assert summary.counts["CANCELLED"] == N - sent
    assert_every_trade_final(wb, job.run_id)
    assert_ledger_matches_successes(wb, job.run_id)
    rows = cancelled_rows(wb, job.run_id)
    assert all(deal is None and a == 1 for _, a, _, deal in rows)
    assert {q for q, *_ in rows} <= set(spies[0].cancelled), "the quotes not booked are released"
    assert wb.run_summary(job.run_id).quotes_cancelled == N - sent
    assert_progress_matches_the_stored_counts(wb, job)


def test_a_cancel_while_trades_wait_out_a_retry_backoff_ends_the_run_at_once(wb: Workbench, tmp_path: Path) -> None:
    # The bank cannot price some trades: they wait the backoff (held long here) before their next
    # attempt. A cancel must not wait it out.
    from fxbatch.models import FailureCode

    batch = load_generated(wb, tmp_path, 40)
    mix = {FailureCode.RATE_UNAVAILABLE: 1.0}
    job = wb.start_run(batch, seed=3, success_rate=0.5, failure_mix=mix, transient_absorb_share=0.0,
                       backoff_ms=600_000, max_attempts=3, latency_ms=1)  # fmt: skip

    def waiting() -> bool:
        p = wb.progress(job.run_id)
        return p is not None and p.done > 0 and p.counts.get("EXECUTING", 0) > 0

    wait_until(waiting, timeout=60)
    asked = time.monotonic()
    wb.cancel(job.run_id, wait=False)
    assert job.wait(25), "the run waited out its backoff (capped at 30 s) before it saw the cancel"
    assert time.monotonic() - asked < 25
    summary = wb.run_summary(job.run_id)
    assert summary.status is RunStatus.CANCELLED and summary.counts["CANCELLED"] > 0
    assert_every_trade_final(wb, job.run_id)
