"""Deal transaction ids are UUIDs fixed per trade and run; quotes that will not be booked are released."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from fxbatch import Workbench
from fxbatch.bank.port import QuoteBatch, QuoteReplies
from fxbatch.engine import records
from fxbatch.models import FailureCode, RunStatus
from tests.integration.run_helpers import (
    SpyBank,
    assert_every_trade_final,
    assert_ledger_matches_successes,
    install_spy,
    load_generated,
    query,
)
from tests.integration.test_crash_resume import DiesAfterBooking, use_bank

# Refused at booking with the quote still open at the bank: the run releases it.
OPEN_AFTER_REFUSAL = (FailureCode.INSUFFICIENT_FUNDS.value, FailureCode.PRICE_MOVED.value)


def test_every_booking_carries_a_uuid_fixed_for_its_trade_and_reused_on_retries(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 300)
    spies = install_spy(wb)
    run = wb.run(batch, seed=4, success_rate=0.8)
    (spy,) = spies
    by_row: dict[int, set[str]] = {}
    for row, _attempt, deal in spy.bookings:
        assert uuid.UUID(deal).version == 4
        by_row.setdefault(row, set()).add(deal)
    assert all(len(ids) == 1 for ids in by_row.values()), "a retry must reuse its trade's id"
    assert len({next(iter(ids)) for ids in by_row.values()}) == len(by_row), "one id per trade"
    assert any(a > 1 for _, a, _ in spy.bookings), "the run should have retried some bookings"
    assert not spy.not_stored_first
    # The simulated ledger keeps UUID ids as the run's prefix and the row, and gives them back whole.
    stored = query(wb, "SELECT count(*) FILTER (WHERE deal_transaction_id IS NOT NULL) FROM sim_ledger_rows "
                       "WHERE run_id = ?", run.run_id)  # fmt: skip
    assert stored == [(0,)]
    assert_ledger_matches_successes(wb, run.run_id)
    other = wb.run(batch, seed=4, success_rate=0.8)
    ids = {r[0] for r in query(wb, "SELECT deal_transaction_id FROM run_trades WHERE run_id = ?", run.run_id)}
    again = {r[0] for r in query(wb, "SELECT deal_transaction_id FROM run_trades WHERE run_id = ?", other.run_id)}
    assert ids and not (ids - {None}) & (again - {None}), "two runs never share a deal id"


def test_a_run_made_before_uuids_resumes_with_its_old_ids_and_books_nothing_twice(
    wb: Workbench, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records.dealids, "new_prefix", lambda: "FXB-0ld1d000-9-")
    batch = load_generated(wb, tmp_path, 300)
    banks = use_bank(wb, lambda inner: DiesAfterBooking(inner, wb, on_call=3))
    run_id = wb.run(batch, seed=5, success_rate=0.7, chunk_size=40).run_id
    (dying,) = banks
    lost = set(dying.booked_then_died)
    assert lost and all(d.startswith("FXB-0ld1d000-9-") for d in lost)
    monkeypatch.undo()
    spies = install_spy(wb)
    resumed = wb.resume(run_id)
    assert resumed.status in (RunStatus.COMPLETED, RunStatus.PARTIAL)
    (spy,) = spies
    assert lost <= set(spy.status_asked)
    assert not lost & {d for _, _, d in spy.bookings}
    assert all(d.startswith("FXB-0ld1d000-9-") for _, _, d in spy.bookings)
    assert_every_trade_final(wb, run_id)
    assert_ledger_matches_successes(wb, run_id)


def test_quotes_refused_at_booking_with_the_quote_still_open_are_released(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 400)
    spies = install_spy(wb)
    mix = {FailureCode.INSUFFICIENT_FUNDS: 1.0, FailureCode.PRICE_MOVED: 1.0, FailureCode.QUOTE_EXPIRED: 1.0}
    run = wb.run(batch, seed=3, success_rate=0.6, failure_mix=mix)
    (spy,) = spies
    failed = query(
        wb, "SELECT failure_code, quote_id FROM run_trades WHERE run_id = ? AND status = 'FAILED'", run.run_id
    )
    open_quotes = {q for code, q in failed if code in OPEN_AFTER_REFUSAL}
    expired = {q for code, q in failed if code == FailureCode.QUOTE_EXPIRED.value}
    assert open_quotes and expired
    released = set(spy.cancelled)
    assert open_quotes <= released, "a booking given up after its last attempt releases its quote"
    assert not expired & released, "an expired quote is not the bank's to release"
    booked = {r[0] for r in query(wb, "SELECT quote_id FROM run_trades WHERE run_id = ? AND status = 'SUCCESS'",
                                  run.run_id)}  # fmt: skip
    assert not booked & released
    # PRICE_MOVED is retried with a new quote: the replaced quotes are released too.
    assert len(released) > len(open_quotes)
    assert len(spy.cancelled) == len(released)
    summary = wb.run_summary(run.run_id)
    assert summary.quotes_cancelled == len(released) and summary.quote_cancel_failures == 0


class CancelsWhileQuoting(SpyBank):
    """Cancels the run while its second wave is being quoted."""

    def __init__(self, inner: Any, wb: Workbench) -> None:
        super().__init__(inner, wb)
        self.quote_calls = 0
        self.quoted_then_cancelled: list[int] = []

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        self.quote_calls += 1
        replies = super().create_quotes(batch, max_in_flight)
        if self.quote_calls == 2:
            self.quoted_then_cancelled = replies.quote_id[replies.ok].tolist()
            (job,) = self.wb.engine.active_jobs()
            job.cancel()
        return replies


class FailingCancels(SpyBank):
    def cancel_quotes(self, quote_ids: Any, max_in_flight: int) -> Any:
        raise RuntimeError("cancelquote: 500")


def test_a_run_cancelled_while_trades_are_quoted_books_none_of_them_and_releases_their_quotes(
    wb: Workbench, tmp_path: Path
) -> None:
    batch = load_generated(wb, tmp_path, 300)
    banks = use_bank(wb, lambda inner: CancelsWhileQuoting(inner, wb))
    run = wb.run(batch, seed=2, success_rate=1.0, chunk_size=50)
    (bank,) = banks
    assert run.status is RunStatus.CANCELLED
    quoted = set(bank.quoted_then_cancelled)
    assert quoted and quoted <= set(bank.cancelled)
    booked_quotes = {r[0] for r in query(wb, "SELECT quote_id FROM sim_ledger WHERE run_id = ?", run.run_id)}
    assert not quoted & booked_quotes
    states = query(wb, "SELECT status, count(*) FROM run_trades WHERE run_id = ? AND quote_id IN "
                       "(SELECT unnest(?::BIGINT[])) GROUP BY ALL", run.run_id, sorted(quoted))  # fmt: skip
    assert states == [("CANCELLED", len(quoted))]
    assert_every_trade_final(wb, run.run_id)
    assert_ledger_matches_successes(wb, run.run_id)


def test_a_cancel_the_bank_refuses_is_counted_and_never_fails_a_trade(wb: Workbench, tmp_path: Path) -> None:
    batch = load_generated(wb, tmp_path, 200)
    use_bank(wb, lambda inner: FailingCancels(inner, wb))
    mix = {FailureCode.INSUFFICIENT_FUNDS: 1.0}
    run = wb.run(batch, seed=3, success_rate=0.7, failure_mix=mix)
    assert run.status is RunStatus.PARTIAL
    summary = wb.run_summary(run.run_id)
    assert summary.quote_cancel_failures == summary.counts["FAILED"] > 0 and summary.quotes_cancelled == 0
    assert_every_trade_final(wb, run.run_id)
