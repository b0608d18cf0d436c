"""How a run with latency schedules its bank calls: retries do not wait for a wave's bookings,
and only a bank that could not price or serve a trade is given a backoff before the retry."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fxbatch import Settings, Workbench
from fxbatch.bank.port import BookBatch, QuoteBatch, QuoteReplies, Replies, StatusReplies
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.models import FailureCode, RunConfig
from tests.integration.run_helpers import assert_ledger_matches_successes, load_generated, outcomes


class TimedBank:
    """A simulated bank that records when each call ran and for which (row, attempt)."""

    def __init__(self, inner: SimulatedBank) -> None:
        self.inner = inner
        self.calls: list[tuple[str, float, float, list[tuple[int, int]]]] = []  # kind, start, end, trades
        self._lock = threading.Lock()

    def _timed(self, kind: str, trades: list[tuple[int, int]], fn: Any, *args: Any) -> Any:
        start = time.monotonic()
        out = fn(*args)
        with self._lock:
            self.calls.append((kind, start, time.monotonic(), trades))
        return out

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        trades = list(zip(batch.step.tolist(), batch.attempt.tolist(), strict=True))
        replies: QuoteReplies = self._timed("quote", trades, self.inner.create_quotes, batch, max_in_flight)
        return replies

    def book_deals(self, batch: BookBatch, max_in_flight: int) -> Any:
        trades = list(zip(batch.src_row.tolist(), batch.attempt.tolist(), strict=True))
        return self._timed("book", trades, self.inner.book_deals, batch, max_in_flight)

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        return self.inner.cancel_quotes(quote_ids, max_in_flight)

    def transaction_status(
        self, deal_txn_ids: pa.Array, max_in_flight: int, run_id: int | None = None
    ) -> StatusReplies:
        return self._timed("status", [], self.inner.transaction_status, deal_txn_ids, max_in_flight, run_id)

    def stop_sending(self) -> None:
        self.inner.stop_sending()

    def close(self) -> None:
        self.inner.close()

    def when(self, kind: str, row: int, attempt: int) -> tuple[float, float]:
        """(start, end) of the call of ``kind`` that carried the trade's attempt."""
        (found,) = [(s, e) for k, s, e, trades in self.calls if k == kind and (row, attempt) in trades]
        return found


@pytest.fixture
def timed(tmp_path: Path) -> Any:
    with Workbench.open(settings=Settings(db=tmp_path / "timed.duckdb")) as wb:
        banks: list[TimedBank] = []

        def factory(config: RunConfig) -> TimedBank:
            banks.append(TimedBank(SimulatedBank(wb.store, config.bank, config.seed, wb.rates.mids)))
            return banks[-1]

        wb.engine.bank_factory = factory
        yield wb, load_generated(wb, tmp_path, 300), banks


def test_refused_quotes_are_quoted_again_while_their_wave_books(timed: Any) -> None:
    wb, batch, banks = timed
    mix = {FailureCode.RATE_UNAVAILABLE: 1.0}
    summary = wb.run(batch, seed=3, success_rate=0.7, failure_mix=mix, latency_ms=2, concurrency=8, backoff_ms=1)
    (bank,) = banks
    first_quote = next(c for c in bank.calls if c[0] == "quote")
    first_book = next(c for c in bank.calls if c[0] == "book")
    retried = [c for c in bank.calls if c[0] == "quote" and any(a > 1 for _, a in c[3])]
    assert retried, "no trade was retried"
    # The wave's refused quotes went back in hand when its quotes were answered: their next
    # attempt was asked for before the wave's bookings were all answered.
    assert retried[0][1] >= first_quote[2]
    assert retried[0][1] < first_book[2]
    assert summary.counts["PENDING"] == 0
    assert_ledger_matches_successes(wb, summary.run_id)


def test_only_a_bank_that_could_not_price_or_serve_is_given_the_backoff_before_a_retry(timed: Any) -> None:
    wb, batch, banks = timed
    mix = {FailureCode.RATE_UNAVAILABLE: 1.0, FailureCode.PRICE_MOVED: 1.0}
    backoff = 1.5
    summary = wb.run(
        batch, seed=5, success_rate=0.8, failure_mix=mix, latency_ms=1, concurrency=16, backoff_ms=backoff * 1000,
        max_attempts=2,
    )  # fmt: skip
    (bank,) = banks
    failed = outcomes(wb, summary.run_id, "failure_code, attempts")
    by_reason: dict[str, list[int]] = defaultdict(list)
    for row, (code, attempts) in failed.items():
        if code is not None:
            assert attempts == 2  # both reasons are retried automatically
            by_reason[code].append(row)
    assert by_reason["RATE_UNAVAILABLE"] and by_reason["PRICE_MOVED"]
    for row in by_reason["RATE_UNAVAILABLE"]:  # refused at the quote: the retry waits out the backoff
        _, refused = bank.when("quote", row, 1)
        retried, _ = bank.when("quote", row, 2)
        assert retried - refused >= backoff * 0.99
    for row in by_reason["PRICE_MOVED"]:  # refused at the booking: a fresh quote at once
        _, refused = bank.when("book", row, 1)
        retried, _ = bank.when("quote", row, 2)
        assert retried - refused < backoff / 2
