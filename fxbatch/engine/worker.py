"""One run executing on its own thread: the waves of quote -> book, retries, persistence.

Trades move in waves: each step (quote, book, status) is one bank call for the whole wave and
each state change is one bulk write, so a million trades never cost a million round-trips.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch import gcpause, money, valuedates
from fxbatch.bank import dealids
from fxbatch.bank.model import AUTO_RETRY, BACKS_OFF, NONE, REASON_INDEX, TIMEOUT, trade_keys
from fxbatch.bank.port import Bank, BankUnavailable, BookBatch, BookReplies, QuoteBatch, book_in_parts
from fxbatch.engine import by_hand, records
from fxbatch.engine.jobs import Job
from fxbatch.engine.working import TEXT_FIELDS, Answers, Booking, Earlier, Working, mask_of
from fxbatch.engine.writer import FinalWriter
from fxbatch.lifecycle import CODE_OF, TRADE_CODES, advance, final_run_status
from fxbatch.models import FailureCode, RunConfig, RunStatus, TradeStatus
from fxbatch.rates import RateTable
from fxbatch.store import Store

T = TradeStatus
INVALID_VALUE_DATE = REASON_INDEX[FailureCode.INVALID_VALUE_DATE.value]
# A booking refused for one of these leaves no open quote at the bank: nothing to cancel (a
# TIMEOUT_UNKNOWN booking may yet land). A duplicate deal id (taken by another quote) leaves this
# booking's quote open: it is cancelled.
_QUOTE_GONE = np.zeros(len(REASON_INDEX) + 1, dtype=bool)
for _code in (
    FailureCode.QUOTE_EXPIRED,
    FailureCode.QUOTE_NOT_FOUND,
    FailureCode.QUOTE_CANCELLED,
    FailureCode.QUOTE_ALREADY_BOOKED,
    FailureCode.TIMEOUT_UNKNOWN,
):
    _QUOTE_GONE[REASON_INDEX[_code.value] + 1] = True  # fmt: skip
# With latency: a wave is this many rounds of calls in flight (see Worker.__init__), fewer (not
# under MIN_WAVE_ROUNDS) where a call of that many rounds would pass WAVE_S at the bank's time per
# round (the simulated latency, or an HTTP bank's as measured), and this many waves' bookings may
# be in hand at once (see Worker._execute).
# The longest a trade waits before its next attempt, however many it had (the backoff doubles).
RETRY_WAIT_MAX_S = 30.0
WAVE_ROUNDS = 64
MIN_WAVE_ROUNDS = 16
WAVE_S = 4.0
DEPTH = 3
# Whatever the rounds above, a wave's quotes are all asked within this share of a quote's life (as
# the bank's quotes say it, quoteExpiryDateTime): a wave is booked once it is quoted, so its first
# quote is about that old when booked. At 500 ms a call, 64 rounds of quotes took 32 s and every
# quote of the wave had expired (quotes live about 30 s) before its booking was sent.
QUOTE_LIFE_SHARE = 1 / 3
# A quote life read from the bank's answers over this is taken for a clock or time zone at fault
# (DOMAIN: quotes live about 30 seconds), and the last known life is kept: a wrong long life
# would lift the cap above.
QUOTE_LIFE_MAX_S = 600.0
# With latency, a wave's booking answers are settled this many rounds of calls at a time as they
# come (where the bank can hand them back so: an HTTP bank), so a refused booking is quoted again
# while the rest of its wave still books (see Worker._book).
PART_ROUNDS = 2


def wave_rounds(round_s: float | None, quote_life_s: float | None = None) -> int:
    """Rounds of calls in flight a wave takes when one round takes ``round_s`` seconds (None or
    not above zero: not known, the full WAVE_ROUNDS), and a quote lives ``quote_life_s`` (None:
    not known): never more than ``life_rounds``."""
    if round_s is None or not round_s > 0:
        return WAVE_ROUNDS
    return min(max(MIN_WAVE_ROUNDS, min(WAVE_ROUNDS, math.ceil(WAVE_S / round_s))), life_rounds(round_s, quote_life_s))


def life_rounds(round_s: float | None, quote_life_s: float | None) -> int:
    """The most rounds of calls a wave's quotes may take: QUOTE_LIFE_SHARE of a quote's life (at
    least one round; no limit while either time is not known)."""
    if round_s is None or not round_s > 0 or quote_life_s is None or not quote_life_s > 0:
        return 1 << 40
    return max(1, math.floor(QUOTE_LIFE_SHARE * quote_life_s / round_s))


def quote_life(expiry: np.ndarray, now: float, last: float | None) -> float | None:
    """How long quotes expiring at ``expiry`` (epoch seconds; NaN: not said) live from ``now``:
    the median life left; ``last`` where none is said, or the median is not above zero or over
    QUOTE_LIFE_MAX_S."""
    left = expiry[np.isfinite(expiry)] - now
    life = float(np.median(left)) if len(left) else 0.0
    return life if 0 < life <= QUOTE_LIFE_MAX_S else last


def final_rows(
    src: np.ndarray, status: TradeStatus, amount_zar: np.ndarray, finished: float, **given: np.ndarray | pa.Array
) -> records.FinalRows:
    """Final records for trades that never reached the bank (or whose details are given)."""
    n = len(src)
    nan = np.full(n, np.nan)
    base: dict[str, np.ndarray | pa.Array] = {
        "src_row": src, "state": np.full(n, CODE_OF[status], dtype=np.int8),
        "failure": np.full(n, NONE, dtype=np.int8), "attempts": np.zeros(n, np.int64),
        "quote_id": np.zeros(n, np.int64), "quote_rate": nan, "quote_expiry": nan,
        "deal_txn_id": pa.nulls(n, pa.string()), "deal_rate": nan, "amount_zar": amount_zar, "executing_at": nan,
        "quoted_at": nan, "finished_at": np.full(n, finished), "spread_pips": nan, "value_day": nan,
        "spread_income_zar": nan, "failure_message": pa.nulls(n, pa.string()),
    }  # fmt: skip
    base.update(given)
    return records.FinalRows(**base)


def inflight_fields(rows: pa.Table) -> dict[str, np.ndarray]:
    """The final record's fields a booking sent for these trades carried (``load_todo``'s in-flight
    columns): the quote, its rate and expiry, and when the trade was executed and quoted."""
    return {
        "quote_id": records.integers(rows, "inflight_quote_id"),
        "quote_rate": records.numeric(rows, "inflight_quote_rate"),
        "quote_expiry": records.numeric(rows, "inflight_quote_expiry"),
        "executing_at": records.numeric(rows, "inflight_executing_at"),
        "quoted_at": records.numeric(rows, "inflight_quoted_at"),
    }


def write_cancelled(cur: duckdb.DuckDBPyConnection, run_id: int, todo: pa.Table) -> int:
    """Trades not final end CANCELLED (the move is checked like any other); returns how many.

    A trade whose booking was sent and refused (``load_todo``'s in-flight columns; none is left
    unanswered here) keeps that attempt, its quote and its deal id, as a run cancelled while it
    executes keeps them; one never started in this run keeps the attempts of the run it retries.
    """
    n = int(todo.num_rows)
    if n:
        states = np.full(n, CODE_OF[T.PENDING], dtype=np.int8)
        advance(states, np.ones(n, dtype=bool), T.CANCELLED)
        src = records.numeric(todo, "src_row").astype(np.int64)
        sent = records.numeric(todo, "inflight_attempt")
        attempts = np.where(np.isnan(sent), records.numeric(todo, "prior_attempts"), sent).astype(np.int64)
        records.write_final(
            cur, run_id,
            final_rows(
                src, T.CANCELLED, records.numeric(todo, "amount_zar"), time.time(), attempts=attempts,
                deal_txn_id=todo.column("inflight_deal").combine_chunks(), spread_pips=records.numeric(todo, "spread_pips"),
                value_day=records.numeric(todo, "value_day"), **inflight_fields(todo),
            ),
        )  # fmt: skip
    return n


class Worker:
    """Executes one run on its own thread with its own database cursor."""

    def __init__(
        self,
        store: Store,
        rates: RateTable,
        job: Job,
        config: RunConfig,
        bank: Bank,
        *,
        fresh: bool = False,
        settling: bool = False,
    ) -> None:
        self.store = store
        self.fresh = fresh  # a new run: nothing recorded yet
        # Only its bookings in doubt are settled (by hand, ``fxbatch.engine.by_hand``): nothing is
        # sent, and the run ends once nothing else is left, else it stays INTERRUPTED.
        self.settling = settling
        self.rates = rates
        self.job = job
        self.config = config
        self.bank = bank
        self.max_in_flight = config.concurrency
        self.slow = slow = config.bank.latency_ms > 0 or config.bank_url is not None
        # With latency a wave is WAVE_ROUNDS rounds of calls in flight: each wave costs a few
        # rounds besides its full ones (the part-filled last round of each call, the in-flight
        # write and settling between calls), so the longer the better, at the price of a cancel
        # or interrupt waiting for a longer wave. Its retries do not wait for it: refused quotes
        # are settled at once and quoted again (while the wave books) on another helper thread.
        # A slow bank (400 ms a call) takes fewer rounds a wave, so the progress still moves every
        # few seconds (64 rounds of 400 ms would show nothing final for over 50 s), and no wave is
        # quoted for longer than a share of a quote's life (QUOTE_LIFE_SHARE). An HTTP bank's
        # time per round is not known in advance: its first wave is one round of calls, and every
        # later wave goes by how long the quotes of the last full wave took a round, and how long
        # its quotes said they live (``_measured``). (The token's round trip said nothing of it:
        # the identity provider is another server, and at the simulator answers at once.)
        self.measure = config.bank_url is not None
        # How long a quote lives: the simulated bank's setting; at an HTTP bank the bank's own
        # quotes say it (``_measured``), until then DOMAIN's "about 30 seconds" (the setting's default).
        self.quote_life_s: float | None = config.bank.quote_ttl_s
        self.round_s: float | None = None if self.measure else config.bank.latency_ms / 1000
        if not slow:
            self.chunk_size = config.chunk_size
        elif self.measure:
            self.chunk_size = config.concurrency
        else:
            self.chunk_size = config.concurrency * wave_rounds(self.round_s, self.quote_life_s)
        # The first wave at an HTTP bank (one round) only measures it: the next wave is taken while
        # it books, rather than after (as later waves are), so measuring costs no round of its own.
        self._fresh_takes = 0  # times fresh trades were taken on
        self.backoff = config.backoff_ms / 1000 if slow else 0.0
        self.pair_names = np.array(sorted(rates.mids), dtype=object)
        # Final records are buffered up to this many rows: an insert of two row groups (2 x 122,880
        # rows) or more is written in parallel and costs about half as much per row as smaller
        # ones; the last buffer, written when nothing else is left to overlap it, stays small. In
        # latency mode what becomes final is written at once, or, while the last write is still
        # in progress, as soon as it is done (the run goes on meanwhile, see _flush_when_free).
        self.flush_rows = 0 if slow else max(2 * config.chunk_size, 245_760)
        self._pending: list[records.FinalRows] = []
        self._pending_rows = 0
        # Set (by a booking thread) when a part of a wave's bookings, or a whole booking, is
        # answered; with latency also by the writer when a write is done.
        self._news = threading.Event()
        self.writer = FinalWriter(store, job.run_id, on_done=self._news.set if slow else None)
        # A wave is booked on a helper thread while the next one is quoted; with latency, up to
        # DEPTH bookings are in hand, each on its own helper thread (see _execute).
        self.depth = DEPTH if slow else 1
        self.part_rows = config.concurrency * PART_ROUNDS
        self._helper = ThreadPoolExecutor(self.depth, thread_name_prefix=f"fxbatch-run-{job.run_id}-book")
        # Quotes that will not be booked are cancelled at the bank on their own thread, best
        # effort: a failed cancel is counted, never fails a trade or slows the waves. The quotes
        # to cancel gather while a cancel call is out, and go together in the next one.
        self._releaser = ThreadPoolExecutor(1, thread_name_prefix=f"fxbatch-run-{job.run_id}-cancel")
        self._releases: list[Future[tuple[int, int]]] = []
        self._to_release: list[np.ndarray] = []
        self._releasing = False  # a cancel call is out or about to be: it takes what gathers
        self._release_lock = threading.Lock()
        # The bank's own failure messages (an HTTP bank's resultMsg and validation errors) by
        # source row; the simulated bank's are the reasons' standard messages.
        self.keep_messages = config.bank_url is not None
        # Bookings whose outcome the bank could not give yet (GetTxnStatus still PENDING), by what
        # its status said (see ``in_doubt``); counted on the booking threads.
        self._said: Counter[str] = Counter()
        self._said_lock = threading.Lock()
        self._messages: dict[int, str] = {}
        self.trade_date: date | None = None  # the run's, read when it starts
        # Set (on a booking thread) when the bank went away while a wave's answers were in hand:
        # the run stops once that wave has landed (``_landed``).
        self._gone: BankUnavailable | None = None
        self.pair_index = {p: i for i, p in enumerate(self.pair_names)}
        self._pairs_changed()
        # Cancel stops the bank's calls in progress at once: no new quote or booking goes out.
        job.on_cancel.append(bank.stop_sending)
        if job.cancel_requested.is_set():
            bank.stop_sending()

    def _pairs_changed(self) -> None:
        """Pip size and quote-currency ZAR factor per pair code (pairs the rate table lacks get NaN)."""
        self.pip = money.pip_sizes(self.pair_names)
        self.quote_zar = money.quote_zar_factors(self.pair_names, self.rates.zar_factors())

    def _income(self, w: Working, idx: np.ndarray) -> np.ndarray:
        """The desk's spread income in ZAR of the booked trades ``idx`` of ``w``."""
        return money.spread_income_zar(
            w.amount[idx], w.amount_is_base[idx], w.quote_rate[idx], w.deal_rate[idx], self.quote_zar[w.pair_code[idx]]
        )

    def run(self) -> None:
        try:
            with gcpause.frozen_heap():  # no long collector pauses holding up the calls in flight
                self._run()
        finally:
            self.job.done.set()  # the heap given back first: a caller waiting on the run finds it so

    def _run(self) -> None:
        job = self.job
        started = time.monotonic()
        cur = self.store.cursor()
        outcome = RunStatus.INTERRUPTED
        error: str | None = None
        outcomes: records.Tally | None = None
        try:
            self.fingerprint = records.batch_fingerprint(cur, job.batch_id)
            self.prefix = records.deal_prefix(cur, job.run_id)
            self.trade_date = records.run_trade_date(cur, job.run_id)
            todo = records.load_todo(
                cur, job.run_id, job.batch_id, self.config, self.rates.zar_factors(), fresh=self.fresh,
                trade_date=self.trade_date, pairs=frozenset(self.rates.pairs),
            )  # fmt: skip
            todo = self._reconcile(cur, todo)
            try:
                position = self._execute(cur, todo)
            finally:
                self._flush(cur)  # what is final is written even when the run stops on an error
                self.writer.wait()
            if job.cancel_requested.is_set():
                self._cancel(cur, todo.slice(position))
                outcome = RunStatus.CANCELLED
            elif self.settling and todo.num_rows and not self.in_doubt:
                error = (
                    f"Its bookings in doubt are settled; {todo.num_rows:,} trade(s) have not been executed yet. "
                    "The run is INTERRUPTED: resume it to execute them, or cancel it."
                )
            elif not job.stop_requested.is_set() or (self.settling and not todo.num_rows):
                outcomes = records.count_outcomes(cur, job.run_id)  # counted once: the run's record reuses them
                # Trades are CANCELLED only by a cancel: a cancelled run that waited for a booking
                # in doubt is settled by this resume and stays CANCELLED.
                cancelled = outcomes.counts.get(TradeStatus.CANCELLED.value, 0) > 0
                outcome = final_run_status(outcomes.counts, cancelled=cancelled)
            if self.in_doubt:
                outcome, outcomes = RunStatus.INTERRUPTED, None
                error = self._doubt_error()
        except BankUnavailable as exc:
            error = self._unreachable_error(exc)
        except Exception as exc:  # the run must end in a resumable state whatever happened
            error = f"{type(exc).__name__}: {exc}"
        finally:
            elapsed = time.monotonic() - started
            try:
                try:
                    records.set_run_status(
                        cur, job.run_id, outcome, finished=outcome is not RunStatus.INTERRUPTED,
                        elapsed_s=elapsed, error=error, outcomes=outcomes,
                    )  # fmt: skip
                finally:
                    job.progress.status = outcome
                    job.progress.error = error
                    # The run's status is final before the quotes it released are answered
                    # (a cancelled wave's cancels take their own round trips); they are counted
                    # on the run when they are.
                    try:
                        self._record_releases(cur)
                    finally:
                        self.bank.close()
            finally:
                self.store.release_cursor()

    @property
    def in_doubt(self) -> int:
        """Bookings left in doubt: never booked again nor failed, they keep the run INTERRUPTED
        until a resume (or a settlement by hand) settles them."""
        with self._said_lock:
            return sum(self._said.values())

    def _doubted(self, said: np.ndarray) -> None:
        """Count bookings left in doubt by what the bank's status said of each."""
        with self._said_lock:
            self._said.update(str(s) for s in said.tolist())

    def _doubt_error(self) -> str:
        n = self.in_doubt
        by_hand_too = (
            "settle them by hand (an approver: `python -m fxbatch settle`; with sign-in, for an HTTP bank, "
            "`settle --propose` and another approver confirms)"
        )
        if self.settling:
            return (
                f"{n} booking(s) still in doubt (not settled by hand). The run is INTERRUPTED; {by_hand_too}, or "
                "resume it to ask the bank's status again."
            )
        said = self._said
        if set(said) == {"PENDING"}:
            head = f"{n} booking(s) still PENDING at the bank"
        else:
            told = ", ".join(f"{records.said_text(w)} {c}" for w, c in said.most_common())
            head = f"{n} booking(s) still in doubt ({told})"
        return (
            f"{head} after asking GetTxnStatus again: none is booked again or failed. The run is INTERRUPTED; "
            f"resume it to settle them from the bank's status, or, once the bank's dealers have said whether "
            f"they were booked, {by_hand_too}."
        )

    def _unreached(self, cur: object, src_row: np.ndarray, attempt: np.ndarray, quote_id: np.ndarray) -> None:
        """The bank went away before answering these bookings, or before its status could be
        asked about them: they are in doubt (listed, and settleable by hand once the bank's
        dealers have said), as a PENDING status leaves them."""
        if self.settling or not len(src_row):
            return
        said = np.full(len(src_row), records.UNREACHABLE, dtype=object)
        self._doubted(said)
        records.write_doubts(cur, self.job.run_id, src_row, attempt, quote_id, said)  # type: ignore[arg-type]

    def _unreachable_error(self, exc: BankUnavailable) -> str:
        error = f"The bank could not be reached: {exc}. The run is INTERRUPTED; resume it when the bank is back."
        if n := self.in_doubt:
            error += (
                f" {n} booking(s) are in doubt (its answers never came): once the bank's dealers have said whether "
                "they were booked, an approver can settle them by hand (`python -m fxbatch settle`, or `settle "
                "--propose` where a second approver must confirm), and the run can be cancelled without the bank."
            )
        return error

    # -- recovery --------------------------------------------------------------------
    def _reconcile(self, cur: object, todo: pa.Table) -> pa.Table:
        """Ask the bank about bookings a previous process left unanswered; book nothing twice."""
        inflight = records.open_bookings(todo)  # a booking the bank refused is tried again, unasked
        if not inflight.any():
            return todo
        rows = todo.filter(pa.array(inflight))
        deals = rows.column("inflight_deal").combine_chunks()
        try:
            status = self.bank.transaction_status(deals, self.max_in_flight, self.job.run_id)
        except BankUnavailable:
            self._unreached(
                cur, records.numeric(rows, "src_row").astype(np.int64), records.numeric(rows, "inflight_attempt").astype(np.int64),
                records.integers(rows, "inflight_quote_id"),
            )  # fmt: skip
            raise
        booked = status.status == "COMPLETED"
        refused = status.status == by_hand.NOT_BOOKED  # only the desk's word, settling by hand
        # Still PENDING (or the bank could not say): not taken up again, so never rebooked with
        # another quote; the run stays INTERRUPTED for a later resume to ask again.
        doubt = ~booked & ~refused & (status.status != "NOT_FOUND")
        self._doubted(status.status[doubt])
        # What the bank said of bookings left in doubt, and that it has none of those it answered
        # NOT_FOUND (they are booked again, and no longer in doubt even if that never happens).
        # Settling by hand asks no bank: what the bank said stands.
        told = doubt | (status.status == "NOT_FOUND")
        if told.any() and not self.settling:
            asked = rows.filter(pa.array(told))
            records.write_doubts(
                cur, self.job.run_id, records.numeric(asked, "src_row").astype(np.int64),  # type: ignore[arg-type]
                records.numeric(asked, "inflight_attempt").astype(np.int64),
                records.integers(asked, "inflight_quote_id"), status.status[told],
            )  # fmt: skip
        if refused.any():
            self._not_booked(cur, rows.filter(pa.array(refused)), deals.filter(pa.array(refused)),
                             status.message[refused] if status.message is not None else None)  # fmt: skip
        if booked.any():
            done = rows.filter(pa.array(booked))
            w = self._fresh(done)
            w.quote_rate[:] = records.numeric(done, "inflight_quote_rate")
            # The bank's status need not carry the deal's rate or quote: the run knows what it sent.
            sent = money.deal_rates(w.quote_rate, w.is_buy, w.spread_pips, self.pip[w.pair_code])
            rate = status.deal_rate[booked]
            w.deal_rate[:] = np.where(np.isnan(rate), sent, rate)
            given = inflight_fields(done)
            quote_id = status.quote_id[booked]
            given["quote_id"] = np.where(quote_id == 0, given["quote_id"], quote_id)
            final = final_rows(
                records.numeric(done, "src_row").astype(np.int64), T.SUCCESS, records.numeric(done, "amount_zar"),
                time.time(), attempts=records.numeric(done, "inflight_attempt").astype(np.int64),
                deal_txn_id=deals.filter(pa.array(booked)), deal_rate=w.deal_rate, spread_pips=w.spread_pips,
                value_day=w.value_day, spread_income_zar=self._income(w, np.arange(len(w))), **given,
            )  # fmt: skip
            records.write_final(cur, self.job.run_id, final)  # type: ignore[arg-type]
            self.job.progress.finished({T.SUCCESS.value: int(booked.sum())})
        keep = np.ones(todo.num_rows, dtype=bool)
        keep[np.flatnonzero(inflight)[booked | doubt | refused]] = False
        return todo.filter(pa.array(keep))

    def _not_booked(self, cur: object, rows: pa.Table, deals: pa.Array, message: np.ndarray | None) -> None:
        """Bookings the desk found the bank never made end FAILED (TIMEOUT_UNKNOWN, with why)."""
        w = self._fresh(rows)
        n = len(w)
        final = final_rows(
            w.src, T.FAILED, records.numeric(rows, "amount_zar"), time.time(),
            failure=np.full(n, TIMEOUT, dtype=np.int8), attempts=records.numeric(rows, "inflight_attempt").astype(np.int64),
            deal_txn_id=deals, spread_pips=w.spread_pips, value_day=w.value_day, **inflight_fields(rows),
            failure_message=pa.array(message if message is not None else [None] * n, type=pa.string()),
        )  # fmt: skip
        records.write_final(cur, self.job.run_id, final)  # type: ignore[arg-type]
        self.job.progress.finished({T.FAILED.value: n})

    def _cancel(self, cur: object, rest: pa.Table) -> None:
        n = write_cancelled(cur, self.job.run_id, rest)  # type: ignore[arg-type]
        if n:
            self.job.progress.finished({T.CANCELLED.value: n})

    # -- the waves -------------------------------------------------------------------
    def _execute(self, cur: object, todo: pa.Table) -> int:
        """Run ``todo`` in waves over a working set; returns how many trades were taken on.

        Each wave asks the bank about every trade that is due (fresh ones, and retries whose
        backoff has passed) with one call per step, and persists what became final in one insert.
        Retries ride along with fresh trades in later waves, so their backoff overlaps real work.
        A cancel stops taking fresh trades (the ones in hand finish); an interrupt stops at once
        after the wave, leaving unfinished trades to resume.

        A wave's booking runs on a helper thread (its in-flight rows written first, then the bank
        asked) while the main thread quotes the next wave; the booked wave's retries join a later
        wave. At zero latency one booking is in hand at a time. With latency (where a retry may
        wait out a backoff) the refused quotes of a wave are settled as soon as its quotes are
        answered, and its retries are quoted, and booked on another helper thread, while the
        wave's bookings go on (the bank's calls in flight are shared between them); a wave's
        booking answers are settled part by part as they come where the bank hands them back so
        (see ``_book``), and its refused bookings are quoted again while the rest still books;
        fresh trades wait for the bookings in hand, so trades still become final wave by wave.
        """
        job = self.job
        work = Working.empty()  # trades taken on and not in a bank call
        position = 0
        bookings: deque[Booking] = deque()  # waves whose booking answers are still to come, oldest first
        try:
            while True:
                if job.stop_requested.is_set():
                    break
                work = self._take_news(cur, bookings, work)
                if job.cancel_requested.is_set() and len(work):
                    # Trades in hand and not in a bank call (fresh, or waiting to try again) are not sent.
                    self._not_sent(work, np.ones(len(work), dtype=bool), time.time())
                    work = self._carry_on(cur, work, Working.empty())
                now = time.time()
                due = work.due(now)
                room = self.chunk_size - int(due.sum())
                # With latency, fresh trades wait for the bookings in hand (only retries are quoted
                # meanwhile), so trades become final wave by wave, as the progress shows them.
                after_probe = self.measure and self._fresh_takes == 1
                waiting = self.slow and bookings and not after_probe
                taking = not waiting and not job.cancel_requested.is_set()
                if room > 0 and position < todo.num_rows and taking:
                    rest = todo.num_rows - position - room
                    if self.slow and 0 < rest < self.chunk_size // 2:
                        # The few left go now, not as a small wave waiting for this one's bookings
                        # at the end (within a quote's life all the same).
                        cap = self.max_in_flight * life_rounds(self.round_s, self.quote_life_s)
                        room = max(room, min(room + rest, cap - int(due.sum())))
                    fresh = todo.slice(position, room)
                    position += fresh.num_rows
                    self._fresh_takes += 1
                    # Trades the bank must not be asked about fail at once (and are persisted).
                    work = self._carry_on(cur, self._unsendable(self._fresh(fresh), fresh), work)
                    due = work.due(now)
                if not due.any():  # every trade in hand waits out a backoff (or there are none)
                    until = float(work.not_before.min()) if len(work) else None
                    if bookings:
                        # Answers to a booking in hand (a part of one), or a retry's backoff
                        # passing first (it is then quoted while the bookings go on).
                        self._news.wait(None if until is None else max(0.0, until - now))
                        continue
                    if until is None:
                        if taking and position < todo.num_rows:
                            continue  # what was taken could not be sent (and is final): take more
                        break
                    self._flush(cur)  # nothing else to do meanwhile
                    self._rest(until - now)
                    continue
                wave, work = (work, Working.empty()) if due.all() else (work.keep(due), work.keep(~due))
                self._executing(wave)
                self._show(work, wave, *bookings)
                if self.slow and len(wave) > self.part_rows:
                    self._flush(cur)  # a long call: what is final is not left unwritten meanwhile
                asked = time.monotonic()
                good = self._quote(wave)
                self._measured(len(wave), time.monotonic() - asked, wave.quote_expiry[good])
                if job.cancel_requested.is_set() and len(good):
                    # Cancelled while the wave was quoted: nothing more is booked; its quotes are released.
                    self._release(wave.quote_id[good])
                    advance(wave.states, mask_of(len(wave), good), T.CANCELLED)
                    wave.finished_at[good] = time.time()
                    work = self._carry_on(cur, wave, work)
                    continue
                if self.slow and len(good) < len(wave):
                    # Refused quotes are settled now, not when the wave's bookings land: a retry
                    # is quoted once its backoff passes, while the bookings go on.
                    quoted = mask_of(len(wave), good)
                    work = self._carry_on(cur, wave.keep(~quoted), work)
                    wave, good = wave.keep(quoted), np.arange(len(good))
                self._show(work, wave, *bookings)
                while len(bookings) >= self.depth:  # a helper thread free for this booking
                    if not self.slow:
                        work = self._land(cur, bookings[0], work, block=True)
                        bookings.popleft()  # only once settled: on an error the handler below settles it
                        continue
                    work = self._take_news(cur, bookings, work, wave)
                    if len(bookings) >= self.depth:
                        self._news.wait()
                bookings.append(self._book(wave, good))
                self._show(work, *bookings)
            while bookings:
                if self.slow:
                    self._flush(cur)  # the writer's end wakes nobody while a booking is waited for
                work = self._land(cur, bookings[0], work, block=True)
                bookings.popleft()  # only once settled: on an error the handler below settles the rest
                self._show(work, *bookings)
        except BaseException:
            while bookings:  # let the bookings in flight end, and keep what they settled
                booking = bookings.popleft()
                while not booking.over:  # each try settles at least one part, or ends it
                    with contextlib.suppress(Exception):  # the first error is the one the run reports
                        self._land(cur, booking, work, block=True)
            raise
        finally:
            self._helper.shutdown()
        return position

    def _rest(self, seconds: float) -> None:
        """Wait out a retry's backoff, unless the run is cancelled or interrupted first (then at once)."""
        job = self.job
        deadline = time.monotonic() + seconds
        while not (job.cancel_requested.is_set() or job.stop_requested.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            job.cancel_requested.wait(min(left, 0.05))

    def _measured(self, n: int, took_s: float, expiry: np.ndarray) -> None:
        """Size the next waves at an HTTP bank from a wave of ``n`` quotes that took ``took_s``
        and expire at ``expiry`` (epoch seconds): a wave of at least one full round of calls in
        flight says how long a round takes (until one was measured, any wave: a part-filled
        round takes a round trip all the same); the life of its quotes, from now, is the median
        life left (robust to a few odd ones; a bank clock behind ours shortens it, which only
        makes waves smaller). A life not above zero or over QUOTE_LIFE_MAX_S (a clock far off, a
        time zone misread) leaves the last one."""
        if not self.measure or not n or (n < self.max_in_flight and self.round_s is not None):
            return
        self.quote_life_s = quote_life(expiry, time.time(), self.quote_life_s)
        self.round_s = took_s / math.ceil(n / self.max_in_flight)
        self.chunk_size = self.max_in_flight * wave_rounds(self.round_s, self.quote_life_s)

    def _show(self, *sets: Working | Booking | None) -> None:
        """Progress: the states of the trades in hand (not in a bank call, quoted, booking)."""
        states = [s.in_hand() if isinstance(s, Booking) else s.states for s in sets if s is not None]
        self.job.progress.chunk_state(np.concatenate(states) if states else np.zeros(0, dtype=np.int8))

    def _fresh(self, chunk: pa.Table) -> Working:
        n = chunk.num_rows
        src = records.numeric(chunk, "src_row").astype(np.int64)
        inflight_attempt = records.numeric(chunk, "inflight_attempt")
        prior = records.numeric(chunk, "prior_attempts").astype(np.int64)
        # A resumed booking the bank never saw replays the same attempt (same quote, same outcome);
        # one it refused (to be tried again) goes on at the next, as the run that heard it would have.
        attempt = np.where(np.isnan(inflight_attempt), prior + 1, np.nan_to_num(inflight_attempt)).astype(np.int64)
        attempt += np.asarray(chunk.column("inflight_refused").to_numpy(zero_copy_only=False), dtype=bool)
        pairs = pc.dictionary_encode(chunk.column("currency_pair")).combine_chunks()
        local = [str(p) for p in pairs.dictionary.to_pylist()]
        for p in local:
            if p not in self.pair_index:
                self.pair_index[p] = len(self.pair_names)
                self.pair_names = np.append(self.pair_names, np.array([p], dtype=object))
        if len(local) and len(self.pair_names) != len(self.pip):
            self._pairs_changed()
        codes = np.array([self.pair_index[p] for p in local], dtype=np.int64)
        nan = np.full(n, np.nan)
        return Working(
            src=src, keys=trade_keys(self.fingerprint, src), attempt=attempt,
            last_attempt=prior + self.config.max_attempts, states=np.full(n, CODE_OF[T.PENDING], dtype=np.int8),
            failure=np.full(n, NONE, dtype=np.int8), quote_id=np.zeros(n, np.int64), quote_rate=nan.copy(),
            quote_expiry=nan.copy(), deal_rate=nan.copy(),
            executing_at=records.numeric(chunk, "inflight_executing_at").copy(), quoted_at=nan.copy(),
            finished_at=nan.copy(), not_before=np.zeros(n), amount=records.numeric(chunk, "amount"),
            amount_zar=records.numeric(chunk, "amount_zar"), spread_pips=records.numeric(chunk, "spread_pips"),
            value_day=records.numeric(chunk, "value_day"),
            amount_is_base=np.asarray(chunk.column("amount_is_base").to_numpy(zero_copy_only=False), dtype=bool),
            is_buy=np.asarray(pc.equal(chunk.column("side"), "BUY").to_numpy(zero_copy_only=False), dtype=bool),
            pair_code=codes[np.asarray(pairs.indices.to_numpy(zero_copy_only=False), dtype=np.int64)],
            booking_sent=~np.isnan(inflight_attempt),
            deal_ids=dealids.deal_ids(self.prefix, chunk.column("src_row")),
            trades=chunk.select(TEXT_FIELDS).combine_chunks(),
        )  # fmt: skip

    @staticmethod
    def _executing(w: Working) -> None:
        """A wave's trades go EXECUTING as its quotes are asked for (shown so while they are)."""
        advance(w.states, np.ones(len(w), dtype=bool), T.EXECUTING)
        now = time.time()
        w.executing_at[:] = np.where(np.isnan(w.executing_at), now, w.executing_at)

    def _quote(self, w: Working) -> np.ndarray:
        """Ask quotes for a whole wave (EXECUTING, see ``_executing``) and settle the refused
        ones; returns the indices of the quoted trades."""
        n = len(w)
        quotes = QuoteBatch(
            trade_key=w.keys, step=w.src, attempt=w.attempt, amount=w.amount, amount_zar=w.amount_zar,
            is_buy=w.is_buy, pair_code=w.pair_code, pair_names=self.pair_names, trades=w.trades,
        )  # fmt: skip
        q = self.bank.create_quotes(quotes, self.max_in_flight)
        now = time.time()
        ok = q.ok
        idx = np.arange(n)
        unsent = q.unsent
        if unsent.any():
            self._not_sent(w, unsent, now)
        refused = ~ok & ~unsent
        self._settle(w, idx[refused], q.reason_idx[refused], now, q.message[refused])
        good: np.ndarray = idx[ok]
        if len(good):
            advance(w.states, ok, T.QUOTED)
            w.quote_id[good] = q.quote_id[ok]
            w.quote_rate[good] = q.quote_rate[ok]
            # The bank quotes the desk; the client's rate is that quote moved by the desk's spread.
            w.deal_rate[good] = money.deal_rates(
                q.quote_rate[ok], w.is_buy[good], w.spread_pips[good], self.pip[w.pair_code[good]]
            )
            w.quote_expiry[good] = q.expires_at[ok]
            w.quoted_at[good] = now
        return good

    @staticmethod
    def _not_sent(w: Working, mask: np.ndarray, now: float) -> None:
        """Trades whose quote request was not sent (the run was cancelled first) end CANCELLED;
        the attempt they were given was never made."""
        advance(w.states, mask, T.CANCELLED)
        w.attempt[mask] -= 1
        w.executing_at[mask & (w.attempt == 0)] = np.nan  # never started at all
        w.finished_at[mask] = now

    def _book(self, w: Working, good: np.ndarray) -> Booking:
        """Record the bookings of a quoted wave, then ask for them, both on a helper thread (the
        in-flight rows are written before the bank is asked, as always).

        With latency, where the whole wave is booked, the answers are handed back in parts of
        PART_ROUNDS rounds of calls as the bank answers them (a bank that cannot: all at once),
        so the main thread settles the first ones, and quotes their retries, while the rest are
        still in flight: the wave's refused bookings no longer wait for its last answer.
        """
        if not len(good):
            return Booking(w, good, None)
        batch = BookBatch(
            quote_id=w.quote_id[good], deal_txn_id=w.deal_ids.take(pa.array(good)), quote_rate=w.quote_rate[good],
            deal_rate=w.deal_rate[good], trade_key=w.keys[good], attempt=w.attempt[good],
            trade_id=w.trades.column("trade_id").take(pa.array(good)), run_id=self.job.run_id,
            batch_id=self.job.batch_id, src_row=w.src[good],
        )  # fmt: skip
        inflight = (w.quote_expiry[good], w.executing_at[good], w.quoted_at[good])
        parts: queue.SimpleQueue[tuple[int, int, Answers] | None] | None = None
        if self.slow and len(good) == len(w):
            parts = queue.SimpleQueue()
        answers = self._helper.submit(self._ask, batch, *inflight, parts=parts)
        answers.add_done_callback(lambda _: self._news.set())
        return Booking(w, good, answers, parts)

    def _ask(
        self,
        batch: BookBatch,
        expiry: np.ndarray,
        executing_at: np.ndarray,
        quoted_at: np.ndarray,
        *,
        parts: queue.SimpleQueue[tuple[int, int, Answers] | None] | None = None,
    ) -> Answers | None:
        """On a helper thread: record the in-flight bookings, ask the bank, resolve unanswered
        ones; the answers are returned, or (``parts``) handed over part by part, then None. The
        thread's database cursor (the bank's too) is closed after each wave, as the final-record
        writer does: a few waves a run, ~0.5 ms each."""

        def deliver(lo: int, hi: int, answers: Answers) -> None:
            assert parts is not None
            parts.put((lo, hi, answers))
            self._news.set()

        try:
            return self._ask_bank(batch, expiry, executing_at, quoted_at, None if parts is None else deliver)
        finally:
            try:
                self.store.release_cursor()
            finally:
                if parts is not None:
                    parts.put(None)  # the call is over (its error, if any, is the future's)

    def _ask_bank(
        self,
        batch: BookBatch,
        expiry: np.ndarray,
        executing_at: np.ndarray,
        quoted_at: np.ndarray,
        deliver: Callable[[int, int, Answers], None] | None,
    ) -> Answers | None:
        records.write_inflight(
            self.store.cursor(), self.job.run_id, batch.src_row, batch.attempt, batch.quote_id, batch.quote_rate,
            expiry, executing_at, quoted_at,
        )  # fmt: skip
        if deliver is None:
            try:
                b = self.bank.book_deals(batch, self.max_in_flight)
            except BankUnavailable:  # every answer of the call is lost (some bookings may be made)
                self._unreached(self.store.cursor(), batch.src_row, batch.attempt, batch.quote_id)
                raise
            return self._answered(batch, b)
        start = 0  # the bookings before it are answered and handed over
        try:
            for lo, hi, b in book_in_parts(self.bank, batch, self.max_in_flight, self.part_rows):
                part = batch if (lo, hi) == (0, len(batch)) else batch.take(np.arange(lo, hi))
                deliver(lo, hi, self._answered(part, b))
                start = hi
        except BankUnavailable:  # the answers not handed over are lost (some bookings may be made)
            self._unreached(self.store.cursor(), batch.src_row[start:], batch.attempt[start:], batch.quote_id[start:])
            raise
        return None

    def _answered(self, batch: BookBatch, b: BookReplies) -> Answers:
        """The answers to ``batch``'s bookings from the bank's replies: unanswered ones resolved
        with its transaction status, the quotes of refused ones released."""
        booked = b.ok.copy()
        reasons = b.reason_idx.copy()
        rates = b.deal_rate.copy()
        messages = b.message.copy()
        # An unanswered booking is resolved with the bank's status before anything else (unless
        # the bank asked it already, inside the call).
        unanswered = reasons == TIMEOUT
        if b.resolved is not None:
            unanswered &= ~b.resolved
        lost = np.flatnonzero(unanswered)
        doubt = np.zeros(len(booked), dtype=bool)
        if len(lost):
            ids = batch.deal_txn_id.take(pa.array(lost))
            try:
                st = self.bank.transaction_status(ids, self.max_in_flight, self.job.run_id)
            except BankUnavailable as exc:
                # The answers the bank gave are kept (this wave is settled with them); the bookings
                # it left unanswered are in doubt, and the run stops once the wave has landed.
                self._unreached(self.store.cursor(), batch.src_row[lost], batch.attempt[lost], batch.quote_id[lost])
                doubt[lost] = True
                self._gone = exc
            else:
                found = st.status == "COMPLETED"
                booked[lost[found]] = True
                reasons[lost[found]] = NONE
                # The bank's status need not carry the rate: the deal is booked at the rate sent.
                rates[lost[found]] = np.where(
                    np.isnan(st.deal_rate[found]), batch.deal_rate[lost[found]], st.deal_rate[found]
                )
                # Still PENDING (or the bank could not say): the bank may yet book this very quote, so
                # the trade is neither retried (a fresh quote under the same deal id) nor failed.
                unsure = ~found & (st.status != "NOT_FOUND")
                doubt[lost[unsure]] = True
                self._doubted(st.status[unsure])
                told = ~found  # in doubt, or NOT_FOUND (which clears an earlier doubt of the same booking)
                at = lost[told]
                records.write_doubts(self.store.cursor(), self.job.run_id, batch.src_row[at], batch.attempt[at],
                                     batch.quote_id[at], st.status[told])  # fmt: skip
        earlier = None
        if b.earlier is not None and b.earlier.any():
            earlier = self._earlier(batch, np.flatnonzero(b.earlier & booked))
        # Quotes the bank still holds open for a booking it refused (or never received: the run
        # was cancelled first, or an earlier try's booking landed in its place) are released.
        still_open = ~booked & ~doubt & ~_QUOTE_GONE[reasons.astype(np.int64) + 1]
        if b.earlier is not None:
            still_open |= b.earlier
        if still_open.any():
            self._release(batch.quote_id[still_open])
        return Answers(booked, reasons, rates, messages, b.unsent, doubt, earlier)

    def _earlier(self, batch: BookBatch, at: np.ndarray) -> Earlier | None:
        """The quotes of the earlier tries that the bank booked in place of bookings ``at`` of
        ``batch`` (``BookReplies.earlier``): each trade's newest earlier booking that went
        unanswered (the one, unless several went unanswered; the newest then). A trade with none
        on record keeps this try's quote."""
        found = records.earlier_bookings(self.store.cursor(), self.job.run_id, batch.src_row[at], batch.quote_id[at])
        if not found.num_rows:
            return None
        where = {int(r): int(i) for r, i in zip(batch.src_row[at].tolist(), at.tolist(), strict=True)}
        return Earlier(
            np.array([where[int(r)] for r in found.column("src_row").to_pylist()], dtype=np.int64),
            records.integers(found, "quote_id"), records.numeric(found, "quote_rate"),
            records.numeric(found, "quote_expiry"), records.numeric(found, "quoted_at"),
        )  # fmt: skip

    def _take_news(self, cur: object, bookings: deque[Booking], work: Working, *shown: Working) -> Working:
        """Settle the booking answers that have come (showing them with ``shown`` besides the
        bookings in hand) and, with latency, write what is final if the writer is free."""
        work, landed = self._land_ready(cur, bookings, work)
        if landed:
            self._show(work, *shown, *bookings)
        if self.slow:
            self._flush_when_free(cur)
        return work

    def _land_ready(self, cur: object, bookings: deque[Booking], work: Working) -> tuple[Working, bool]:
        """Settle the answers that have come to the bookings in hand (dropping those all settled);
        returns ``work`` with the trades that go on to another attempt, and whether any landed."""
        self._news.clear()  # before looking: answers that come after it set it again
        landed = False
        for booking in list(bookings):
            before = booking.landed
            work = self._land(cur, booking, work, block=False)
            landed = landed or booking.over or booking.landed != before
            if booking.over:
                bookings.remove(booking)
        return work, landed

    def _land(self, cur: object, booking: Booking, work: Working, *, block: bool) -> Working:
        """Settle what has come of a booking's answers (``block``: wait for all of them); returns
        ``work`` with the trades that go on to another attempt."""
        if booking.parts is None:
            if block or booking.answers is None or booking.answers.done():
                booking.over = True
                work = self._landed(cur, booking, work)
            return work
        while not booking.over:
            try:
                part = booking.parts.get(block=block)
            except queue.Empty:
                break
            if part is None:
                booking.over = True
                assert booking.answers is not None
                booking.answers.result()  # the call's error, once the parts it answered are settled
                break
            work = self._landed_part(cur, booking, *part, work)
        return work

    def _landed_part(self, cur: object, booking: Booking, lo: int, hi: int, answers: Answers, work: Working) -> Working:
        """Settle the trades ``lo:hi`` of a booking answered in parts (its ``good`` is all of its
        wave, in order)."""
        w = booking.wave
        part = w if (lo, hi) == (0, len(w)) else w.keep(mask_of(len(w), np.arange(lo, hi)))
        booking.landed = hi
        part = self._settle_booked(cur, part, np.arange(hi - lo), answers)
        work = self._carry_on(cur, part, work)
        if self._gone is not None:  # what the bank answered is kept; the run stops here
            raise self._gone
        return work

    def _landed(self, cur: object, booking: Booking, work: Working) -> Working:
        """Settle a wave with its booking answers, persist what is final; returns ``work`` with
        the wave's trades that go on to another attempt."""
        w, good = booking.wave, booking.good
        if booking.answers is not None:
            answers = booking.answers.result()
            assert answers is not None  # answered whole
            w = self._settle_booked(cur, w, good, answers)
        work = self._carry_on(cur, w, work)
        if self._gone is not None:  # what the bank answered is kept; the run stops here
            raise self._gone
        return work

    def _settle_booked(self, cur: object, w: Working, good: np.ndarray, answers: Answers) -> Working:
        """Settle the bookings ``good`` of ``w`` with their answers; returns ``w`` without the
        bookings left in doubt (they stay as the in-flight rows recorded them)."""
        booked, reasons, rates, messages, unsent, doubt, earlier = answers
        now = time.time()
        w.booking_sent[good[~unsent]] = True
        won = good[booked]
        advance(w.states, mask_of(len(w), won), T.SUCCESS)
        w.deal_rate[won] = rates[booked]
        if earlier is not None:  # booked with an earlier try's quote: the deal is that quote's
            at = good[earlier.at]
            w.quote_id[at], w.quote_rate[at] = earlier.quote_id, earlier.quote_rate
            w.quote_expiry[at], w.quoted_at[at] = earlier.quote_expiry, earlier.quoted_at
            w.deal_rate[at] = money.deal_rates(earlier.quote_rate, w.is_buy[at], w.spread_pips[at],
                                               self.pip[w.pair_code[at]])  # fmt: skip
        w.finished_at[won] = now
        if unsent.any():  # the run was cancelled before these bookings were sent
            kept = good[unsent]
            advance(w.states, mask_of(len(w), kept), T.CANCELLED)
            w.finished_at[kept] = now
        refused = ~booked & ~unsent & ~doubt
        idx = good[refused]
        sent_attempt, sent_quote = w.attempt[idx].copy(), w.quote_id[idx].copy()
        again = self._settle(w, idx, reasons[refused], now, messages[refused])
        # Only a refusal the bank gave: a booking whose answer was lost (TIMEOUT, even one its
        # status then said it had not) may still land, so a resume asks about it again.
        again &= reasons[refused] != TIMEOUT
        if again.any():
            # The bank's refusal is recorded against the booking: a resume or cancel need not
            # ask the bank about it, nor may the desk settle it by hand.
            records.write_doubts(
                cur, self.job.run_id, w.src[idx[again]], sent_attempt[again], sent_quote[again],  # type: ignore[arg-type]
                np.full(int(again.sum()), records.REFUSED, dtype=object),
            )  # fmt: skip
        if doubt.any():
            # Left as the in-flight rows recorded them (the quote sent, the deal id): the run
            # ends INTERRUPTED and its resume settles them from the bank's status (counted in
            # ``in_doubt`` when the bank's status was asked).
            w = w.keep(~mask_of(len(w), good[doubt]))
        return w

    def _carry_on(self, cur: object, w: Working, work: Working) -> Working:
        """Persist the trades of ``w`` that are final; returns ``work`` with the others."""
        done = w.final()
        if done.any():
            self._persist(cur, w, done)
            w = w.keep(~done)
        return work.extend(w)

    def _settle(
        self, w: Working, idx: np.ndarray, reasons: np.ndarray, now: float, messages: np.ndarray | None = None
    ) -> np.ndarray:
        """Trades the bank refused: back to EXECUTING for another attempt when a retry can fix it
        and attempts remain (after a backoff when the bank could not price or serve them, at once
        otherwise), otherwise FAILED with the bank's reason. Returns which of ``idx`` go on."""
        if not len(idx):
            return np.zeros(0, dtype=bool)
        n = len(w)
        again: np.ndarray = AUTO_RETRY[reasons.astype(np.int64) + 1] & (w.attempt[idx] < w.last_attempt[idx])
        retry = idx[again]
        advance(w.states, mask_of(n, retry), T.EXECUTING)
        tries = w.attempt[retry] - (w.last_attempt[retry] - self.config.max_attempts)
        # Only a bank that could not price or serve is given time; a fresh quote is asked at once.
        wait_s = self.backoff * 2.0 ** (tries - 1) * BACKS_OFF[reasons[again].astype(np.int64) + 1]
        wait_s = np.minimum(wait_s, RETRY_WAIT_MAX_S)  # doubling 19 times (max_attempts 20) would be hours
        w.not_before[retry] = now + wait_s
        w.attempt[retry] += 1
        give_up = idx[~again]
        w.failure[give_up] = reasons[~again]
        if self.keep_messages and messages is not None:
            for src, message in zip(w.src[give_up].tolist(), messages[~again].tolist(), strict=True):
                if message:
                    self._messages[src] = message
        advance(w.states, mask_of(n, give_up), T.FAILED)
        w.finished_at[give_up] = now
        return again

    def _unsendable(self, w: Working, chunk: pa.Table) -> Working:
        """Trades whose value date cannot settle (a date written in the file has passed, or CASH on
        a day that is not a business day of both currencies) fail INVALID_VALUE_DATE unsent."""
        bad = np.asarray(chunk.column("unsendable").to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            advance(w.states, bad, T.EXECUTING)
            advance(w.states, bad, T.FAILED)
            w.failure[bad] = INVALID_VALUE_DATE
            w.attempt[bad] -= 1  # never sent: this run made no attempt
            w.finished_at[bad] = time.time()
            # Why, in words (each distinct pair, delivery and date worked out once).
            at = pa.array(np.flatnonzero(bad))
            fields = [chunk.column(c).take(at).to_pylist() for c in ("currency_pair", "delivery", "value_date")]
            for src, pair, delivery, day in zip(w.src[bad].tolist(), *fields, strict=True):
                when = day if isinstance(day, date) or day is None else date.fromisoformat(str(day)[:10])
                self._messages[src] = valuedates.unsendable_reason(str(pair), str(delivery), when, self.trade_date)
        return w

    def _persist(self, cur: object, w: Working, done: np.ndarray) -> None:
        # A deal id belongs to a trade whose booking was asked for: not to one cancelled before any
        # was (a trade cancelled after a booking whose answer was lost keeps it: that one may land).
        quoted = ~np.isnan(w.quoted_at[done]) & ((w.states[done] != CODE_OF[T.CANCELLED]) | w.booking_sent[done])
        ids = w.deal_ids.filter(pa.array(done))
        idx = np.flatnonzero(done)
        income = np.full(len(idx), np.nan)
        won = w.states[idx] == CODE_OF[T.SUCCESS]
        income[won] = self._income(w, idx[won])
        final = records.FinalRows(
            src_row=w.src[done], state=w.states[done], failure=w.failure[done], attempts=w.attempt[done],
            quote_id=w.quote_id[done], quote_rate=w.quote_rate[done], quote_expiry=w.quote_expiry[done],
            deal_txn_id=pc.if_else(pa.array(quoted), ids, pa.scalar(None, pa.string())),
            deal_rate=w.deal_rate[done], amount_zar=w.amount_zar[done], executing_at=w.executing_at[done],
            quoted_at=w.quoted_at[done], finished_at=w.finished_at[done], spread_pips=w.spread_pips[done],
            value_day=w.value_day[done], spread_income_zar=income, failure_message=self._messages_of(w.src[done]),
        )  # fmt: skip
        self._pending.append(final)
        self._pending_rows += len(final.src_row)
        if self.slow:
            self._flush_when_free(cur)
        elif self._pending_rows >= self.flush_rows:
            self._flush(cur)
        counts = np.bincount(w.states[done], minlength=len(TRADE_CODES))
        self.job.progress.finished({TRADE_CODES[i].value: int(c) for i, c in enumerate(counts) if c})

    def _messages_of(self, src: np.ndarray) -> pa.Array:
        """The bank's messages kept for these trades (null for the rest), dropped from memory."""
        if not self._messages:
            return pa.nulls(len(src), pa.string())
        pop = self._messages.pop
        return pa.array([pop(r, None) for r in src.tolist()], type=pa.string())

    # -- releasing quotes -------------------------------------------------------------
    def _release(self, quote_ids: np.ndarray) -> None:
        """Cancel quotes that will not be booked, on the releaser thread (best effort)."""
        ids = np.asarray(quote_ids, dtype=np.int64)
        ids = ids[ids != 0]
        if not len(ids):
            return
        with self._release_lock:
            self._to_release.append(ids)
            if self._releasing:
                return
            self._releasing = True
        try:
            self._releases.append(self._releaser.submit(self._cancel_gathered))
        except BaseException:  # no cancel call will take them: the next release tries again
            with self._release_lock:
                self._releasing = False
            raise

    def _cancel_gathered(self) -> tuple[int, int]:
        """Cancel the quotes gathered, in calls as they gather, until none is left; (quotes
        cancelled, cancels that failed)."""
        cancelled = failed = 0
        while True:
            with self._release_lock:
                if not self._to_release:
                    self._releasing = False
                    return cancelled, failed
                ids, self._to_release = np.concatenate(self._to_release), []
            done, lost = self._cancel_quotes(ids)
            cancelled, failed = cancelled + done, failed + lost

    def _cancel_quotes(self, ids: np.ndarray) -> tuple[int, int]:
        """(quotes cancelled, cancels that failed)."""
        try:
            replies = self.bank.cancel_quotes(ids, self.max_in_flight)
        except Exception:
            return 0, len(ids)
        failed = int((replies.result_code != 0).sum())
        return len(ids) - failed, failed

    def _record_releases(self, cur: object) -> None:
        """Wait for the cancels sent and record how they went on the run."""
        self._releaser.shutdown(wait=True)
        if not self._releases:
            return
        done = [f.result() for f in self._releases]
        records.add_quote_releases(cur, self.job.run_id, sum(d[0] for d in done), sum(d[1] for d in done))  # type: ignore[arg-type]

    def _flush(self, cur: object) -> None:
        """Write buffered final records in one insert, on the writer's thread.

        Buffering is safe: a trade whose final record was not written yet is simply taken up
        again on resume; its booking, if any, is in the in-flight rows and the bank's ledger,
        so the bank's transaction status settles it without booking twice.
        """
        if not self._pending:
            return
        parts, self._pending, self._pending_rows = self._pending, [], 0
        self.writer.submit(parts)

    def _flush_when_free(self, cur: object) -> None:
        """With latency: write what is final now, unless a write is still in progress; then it
        waits for the writer, whose end wakes the main thread (``_news``) to write it. The next
        wave is not held up by a write (a few ms each, on every step of a run's last retries)."""
        if not self.writer.busy:
            self._flush(cur)
