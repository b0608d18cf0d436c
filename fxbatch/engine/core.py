"""The execution engine: runs a batch through quote -> book in a worker thread.

One engine serves the app, the CLI and notebooks. Trades move in chunks: each step (quote,
book, status) is one bank call for the whole chunk and each state change is one bulk write,
so a million trades never cost a million round-trips. Determinism comes from the bank model;
the engine only decides what to ask next.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch.bank.model import AUTO_RETRY, NONE, TIMEOUT, check_settings, trade_keys
from fxbatch.bank.port import Bank, BankUnavailable, BookBatch, QuoteBatch
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.engine import records
from fxbatch.engine.writer import FinalWriter
from fxbatch.errors import ConflictError, SettingsError
from fxbatch.lifecycle import CODE_OF, TRADE_CODES, advance, final_run_status
from fxbatch.models import RunConfig, RunStatus, RunSummary, TradeStatus
from fxbatch.rates import RateTable
from fxbatch.settings import Settings, load_settings
from fxbatch.store import Store

T = TradeStatus
BankFactory = Callable[[RunConfig], Bank]


class Progress:
    """Thread-safe progress of one run; read from any thread, never touches the database."""

    def __init__(self, run_id: int, total: int, done_before: dict[str, int]) -> None:
        self.run_id = run_id
        self.total = total
        self._lock = threading.Lock()
        self._final = {s.value: 0 for s in TradeStatus}
        for key, n in done_before.items():
            if key in (T.SUCCESS, T.FAILED, T.CANCELLED):
                self._final[key] = n
        self._done_at_start = sum(self._final.values())
        self._chunk: dict[str, int] = {}
        self._started = time.monotonic()
        self.status = RunStatus.RUNNING
        self.error: str | None = None

    def chunk_state(self, states: np.ndarray) -> None:
        counts = np.bincount(states, minlength=len(TRADE_CODES))
        with self._lock:
            self._chunk = {TRADE_CODES[i].value: int(c) for i, c in enumerate(counts) if c}

    def finished(self, statuses: dict[str, int]) -> None:
        with self._lock:
            for key, n in statuses.items():
                self._final[key] = self._final.get(key, 0) + n
            self._chunk = {}

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            counts = dict(self._final)
            for key, n in self._chunk.items():
                counts[key] = counts.get(key, 0) + n
            done = sum(counts[s] for s in (T.SUCCESS, T.FAILED, T.CANCELLED))
            in_flight = counts.get(T.EXECUTING, 0) + counts.get(T.QUOTED, 0)
            counts[T.PENDING.value] = max(0, self.total - done - in_flight)
            elapsed = time.monotonic() - self._started
            rate = (done - self._done_at_start) / elapsed if elapsed > 0 else 0.0
            eta = (self.total - done) / rate if rate > 0 else None
            return {
                "run_id": self.run_id,
                "status": self.status.value,
                "done": done,
                "total": self.total,
                "fraction": done / self.total if self.total else 1.0,
                "counts": counts,
                "trades_per_s": rate,
                "eta_s": eta,
                "elapsed_s": elapsed,
                "error": self.error,
            }


@dataclass
class Job:
    """A run executing in a worker thread."""

    run_id: int
    batch_id: int
    progress: Progress
    thread: threading.Thread | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    stop_requested: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop after the chunk in hand; trades not started end CANCELLED."""
        self.cancel_requested.set()

    def interrupt(self) -> None:
        """Stop after the chunk in hand and leave the run INTERRUPTED (resumable)."""
        self.stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end of the run (and of its thread); False on timeout."""
        if not self.done.wait(timeout):
            return False
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        return True

    @property
    def running(self) -> bool:
        return not self.done.is_set()


class Engine:
    """Starts, resumes and cancels runs; one per database per process."""

    _jobs: ClassVar[dict[tuple[str, int], Job]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, store: Store, rates: RateTable, bank_factory: BankFactory | None = None, settings: Settings | None = None
    ) -> None:
        self.store = store
        self.rates = rates
        self.settings = settings
        self.bank_factory = bank_factory or self._default_bank
        self._db_key = str(store.path.resolve()) if store.path else f"memory:{id(store)}"

    # -- banks -------------------------------------------------------------------
    def _default_bank(self, config: RunConfig) -> Bank:
        if config.bank_url:
            from fxbatch.bank.http import HttpBank, HttpBankConfig

            settings = self.settings if self.settings is not None else load_settings()
            return HttpBank(HttpBankConfig.from_settings(config.bank_url, settings))
        if config.bank.registry_file and not Path(config.bank.registry_file).exists():
            raise SettingsError(f"registry_file={config.bank.registry_file!r} does not exist.")
        return SimulatedBank(self.store, config.bank, config.seed, self.rates.mids)

    # -- registry ------------------------------------------------------------------
    def job(self, run_id: int) -> Job | None:
        with self._registry_lock:
            return self._jobs.get((self._db_key, run_id))

    def active_jobs(self) -> list[Job]:
        with self._registry_lock:
            return [j for (db, _), j in self._jobs.items() if db == self._db_key and j.running]

    def recover(self) -> list[int]:
        """Runs left RUNNING by a process that died become INTERRUPTED (resumable)."""
        cur = self.store.cursor()
        found = []
        for run_id in records.unfinished_runs(cur):
            if self.job(run_id) is None:
                records.set_run_status(cur, run_id, RunStatus.INTERRUPTED, error="the process running it stopped")
                found.append(run_id)
        return found

    # -- starting ------------------------------------------------------------------
    def start(self, batch_id: int, config: RunConfig | None = None) -> Job:
        """Create a run of ``batch_id`` and execute it in the background; returns at once."""
        config = config or RunConfig()
        check_settings(config.bank)
        cur = self.store.cursor()
        records.batch_fingerprint(cur, batch_id)  # raises NotFoundError
        if config.retry_of_run is not None:
            parent = records.get_run(self.store, config.retry_of_run)
            if parent.batch_id != batch_id:
                raise ConflictError(f"Run {config.retry_of_run} is a run of batch {parent.batch_id}, not {batch_id}.")
            if parent.status not in (RunStatus.COMPLETED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.CANCELLED):
                raise ConflictError(
                    f"Run {config.retry_of_run} is {parent.status.value}; retry its failed trades once it has ended."
                )
        with self._registry_lock:
            self._refuse_if_running(batch_id)
            trades = records.count_scope(self.store, batch_id, config)
            if trades == 0:
                what = f"run {config.retry_of_run} has no FAILED trades" if config.retry_of_run else "it has no trades"
                raise ConflictError(f"Nothing to run for batch {batch_id}: {what}.")
            bank = self.bank_factory(config)
            run_id = records.create_run(self.store, batch_id, trades, config)
            return self._launch(run_id, batch_id, trades, config, bank)

    def resume(self, run_id: int, bank_url: str | None = None) -> Job:
        """Finish an INTERRUPTED run: reconcile in-flight bookings, then run the rest."""
        summary = records.get_run(self.store, run_id)
        if summary.status is RunStatus.RUNNING and self.job(run_id) is None:
            self.recover()
            summary = records.get_run(self.store, run_id)
        if summary.status is not RunStatus.INTERRUPTED:
            raise ConflictError(f"Run {run_id} is {summary.status.value}; only an INTERRUPTED run can be resumed.")
        config = summary.config
        if bank_url is not None:
            config = config.model_copy(update={"bank_url": bank_url or None})
        with self._registry_lock:
            self._refuse_if_running(summary.batch_id)
            bank = self.bank_factory(config)
            return self._launch(run_id, summary.batch_id, summary.trades, config, bank)

    def cancel(self, run_id: int) -> None:
        job = self.job(run_id)
        if job is not None and job.running:
            job.cancel()
            return
        summary = records.get_run(self.store, run_id)
        if summary.status is RunStatus.INTERRUPTED:
            _cancel_rest(self.store, self.rates, run_id, summary)
            return
        raise ConflictError(f"Run {run_id} is {summary.status.value}; there is nothing to cancel.")

    def _refuse_if_running(self, batch_id: int) -> None:
        for (db, run_id), job in self._jobs.items():
            if db == self._db_key and job.batch_id == batch_id and job.running:
                raise ConflictError(
                    f"Batch {batch_id} is already running (run {run_id}); wait for it to finish or cancel it."
                )

    def _launch(self, run_id: int, batch_id: int, trades: int, config: RunConfig, bank: Bank) -> Job:
        cur = self.store.cursor()
        records.set_run_status(cur, run_id, RunStatus.RUNNING, started=True)
        counts, _ = records.count_outcomes(cur, run_id)
        job = Job(run_id, batch_id, Progress(run_id, trades, counts))
        self._jobs[(self._db_key, run_id)] = job
        worker = _Worker(self.store, self.rates, job, config, bank)
        job.thread = threading.Thread(target=worker.run, name=f"fxbatch-run-{run_id}", daemon=True)
        job.thread.start()
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Stop this database's running jobs (they stay resumable) and wait for their threads."""
        jobs = self.active_jobs()
        for job in jobs:
            job.interrupt()
        for job in jobs:
            job.wait(timeout)

    def wait(self, run_id: int, timeout: float | None = None) -> RunSummary:
        job = self.job(run_id)
        if job is not None:
            job.wait(timeout)
        return records.get_run(self.store, run_id)


