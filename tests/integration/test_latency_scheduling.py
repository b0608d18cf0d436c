"""How a run with latency schedules its bank calls: retries do not wait for a wave's bookings
(refused quotes at once; refused bookings as their part of the wave is answered, where the bank
hands answers back in parts), only a bank that could not price or serve a trade is given a
backoff before the retry, and quotes to cancel gather while a cancel call is out."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from fxbatch import Settings, Workbench
from fxbatch.bank.port import BookBatch, BookPart, BookReplies, QuoteBatch, QuoteReplies, Replies, StatusReplies
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


class PartsBank(TimedBank):
    """Hands a booking's answers back in parts, as an HTTP bank does. The last part of the first
    booking of more than one part is held until a trade refused in that booking is quoted again
    (``waited``: it was, before the part was handed back), and the first cancel call is held until
    that booking's last part is handed back (``cancels``: the quote ids of each cancel call)."""

    def __init__(self, inner: SimulatedBank) -> None:
        super().__init__(inner)
        self.booking: set[int] = set()  # rows of the held booking
        self.requoted = threading.Event()
        self.handed_back = threading.Event()
        self.waited: bool | None = None
        self.parts = 0  # parts of the held booking
        self.refused: list[int] = []  # quote ids of the held booking's refused deals
        self.cancels: list[list[int]] = []
        self.cancel_held: bool | None = None  # the first cancel call was held until the hand-back

    def create_quotes(self, batch: QuoteBatch, max_in_flight: int) -> QuoteReplies:
        if any(
            a > 1 and row in self.booking for row, a in zip(batch.step.tolist(), batch.attempt.tolist(), strict=True)
        ):
            self.requoted.set()
        return super().create_quotes(batch, max_in_flight)

    def book_deals_in_parts(self, batch: BookBatch, max_in_flight: int, part_rows: int) -> Iterator[BookPart]:
        replies = self.book_deals(batch, max_in_flight)
        n = len(batch)
        hold = self.waited is None
        if hold:
            self.booking = set(batch.src_row.tolist())
            self.refused = batch.quote_id[~replies.ok].tolist()
            self.waited = False
        for lo in range(0, n, part_rows):
            hi = min(lo + part_rows, n)
            if hold:
                self.parts += 1
                if hi == n:
                    self.waited = self.requoted.wait(30)
            yield lo, hi, BookReplies(**{f.name: _cut(getattr(replies, f.name), lo, hi) for f in fields(replies)})
        if hold:
            self.handed_back.set()

    def cancel_quotes(self, quote_ids: np.ndarray, max_in_flight: int) -> Replies:
        if not self.cancels:
            self.cancel_held = self.handed_back.wait(30)
        self.cancels.append(quote_ids.tolist())
        return super().cancel_quotes(quote_ids, max_in_flight)


def _cut(value: Any, lo: int, hi: int) -> Any:
    return value[lo:hi] if isinstance(value, np.ndarray) else value


def _fixture(tmp_path: Path, kind: type[TimedBank]) -> Any:
    with Workbench.open(settings=Settings(db=tmp_path / "timed.duckdb")) as wb:
        banks: list[TimedBank] = []

        def factory(config: RunConfig) -> TimedBank:
            banks.append(kind(SimulatedBank(wb.store, config.bank, config.seed, wb.rates.mids)))
            return banks[-1]

        wb.engine.bank_factory = factory
        yield wb, load_generated(wb, tmp_path, 300), banks


@pytest.fixture
def timed(tmp_path: Path) -> Any:
    yield from _fixture(tmp_path, TimedBank)


@pytest.fixture
def in_parts(tmp_path: Path) -> Any:
    yield from _fixture(tmp_path, PartsBank)


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


def test_refused_bookings_are_quoted_again_while_the_rest_of_their_wave_is_still_being_answered(in_parts: Any) -> None:
    wb, batch, banks = in_parts
    mix = {FailureCode.PRICE_MOVED: 1.0}  # refused at the booking, quoted again at once
    summary = wb.run(batch, seed=3, success_rate=0.7, failure_mix=mix, latency_ms=1, concurrency=4)
    (bank,) = banks
    assert bank.parts > 2
    # A trade whose booking was refused in an early part was quoted again before the wave's last
    # part was answered (the bank held that part until it was).
    assert bank.waited is True
    assert summary.counts["PENDING"] == 0 and summary.counts["SUCCESS"] > 0
    assert_ledger_matches_successes(wb, summary.run_id)


def test_quotes_to_cancel_gather_while_a_cancel_call_is_out(in_parts: Any) -> None:
    wb, batch, banks = in_parts
    mix = {FailureCode.PRICE_MOVED: 1.0}  # each refused booking leaves its quote open: released
    summary = wb.run(batch, seed=3, success_rate=0.7, failure_mix=mix, latency_ms=1, concurrency=4)
    (bank,) = banks
    released = [q for call in bank.cancels for q in call]
    assert len(released) == len(set(released)) == summary.quotes_cancelled > 0  # each quote cancelled once
    # The first cancel call was held while the wave's parts were answered: the quotes of every
    # later part went together in the next call, not one call per part.
    assert bank.parts > 8 and bank.cancel_held is True and len(bank.cancels) >= 2
    assert set(bank.refused) <= set(bank.cancels[0]) | set(bank.cancels[1])
