"""The execution engine: runs a batch through quote -> book in a worker thread.

One engine serves the app, the CLI and notebooks. Trades move in chunks: each step (quote,
book, status) is one bank call for the whole chunk and each state change is one bulk write,
so a million trades never cost a million round-trips. Determinism comes from the bank model;
the engine only decides what to ask next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch.bank.model import AUTO_RETRY, CODE_OBJ, MESSAGE_OBJ, NONE, RETRY_HELPS_OBJ, TIMEOUT, trade_keys
from fxbatch.bank.port import Bank, BankUnavailable, BookBatch, QuoteBatch
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.engine import records
from fxbatch.errors import ConflictError, NotFoundError, SettingsError
from fxbatch.lifecycle import CODE_OF, TRADE_CODES, advance, final_run_status
from fxbatch.models import RunConfig, RunStatus, RunSummary, TradeStatus
from fxbatch.rates import RateTable
from fxbatch.store import Store

T = TradeStatus
BankFactory = Callable[[RunConfig], Bank]
STATUS_OBJ = np.array([s.value for s in TRADE_CODES], dtype=object)


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

    def __init__(self, store: Store, rates: RateTable, bank_factory: BankFactory | None = None) -> None:
        self.store = store
        self.rates = rates
        self.bank_factory = bank_factory or self._default_bank
        self._db_key = str(store.path.resolve()) if store.path else f"memory:{id(store)}"

    # -- banks -------------------------------------------------------------------
    def _default_bank(self, config: RunConfig) -> Bank:
        if config.bank_url:
            raise SettingsError(
                f"bank_url={config.bank_url!r}: the HTTP bank is not available in this version; "
                "leave bank_url empty to use the simulated bank."
            )
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


def _zar_factors(rates: RateTable) -> dict[str, float]:
    currencies = {c for pair in rates.pairs for c in pair.split("/")} | {"ZAR"}
    return {c: f for c in currencies if (f := rates.to_zar(c)) is not None}


def _final_rows(
    src: np.ndarray, status: TradeStatus, amount_zar: np.ndarray, finished: float, **given: np.ndarray
) -> records.FinalRows:
    """Final records for trades that never reached the bank (or whose details are given)."""
    n = len(src)
    nan = np.full(n, np.nan)
    none = np.full(n, None, dtype=object)
    base: dict[str, np.ndarray] = {
        "src_row": src, "status": np.full(n, status.value, dtype=object), "failure_code": none,
        "failure_message": none, "retryable": none, "attempts": np.zeros(n, np.int64),
        "quote_id": np.zeros(n, np.int64), "quote_rate": nan, "quote_expiry": nan, "deal_txn_id": none,
        "deal_rate": nan, "amount_zar": amount_zar, "executing_at": nan, "quoted_at": nan,
        "finished_at": np.full(n, finished),
    }  # fmt: skip
    base.update(given)
    return records.FinalRows(**base)


def _cancel_rest(store: Store, rates: RateTable, run_id: int, summary: RunSummary) -> None:
    """Cancel an INTERRUPTED run: trades not yet final end CANCELLED."""
    cur = store.cursor()
    todo = records.load_todo(cur, run_id, summary.batch_id, summary.config, _zar_factors(rates))
    src = records.numeric(todo, "src_row").astype(np.int64)
    states = np.full(len(src), CODE_OF[T.PENDING], dtype=np.int8)
    advance(states, np.ones(len(src), dtype=bool), T.CANCELLED)
    records.write_final(cur, run_id, _final_rows(src, T.CANCELLED, records.numeric(todo, "amount_zar"), time.time()))
    records.set_run_status(cur, run_id, RunStatus.CANCELLED, finished=True)


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
        self.chunk_size = config.concurrency * 8 if slow else config.chunk_size
        self.backoff = config.backoff_ms / 1000 if slow else 0.0

    def run(self) -> None:
        job = self.job
        started = time.monotonic()
        cur = self.store.cursor()
        outcome = RunStatus.INTERRUPTED
        error: str | None = None
        try:
            self.fingerprint = records.batch_fingerprint(cur, job.batch_id)
            self.prefix = f"FXB-{self.store.instance_id()}-{job.run_id}-"
            todo = records.load_todo(cur, job.run_id, job.batch_id, self.config, _zar_factors(self.rates))
            todo = self._reconcile(cur, todo)
            position = 0
            while position < todo.num_rows:
                if job.cancel_requested.is_set() or job.stop_requested.is_set():
                    break
                chunk = todo.slice(position, self.chunk_size)
                self._run_chunk(cur, chunk)
                position += chunk.num_rows
            if job.cancel_requested.is_set():
                self._cancel(cur, todo.slice(position))
                outcome = RunStatus.CANCELLED
            elif position >= todo.num_rows:
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
        n = rest.num_rows
        if not n:
            return
        states = np.full(n, CODE_OF[T.PENDING], dtype=np.int8)
        advance(states, np.ones(n, dtype=bool), T.CANCELLED)
        src = records.numeric(rest, "src_row").astype(np.int64)
        final = _final_rows(src, T.CANCELLED, records.numeric(rest, "amount_zar"), time.time())
        records.write_final(cur, self.job.run_id, final)  # type: ignore[arg-type]
        self.job.progress.finished({T.CANCELLED.value: n})

    # -- one chunk ---------------------------------------------------------------------
    def _quote_batch(self, chunk: pa.Table, src: np.ndarray, attempt: np.ndarray) -> QuoteBatch:
        pairs = pc.dictionary_encode(chunk.column("currency_pair")).combine_chunks()
        trades = chunk.select(
            ["trade_id", "client_cif", "account_number", "currency_pair", "side", "amount_currency", "delivery",
             "value_date"]
        )  # fmt: skip
        return QuoteBatch(
            trade_key=trade_keys(self.fingerprint, src),
            step=src,
            attempt=attempt,
            amount=records.numeric(chunk, "amount"),
            amount_zar=records.numeric(chunk, "amount_zar"),
            spread_bps=records.numeric(chunk, "spread_bps"),
            is_buy=np.asarray(pc.equal(chunk.column("side"), "BUY").to_numpy(zero_copy_only=False), dtype=bool),
            pair_code=np.asarray(pairs.indices.to_numpy(zero_copy_only=False), dtype=np.int64),
            pair_names=np.asarray(pairs.dictionary.to_numpy(zero_copy_only=False), dtype=object),
            trades=trades,
        )

    def _run_chunk(self, cur: object, chunk: pa.Table) -> None:
        cfg = self.config
        n = chunk.num_rows
        src = records.numeric(chunk, "src_row").astype(np.int64)
        inflight_attempt = records.numeric(chunk, "inflight_attempt")
        prior = records.numeric(chunk, "prior_attempts").astype(np.int64)
        # A resumed booking the bank never saw replays the same attempt (same quote, same outcome).
        attempt = np.where(np.isnan(inflight_attempt), prior + 1, np.nan_to_num(inflight_attempt)).astype(np.int64)
        last_attempt = prior + cfg.max_attempts
        quotes = self._quote_batch(chunk, src, attempt)
        keys = quotes.trade_key
        trade_ids = chunk.column("trade_id").combine_chunks()
        deal_ids = pc.binary_join_element_wise(
            self.prefix, pc.cast(chunk.column("src_row"), pa.string()), ""
        ).combine_chunks()

        states = np.full(n, CODE_OF[T.PENDING], dtype=np.int8)
        failure = np.full(n, NONE, dtype=np.int8)
        quote_id = np.zeros(n, dtype=np.int64)
        quote_rate, quote_expiry, deal_rate = (np.full(n, np.nan) for _ in range(3))
        executing_at = records.numeric(chunk, "inflight_executing_at").copy()
        quoted_at, finished_at = np.full(n, np.nan), np.full(n, np.nan)
        progress = self.job.progress
        active = np.ones(n, dtype=bool)
        wave = 0
        while active.any():
            if wave and self.backoff:
                time.sleep(self.backoff * 2 ** (wave - 1))
            wave += 1
            idx = np.flatnonzero(active)
            advance(states, active, T.EXECUTING)
            now = time.time()
            executing_at[idx] = np.where(np.isnan(executing_at[idx]), now, executing_at[idx])
            progress.chunk_state(states)
            quotes.attempt = attempt
            q = self.bank.create_quotes(quotes.take(idx), self.max_in_flight)
            now = time.time()
            retry = np.zeros(n, dtype=bool)
            ok = q.ok
            # quote refused: retry what a retry can fix, fail the rest
            self._settle(idx[~ok], q.reason_idx[~ok], attempt, last_attempt, states, failure, retry, finished_at, now)
            good = idx[ok]
            if len(good):
                # quoted: record the booking we are about to ask for, then ask
                advance(states, _mask(n, good), T.QUOTED)
                quote_id[good] = q.quote_id[ok]
                quote_rate[good] = q.quote_rate[ok]
                quote_expiry[good] = q.expires_at[ok]
                quoted_at[good] = now
                progress.chunk_state(states)
                records.write_inflight(
                    cur, self.job.run_id, src[good], attempt[good], quote_id[good], quote_rate[good],  # type: ignore[arg-type]
                    quote_expiry[good], deal_ids.take(pa.array(good)), executing_at[good], quoted_at[good],
                )  # fmt: skip
                b = self.bank.book_deals(
                    BookBatch(
                        quote_id=quote_id[good], deal_txn_id=deal_ids.take(pa.array(good)), quote_rate=quote_rate[good],
                        deal_rate=quote_rate[good], trade_key=keys[good], attempt=attempt[good],
                        trade_id=trade_ids.take(pa.array(good)), run_id=self.job.run_id,
                        batch_id=self.job.batch_id, src_row=src[good],
                    ),
                    self.max_in_flight,
                )  # fmt: skip
                booked = b.ok.copy()
                reasons = b.reason_idx.copy()
                rates = b.deal_rate.copy()
                # An unanswered booking is resolved with the bank's status before anything else.
                lost = np.flatnonzero(reasons == TIMEOUT)
                if len(lost):
                    st = self.bank.transaction_status(
                        deal_ids.take(pa.array(good[lost])), self.max_in_flight, self.job.run_id
                    )
                    found = st.status == "COMPLETED"
                    booked[lost[found]] = True
                    reasons[lost[found]] = NONE
                    rates[lost[found]] = st.deal_rate[found]
                now = time.time()
                won = good[booked]
                advance(states, _mask(n, won), T.SUCCESS)
                deal_rate[won] = rates[booked]
                finished_at[won] = now
                self._settle(
                    good[~booked], reasons[~booked], attempt, last_attempt, states, failure, retry, finished_at, now
                )
            attempt[retry] += 1
            active = retry
            progress.chunk_state(states)

        take = failure.astype(np.int64) + 1
        final = records.FinalRows(
            src_row=src, status=STATUS_OBJ[states], failure_code=CODE_OBJ[take], failure_message=MESSAGE_OBJ[take],
            retryable=RETRY_HELPS_OBJ[take], attempts=attempt, quote_id=quote_id, quote_rate=quote_rate,
            quote_expiry=quote_expiry,
            deal_txn_id=pc.if_else(pa.array(np.isnan(quoted_at)), pa.scalar(None, pa.string()), deal_ids),
            deal_rate=deal_rate, amount_zar=quotes.amount_zar, executing_at=executing_at, quoted_at=quoted_at,
            finished_at=finished_at,
        )  # fmt: skip
        records.write_final(cur, self.job.run_id, final)  # type: ignore[arg-type]
        counts = np.bincount(states, minlength=len(TRADE_CODES))
        progress.finished({TRADE_CODES[i].value: int(c) for i, c in enumerate(counts) if c})

    @staticmethod
    def _settle(
        idx: np.ndarray,
        reasons: np.ndarray,
        attempt: np.ndarray,
        last_attempt: np.ndarray,
        states: np.ndarray,
        failure: np.ndarray,
        retry: np.ndarray,
        finished_at: np.ndarray,
        now: float,
    ) -> None:
        """Trades the bank refused: back to EXECUTING for another attempt when a retry can fix it
        and attempts remain, otherwise FAILED with the bank's reason."""
        if not len(idx):
            return
        n = len(states)
        again = AUTO_RETRY[reasons.astype(np.int64) + 1] & (attempt[idx] < last_attempt[idx])
        advance(states, _mask(n, idx[again]), T.EXECUTING)
        retry[idx[again]] = True
        give_up = idx[~again]
        failure[give_up] = reasons[~again]
        advance(states, _mask(n, give_up), T.FAILED)
        finished_at[give_up] = now


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    return mask


def require_job(engine: Engine, run_id: int) -> Job:
    job = engine.job(run_id)
    if job is None:
        raise NotFoundError(f"Run {run_id} is not running in this process.")
    return job