def _final_rows(
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
        "quoted_at": nan, "finished_at": np.full(n, finished),
    }  # fmt: skip
    base.update(given)
    return records.FinalRows(**base)


def _cancel_rest(store: Store, rates: RateTable, run_id: int, summary: RunSummary) -> None:
    """Cancel an INTERRUPTED run: trades not yet final end CANCELLED."""
    cur = store.cursor()
    todo = records.load_todo(cur, run_id, summary.batch_id, summary.config, rates.zar_factors())
    _write_cancelled(cur, run_id, todo)
    records.set_run_status(cur, run_id, RunStatus.CANCELLED, finished=True)


def _write_cancelled(cur: duckdb.DuckDBPyConnection, run_id: int, todo: pa.Table) -> int:
    """Trades not started end CANCELLED (the move is checked like any other); returns how many."""
    n = int(todo.num_rows)
    if n:
        states = np.full(n, CODE_OF[T.PENDING], dtype=np.int8)
        advance(states, np.ones(n, dtype=bool), T.CANCELLED)
        src = records.numeric(todo, "src_row").astype(np.int64)
        records.write_final(
            cur, run_id, _final_rows(src, T.CANCELLED, records.numeric(todo, "amount_zar"), time.time())
        )
    return n


class _Worker:
    """Executes one run on its own thread with its own database cursor."""

    def __init__(self, store: Store, rates: RateTable, job: Job, config: RunConfig, bank: Bank) -> None:
        self.store = store
        self.rates = rates
        self.job = job
        self.config = config
        self.bank = bank
        self.max_in_flight = config.concurrency
        slow = config.bank.latency_ms > 0 or config.bank_url is not None
        self.chunk_size = config.concurrency * 32 if slow else config.chunk_size
        self.backoff = config.backoff_ms / 1000 if slow else 0.0
        self.pair_names = np.array(sorted(rates.mids), dtype=object)
        # Final records are buffered up to this many rows: an insert of two row groups (2 x 122,880
        # rows) or more is written in parallel and costs about half as much per row as smaller
        # ones; the last buffer, written when nothing else is left to overlap it, stays small. In
        # latency mode every wave is written at once.
        self.flush_rows = 0 if slow else max(2 * config.chunk_size, 245_760)
        self._pending: list[records.FinalRows] = []
        self._pending_rows = 0
        self.writer = FinalWriter(store, job.run_id)
        # The in-process bank at zero latency books a wave while the next one is quoted.
        self._helper = None if slow else ThreadPoolExecutor(1, thread_name_prefix=f"fxbatch-run-{job.run_id}-book")
        self.pair_index = {p: i for i, p in enumerate(self.pair_names)}

    def run(self) -> None:
        job = self.job
        started = time.monotonic()
        cur = self.store.cursor()
        outcome = RunStatus.INTERRUPTED
        error: str | None = None
        try:
            self.fingerprint = records.batch_fingerprint(cur, job.batch_id)
            self.prefix = records.deal_prefix(cur, job.run_id)
            todo = records.load_todo(cur, job.run_id, job.batch_id, self.config, self.rates.zar_factors())
            todo = self._reconcile(cur, todo)
            try:
                position = self._execute(cur, todo)
            finally:
                self._flush(cur)  # what is final is written even when the run stops on an error
                self.writer.wait()
            if job.cancel_requested.is_set():
                self._cancel(cur, todo.slice(position))
                outcome = RunStatus.CANCELLED
            elif not job.stop_requested.is_set():
                counts, _ = records.count_outcomes(cur, job.run_id)
                outcome = final_run_status(counts, cancelled=False)
        except BankUnavailable as exc:
            error = f"The bank could not be reached: {exc}. The run is INTERRUPTED; resume it when the bank is back."
        except Exception as exc:  # the run must end in a resumable state whatever happened
            error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.bank.close()
            finally:
                elapsed = time.monotonic() - started
                try:
                    records.set_run_status(
                        cur, job.run_id, outcome, finished=outcome is not RunStatus.INTERRUPTED,
                        elapsed_s=elapsed, error=error,
                    )  # fmt: skip
                finally:
                    job.progress.status = outcome
                    job.progress.error = error
                    self.store.release_cursor()
                    job.done.set()

    # -- recovery --------------------------------------------------------------------
    def _reconcile(self, cur: object, todo: pa.Table) -> pa.Table:
        """Ask the bank about bookings a previous process left unanswered; book nothing twice."""
        inflight = np.asarray(todo.column("inflight_deal").is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if not inflight.any():
            return todo
        rows = todo.filter(pa.array(inflight))
        deals = rows.column("inflight_deal").combine_chunks()
        status = self.bank.transaction_status(deals, self.max_in_flight, self.job.run_id)
        booked = status.status == "COMPLETED"
        if booked.any():
            done = rows.filter(pa.array(booked))
            final = _final_rows(
                records.numeric(done, "src_row").astype(np.int64), T.SUCCESS, records.numeric(done, "amount_zar"),
                time.time(), attempts=records.numeric(done, "inflight_attempt").astype(np.int64),
                quote_id=status.quote_id[booked], quote_rate=records.numeric(done, "inflight_quote_rate"),
                quote_expiry=records.numeric(done, "inflight_quote_expiry"),
                deal_txn_id=deals.filter(pa.array(booked)),
                deal_rate=status.deal_rate[booked], executing_at=records.numeric(done, "inflight_executing_at"),
                quoted_at=records.numeric(done, "inflight_quoted_at"),
            )  # fmt: skip
            records.write_final(cur, self.job.run_id, final)  # type: ignore[arg-type]
            self.job.progress.finished({T.SUCCESS.value: int(booked.sum())})
        keep = np.ones(todo.num_rows, dtype=bool)
        keep[np.flatnonzero(inflight)[booked]] = False
        return todo.filter(pa.array(keep))

    def _cancel(self, cur: object, rest: pa.Table) -> None:
        n = _write_cancelled(cur, self.job.run_id, rest)  # type: ignore[arg-type]
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

        At zero latency with the in-process bank, a wave's booking runs on a helper thread while
        the next wave is quoted and its in-flight rows written (each wave still records its
        bookings before asking for them); the booked wave's retries join the wave after.
        """
        job = self.job
        work = _Working.empty()  # trades taken on and not in a bank call
        position = 0
        booking: _Booking | None = None  # a wave whose booking answer is still to come
        try:
            while True:
                if job.stop_requested.is_set():
                    break
                now = time.time()
                due = work.due(now)
                room = self.chunk_size - int(due.sum())
                if room > 0 and position < todo.num_rows and not job.cancel_requested.is_set():
                    fresh = todo.slice(position, room)
                    position += fresh.num_rows
                    work = work.extend(self._fresh(fresh))
                    due = work.due(now)
                if not due.any():
                    if booking is not None:
                        landed, booking = booking, None
                        work = self._landed(cur, landed, work)
                        continue
                    if not len(work):
                        break
                    time.sleep(max(0.0, float(np.nanmin(work.not_before)) - now))
                    continue
                wave, work = (work, _Working.empty()) if due.all() else (work.keep(due), work.keep(~due))
                self._show(work, wave, booking)
                good = self._quote(wave)
                self._show(work, wave, booking)
                if booking is not None:
                    landed, booking = booking, None
                    work = self._landed(cur, landed, work)
                booking = self._book(wave, good)
                if self._helper is None:  # answered already: settle it before the next wave
                    landed, booking = booking, None
                    work = self._landed(cur, landed, work)
                self._show(work, booking.wave if booking is not None else None)
            if booking is not None:
                landed, booking = booking, None
                work = self._landed(cur, landed, work)
        except BaseException:
            if booking is not None:  # let the booking in flight end, and keep what it settled
                with contextlib.suppress(Exception):  # the first error is the one the run reports
                    self._landed(cur, booking, work)
            raise
        finally:
            if self._helper is not None:
                self._helper.submit(self.store.release_cursor).result()
                self._helper.shutdown()
        return position

    def _show(self, *sets: _Working | _Booking | None) -> None:
        """Progress: the states of the trades in hand (not in a bank call, quoted, booking)."""
        states = [(s.wave if isinstance(s, _Booking) else s).states for s in sets if s is not None]
        self.job.progress.chunk_state(np.concatenate(states) if states else np.zeros(0, dtype=np.int8))

    def _fresh(self, chunk: pa.Table) -> _Working:
        n = chunk.num_rows
        src = records.numeric(chunk, "src_row").astype(np.int64)
        inflight_attempt = records.numeric(chunk, "inflight_attempt")
        prior = records.numeric(chunk, "prior_attempts").astype(np.int64)
        # A resumed booking the bank never saw replays the same attempt (same quote, same outcome).
        attempt = np.where(np.isnan(inflight_attempt), prior + 1, np.nan_to_num(inflight_attempt)).astype(np.int64)
        pairs = pc.dictionary_encode(chunk.column("currency_pair")).combine_chunks()
        local = [str(p) for p in pairs.dictionary.to_pylist()]
        for p in local:
            if p not in self.pair_index:
                self.pair_index[p] = len(self.pair_names)
                self.pair_names = np.append(self.pair_names, np.array([p], dtype=object))
        codes = np.array([self.pair_index[p] for p in local], dtype=np.int64)
        nan = np.full(n, np.nan)
        return _Working(
            src=src, keys=trade_keys(self.fingerprint, src), attempt=attempt,
            last_attempt=prior + self.config.max_attempts, states=np.full(n, CODE_OF[T.PENDING], dtype=np.int8),
            failure=np.full(n, NONE, dtype=np.int8), quote_id=np.zeros(n, np.int64), quote_rate=nan.copy(),
            quote_expiry=nan.copy(), deal_rate=nan.copy(),
            executing_at=records.numeric(chunk, "inflight_executing_at").copy(), quoted_at=nan.copy(),
            finished_at=nan.copy(), not_before=np.zeros(n), amount=records.numeric(chunk, "amount"),
            amount_zar=records.numeric(chunk, "amount_zar"), spread_bps=records.numeric(chunk, "spread_bps"),
            is_buy=np.asarray(pc.equal(chunk.column("side"), "BUY").to_numpy(zero_copy_only=False), dtype=bool),
            pair_code=codes[np.asarray(pairs.indices.to_numpy(zero_copy_only=False), dtype=np.int64)],
            deal_ids=pc.binary_join_element_wise(self.prefix, pc.cast(chunk.column("src_row"), pa.string()), "")
            .combine_chunks(),
            trades=chunk.select(_TEXT_FIELDS).combine_chunks(),
        )  # fmt: skip

    def _quote(self, w: _Working) -> np.ndarray:
        """Ask quotes for a whole wave and settle the refused ones; returns the indices of the
        quoted trades."""
        n = len(w)
        everyone = np.ones(n, dtype=bool)
        advance(w.states, everyone, T.EXECUTING)
        now = time.time()
        w.executing_at[:] = np.where(np.isnan(w.executing_at), now, w.executing_at)
        quotes = QuoteBatch(
            trade_key=w.keys, step=w.src, attempt=w.attempt, amount=w.amount, amount_zar=w.amount_zar,
            spread_bps=w.spread_bps, is_buy=w.is_buy, pair_code=w.pair_code, pair_names=self.pair_names,
            trades=w.trades,
        )  # fmt: skip
        q = self.bank.create_quotes(quotes, self.max_in_flight)
        now = time.time()
        ok = q.ok
        idx = np.arange(n)
        self._settle(w, idx[~ok], q.reason_idx[~ok], now)
        good: np.ndarray = idx[ok]
        if len(good):
            advance(w.states, ok, T.QUOTED)
            w.quote_id[good] = q.quote_id[ok]
            w.quote_rate[good] = q.quote_rate[ok]
            w.quote_expiry[good] = q.expires_at[ok]
            w.quoted_at[good] = now
        return good

    def _book(self, w: _Working, good: np.ndarray) -> _Booking:
        """Record the bookings of a quoted wave, then ask for them (both on the helper thread when
        there is one: the in-flight rows are written before the bank is asked, as always)."""
        if not len(good):
            return _Booking(w, good, None)
        batch = BookBatch(
            quote_id=w.quote_id[good], deal_txn_id=w.deal_ids.take(pa.array(good)), quote_rate=w.quote_rate[good],
            deal_rate=w.quote_rate[good], trade_key=w.keys[good], attempt=w.attempt[good],
            trade_id=w.trades.column("trade_id").take(pa.array(good)), run_id=self.job.run_id,
            batch_id=self.job.batch_id, src_row=w.src[good],
        )  # fmt: skip
        inflight = (w.quote_expiry[good], w.executing_at[good], w.quoted_at[good])
        if self._helper is None:
            done: Future[_Answers] = Future()
            done.set_result(self._ask(batch, *inflight))
            return _Booking(w, good, done)
        return _Booking(w, good, self._helper.submit(self._ask, batch, *inflight))

    def _ask(self, batch: BookBatch, expiry: np.ndarray, executing_at: np.ndarray, quoted_at: np.ndarray) -> _Answers:
        records.write_inflight(
            self.store.cursor(), self.job.run_id, batch.src_row, batch.attempt, batch.quote_id, batch.quote_rate,
            expiry, executing_at, quoted_at,
        )  # fmt: skip
        b = self.bank.book_deals(batch, self.max_in_flight)
        booked = b.ok.copy()
        reasons = b.reason_idx.copy()
        rates = b.deal_rate.copy()
        # An unanswered booking is resolved with the bank's status before anything else.
        lost = np.flatnonzero(reasons == TIMEOUT)
        if len(lost):
            ids = batch.deal_txn_id.take(pa.array(lost))
            st = self.bank.transaction_status(ids, self.max_in_flight, self.job.run_id)
            found = st.status == "COMPLETED"
            booked[lost[found]] = True
            reasons[lost[found]] = NONE
            rates[lost[found]] = st.deal_rate[found]
        return booked, reasons, rates

    def _landed(self, cur: object, booking: _Booking, work: _Working) -> _Working:
        """Settle a wave with its booking answers, persist what is final; returns ``work`` with
        the wave's trades that go on to another attempt."""
        w, good = booking.wave, booking.good
        if booking.answers is not None:
            booked, reasons, rates = booking.answers.result()
            now = time.time()
            won = good[booked]
            advance(w.states, _mask(len(w), won), T.SUCCESS)
            w.deal_rate[won] = rates[booked]
            w.finished_at[won] = now
            self._settle(w, good[~booked], reasons[~booked], now)
        done = w.final()
        if done.any():
            self._persist(cur, w, done)
            w = w.keep(~done)
        return work.extend(w)

    def _settle(self, w: _Working, idx: np.ndarray, reasons: np.ndarray, now: float) -> None:
        """Trades the bank refused: back to EXECUTING for another attempt when a retry can fix it
        and attempts remain (after a backoff), otherwise FAILED with the bank's reason."""
        if not len(idx):
            return
        n = len(w)
        again = AUTO_RETRY[reasons.astype(np.int64) + 1] & (w.attempt[idx] < w.last_attempt[idx])
        retry = idx[again]
        advance(w.states, _mask(n, retry), T.EXECUTING)
        tries = w.attempt[retry] - (w.last_attempt[retry] - self.config.max_attempts)
        w.not_before[retry] = now + self.backoff * 2.0 ** (tries - 1)
        w.attempt[retry] += 1
        give_up = idx[~again]
        w.failure[give_up] = reasons[~again]
        advance(w.states, _mask(n, give_up), T.FAILED)
        w.finished_at[give_up] = now

    def _persist(self, cur: object, w: _Working, done: np.ndarray) -> None:
        quoted = ~np.isnan(w.quoted_at[done])
        ids = w.deal_ids.filter(pa.array(done))
        final = records.FinalRows(
            src_row=w.src[done], state=w.states[done], failure=w.failure[done], attempts=w.attempt[done],
            quote_id=w.quote_id[done], quote_rate=w.quote_rate[done], quote_expiry=w.quote_expiry[done],
            deal_txn_id=pc.if_else(pa.array(quoted), ids, pa.scalar(None, pa.string())),
            deal_rate=w.deal_rate[done], amount_zar=w.amount_zar[done], executing_at=w.executing_at[done],
            quoted_at=w.quoted_at[done], finished_at=w.finished_at[done],
        )  # fmt: skip
        self._pending.append(final)
        self._pending_rows += len(final.src_row)
        if self._pending_rows >= self.flush_rows:
            self._flush(cur)
        counts = np.bincount(w.states[done], minlength=len(TRADE_CODES))
        self.job.progress.finished({TRADE_CODES[i].value: int(c) for i, c in enumerate(counts) if c})

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


_Answers = tuple[np.ndarray, np.ndarray, np.ndarray]  # booked, reason index, deal rate per trade


@dataclass
class _Booking:
    """A quoted wave and the answers to its bookings (``good``: the quoted trades asked about)."""

    wave: _Working
    good: np.ndarray
    answers: Future[_Answers] | None


_TEXT_FIELDS = ["trade_id", "client_cif", "account_number", "currency_pair", "side", "amount_currency", "delivery",
                "value_date"]  # fmt: skip
_WORK_ARRAYS = (
    "src", "keys", "attempt", "last_attempt", "states", "failure", "quote_id", "quote_rate", "quote_expiry",
    "deal_rate", "executing_at", "quoted_at", "finished_at", "not_before", "amount", "amount_zar", "spread_bps",
    "is_buy", "pair_code",
)  # fmt: skip


@dataclass
class _Working:
    """The trades a run has taken on and not yet persisted as final, as parallel columns."""

    src: np.ndarray
    keys: np.ndarray
    attempt: np.ndarray
    last_attempt: np.ndarray
    states: np.ndarray
    failure: np.ndarray
    quote_id: np.ndarray
    quote_rate: np.ndarray
    quote_expiry: np.ndarray
    deal_rate: np.ndarray
    executing_at: np.ndarray
    quoted_at: np.ndarray
    finished_at: np.ndarray
    not_before: np.ndarray
    amount: np.ndarray
    amount_zar: np.ndarray
    spread_bps: np.ndarray
    is_buy: np.ndarray
    pair_code: np.ndarray
    deal_ids: pa.Array
    trades: pa.Table

    def __len__(self) -> int:
        return len(self.src)

    @classmethod
    def empty(cls) -> _Working:
        kinds = {"keys": np.uint64, "states": np.int8, "failure": np.int8, "is_buy": bool}
        ints = {"src", "attempt", "last_attempt", "quote_id", "pair_code"}
        arrays = {
            name: np.zeros(0, dtype=kinds.get(name, np.int64 if name in ints else np.float64)) for name in _WORK_ARRAYS
        }
        schema = pa.schema([(f, pa.string()) for f in _TEXT_FIELDS])
        return cls(**arrays, deal_ids=pa.array([], type=pa.string()), trades=schema.empty_table())

    def due(self, now: float) -> np.ndarray:
        """Trades waiting for their next attempt whose backoff has passed."""
        waiting = (self.states == CODE_OF[T.PENDING]) | (self.states == CODE_OF[T.EXECUTING])
        return np.asarray(waiting & (self.not_before <= now))

    def final(self) -> np.ndarray:
        return np.isin(self.states, [CODE_OF[T.SUCCESS], CODE_OF[T.FAILED], CODE_OF[T.CANCELLED]])

    def extend(self, other: _Working) -> _Working:
        if not len(self):
            return other
        arrays = {name: np.concatenate([getattr(self, name), getattr(other, name)]) for name in _WORK_ARRAYS}
        return _Working(
            **arrays,
            deal_ids=pa.concat_arrays([self.deal_ids, other.deal_ids]),
            trades=_concat(self.trades, other.trades),
        )

    def keep(self, mask: np.ndarray) -> _Working:
        arrays = {name: getattr(self, name)[mask] for name in _WORK_ARRAYS}
        sel = pa.array(mask)
        return _Working(**arrays, deal_ids=self.deal_ids.filter(sel), trades=self.trades.filter(sel))


def _concat(a: pa.Table, b: pa.Table) -> pa.Table:
    """``a`` then ``b`` without copying the text (merged only once the pieces become many)."""
    table = pa.concat_tables([a, b.cast(a.schema)])
    return table.combine_chunks() if table.column(0).num_chunks > 16 else table


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask
