"""The execution engine: runs a batch through quote -> book in a worker thread.

One engine serves the app, the CLI and notebooks. Trades move in chunks: each step (quote,
book, status) is one bank call for the whole chunk and each state change is one bulk write,
so a million trades never cost a million round-trips. Determinism comes from the bank model;
the engine only decides what to ask next.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from fxbatch.bank import dealids
from fxbatch.bank.model import check_settings
from fxbatch.bank.port import Bank
from fxbatch.bank.simulated import SimulatedBank
from fxbatch.calendars import trading_date
from fxbatch.engine import records
from fxbatch.engine.by_hand import HandSettlement
from fxbatch.engine.jobs import Job, Progress
from fxbatch.engine.worker import Worker, write_cancelled
from fxbatch.errors import ConflictError, SettingsError, rows_text
from fxbatch.models import RunConfig, RunStatus, RunSummary, TradeStatus, same_bank
from fxbatch.rates import RateTable
from fxbatch.settings import Settings, load_settings
from fxbatch.store import Store

__all__ = ["Engine", "Job", "Progress"]

BankFactory = Callable[[RunConfig], Bank]


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
        self.db_key = str(store.path.resolve()) if store.path else f"memory:{id(store)}"

    def trading_date(self) -> date:
        """The desk's today for a new run (``FXBATCH_TODAY`` overrides it)."""
        return trading_date(self.settings.today if self.settings is not None else None)

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
            return self._jobs.get((self.db_key, run_id))

    def _executing(self, run_id: int) -> bool:
        """A job of this process executes the run. A job that has ended does not, even when the
        stored run says RUNNING (a backup taken while it ran was restored; a close gave up on it)."""
        job = self.job(run_id)
        return job is not None and job.running

    def active_jobs(self) -> list[Job]:
        with self._registry_lock:
            return [j for (db, _), j in self._jobs.items() if db == self.db_key and j.running]

    def recover(self) -> list[int]:
        """Runs left RUNNING by a process that died become INTERRUPTED (resumable)."""
        cur = self.store.cursor()
        found = []
        for run_id in records.unfinished_runs(cur):
            if not self._executing(run_id):
                records.set_run_status(cur, run_id, RunStatus.INTERRUPTED, error="the process running it stopped")
                found.append(run_id)
        return found

    # -- starting ------------------------------------------------------------------
    def start(self, batch_id: int, config: RunConfig | None = None) -> Job:
        """Create a run of ``batch_id`` and execute it in the background; returns at once."""
        config = config or RunConfig()
        check_settings(config.bank, simulated=config.bank_url is None)
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
            sent_to = parent.config.bank_url
            if sent_to and not same_bank(config.bank_url, sent_to):
                # Its failures are the bank's: retried on the simulated bank (or another bank) they
                # would look booked while the bank that refused them books nothing.
                raise ConflictError(
                    f"Run {config.retry_of_run} ran against the bank at {sent_to}: retry its failed trades at that "
                    f"bank (CLI: --bank {sent_to}; API: bank_url), not "
                    + (f"at {config.bank_url}." if config.bank_url else "on the simulated bank.")
                )
        with self._registry_lock:
            self._refuse_if_running(batch_id)
            if config.retry_of_run is not None:
                # Each retry has deal ids of its own: a second retry of one run would book again
                # what the first booked. Its failures are the next retry's.
                earlier = cur.execute(
                    "SELECT max(run_id) FROM runs WHERE retry_of_run = ?", [config.retry_of_run]
                ).fetchall()[0][0]
                if earlier is not None:
                    raise ConflictError(
                        f"Run {config.retry_of_run} was retried already, by run {earlier}: retrying it again would "
                        f"book a second time what run {earlier} booked. Retry the failed trades of run {earlier} "
                        f"instead (CLI: --retry-failed-of {earlier}), or resume it if it was interrupted."
                    )
            trades = records.count_scope(self.store, batch_id, config)
            if trades == 0:
                what = f"run {config.retry_of_run} has no FAILED trades" if config.retry_of_run else "it has no trades"
                raise ConflictError(f"Nothing to run for batch {batch_id}: {what}.")
            with _closed_on_error(self.bank_factory(config)) as bank:
                run_id = records.create_run(
                    self.store, batch_id, trades, config, self.trading_date(), frozenset(self.rates.pairs)
                )
                return self._launch(run_id, batch_id, trades, config, bank, fresh=True)

    def resume(self, run_id: int, bank_url: str | None = None) -> Job:
        """Finish an INTERRUPTED run: reconcile in-flight bookings, then run the rest."""
        summary = records.get_run(self.store, run_id)
        if summary.status is RunStatus.RUNNING and not self._executing(run_id):
            self.recover()
            summary = records.get_run(self.store, run_id)
        if summary.status is not RunStatus.INTERRUPTED:
            raise ConflictError(f"Run {run_id} is {summary.status.value}; only an INTERRUPTED run can be resumed.")
        config = summary.config
        if bank_url is not None:
            config = config.model_validate(
                {**config.model_dump(), "bank_url": bank_url}
            )  # validated, unlike model_copy ('' becomes None: the simulated bank)
        moved = not same_bank(config.bank_url, summary.config.bank_url)
        refuse_other_kind(run_id, summary.config.bank_url, config.bank_url)
        with self._registry_lock:
            self._refuse_if_running(summary.batch_id)
            cur = self.store.cursor()
            if (now := records.run_status(cur, run_id)) is not RunStatus.INTERRUPTED:  # cancelled meanwhile
                raise ConflictError(f"Run {run_id} is {now.value}; only an INTERRUPTED run can be resumed.")
            if moved and (unsettled := records.unsettled_bookings(cur, run_id)):
                raise ConflictError(
                    f"Run {run_id} has {unsettled:,} booking(s) asked of {_bank_name(summary.config.bank_url)} and "
                    f"never answered: that bank may have booked them, and only its status settles them. Resume the "
                    f"run against it first; {_bank_name(config.bank_url)} would book them a second time."
                )
            with _closed_on_error(self.bank_factory(config)) as bank:
                if moved:  # a later resume or cancel asks the bank the run went on with
                    records.set_run_config(cur, run_id, config)
                return self._launch(run_id, summary.batch_id, summary.trades, config, bank)

    def cancel(self, run_id: int) -> Job | None:
        """Cancel a run: an executing one stops sending at once (and ends on its own thread); an
        INTERRUPTED one has its unfinished trades CANCELLED. When the INTERRUPTED run left bookings
        unanswered, the bank is asked about them first, by a job returned here (not waited for);
        otherwise None."""
        # Under the registry lock: a resume starting at the same moment either runs first (its
        # job is then cancelled) or finds the run CANCELLED, never both writing its trades.
        with self._registry_lock:
            job = self._jobs.get((self.db_key, run_id))
            if job is not None and job.running:
                job.cancel()
                return None
            summary = records.get_run(self.store, run_id)
            if summary.status is not RunStatus.INTERRUPTED:
                raise ConflictError(f"Run {run_id} is {summary.status.value}; there is nothing to cancel.")
            self._refuse_if_running(summary.batch_id)
            if _cancel_rest(self.store, self.rates, run_id, summary):
                return None
            # Bookings were asked for and never answered: the bank may have made them. The bank's
            # status settles them first (booked ones end SUCCESS), in a run that sends no quote or
            # booking; the rest end CANCELLED (a booking still PENDING keeps the run INTERRUPTED).
            with _closed_on_error(self.bank_factory(summary.config)) as bank:
                return self._launch(run_id, summary.batch_id, summary.trades, summary.config, bank, cancel=True)

    def settle(
        self, run_id: int, booked: Iterable[int], not_booked: Iterable[int], message: str,
        *, quotes: dict[int, int] | None = None,
    ) -> Job:  # fmt: skip
        """Settle bookings in doubt of an INTERRUPTED run by hand (``fxbatch.engine.by_hand``).

        ``booked`` and ``not_booked`` are source rows of trades whose booking is in doubt (see
        ``records.bookings_in_doubt``); ``message`` becomes the not-booked trades' failure message.
        ``quotes`` (row -> quote id, as ``check_settlement`` gave them): each booking must still be
        in doubt with that quote (a settlement proposed earlier applies to what was proposed only).
        Nothing is sent to any bank. The run ends (its final status) when nothing else is left to
        do, else it stays INTERRUPTED. Returns the settling job (already finished).
        """
        yes, no = [int(r) for r in booked], [int(r) for r in not_booked]
        self._recover_if_left(run_id)
        with self._registry_lock:
            named = self._check_settlement(run_id, yes, no)
            if quotes is not None and (moved := sorted(r for r, q in named.items() if quotes.get(r) != q)):
                raise ConflictError(
                    f"Row(s) {rows_text(moved)} of run {run_id} were sent to the bank again since the settlement was "
                    "proposed: what the bank's dealers said was of another booking. Propose it again."
                )
            cur = self.store.cursor()
            summary = records.get_run(self.store, run_id)
            ids = dealids.deal_ids(records.deal_prefix(cur, run_id), pa.array(yes + no, pa.int64())).to_pylist()
            bank = HandSettlement(dict(zip(ids, [True] * len(yes) + [False] * len(no), strict=True)), message)
            job = self._launch(run_id, summary.batch_id, summary.trades, summary.config, bank, settling=True)
            # Waited for under the lock (it sends nothing: milliseconds), so a cancel or resume
            # arriving meanwhile finds the run as the settlement left it, never a job at its end.
            job.wait()
        return job

    def check_settlement(self, run_id: int, booked: Iterable[int], not_booked: Iterable[int]) -> dict[int, int]:
        """What ``settle`` would refuse, without settling: returns the quote id each named booking is
        in doubt with (row -> quote id)."""
        self._recover_if_left(run_id)
        with self._registry_lock:
            return self._check_settlement(run_id, [int(r) for r in booked], [int(r) for r in not_booked])

    def _recover_if_left(self, run_id: int) -> None:
        if records.get_run(self.store, run_id).status is RunStatus.RUNNING and not self._executing(run_id):
            self.recover()  # a run its process left RUNNING is INTERRUPTED

    def _check_settlement(self, run_id: int, yes: list[int], no: list[int]) -> dict[int, int]:
        """Under the registry lock: the rows must be named once each, of an INTERRUPTED run, and in doubt."""
        if not yes and not no:
            raise SettingsError(f"Nothing to settle for run {run_id}: name the rows booked or not booked.")
        if twice := sorted(r for r, n in Counter(yes + no).items() if n > 1):
            raise SettingsError(f"Row(s) {rows_text(twice)} of run {run_id} are named more than once.")
        summary = records.get_run(self.store, run_id)
        if summary.status is not RunStatus.INTERRUPTED:
            raise ConflictError(
                f"Run {run_id} is {summary.status.value}; only an INTERRUPTED run has bookings in doubt to settle."
            )
        self._refuse_if_running(summary.batch_id)
        doubt = records.doubt_quotes(self.store.cursor(), run_id)
        if stray := sorted(set(yes + no) - set(doubt)):
            raise ConflictError(
                f"Row(s) {rows_text(stray)} of run {run_id} have no booking in doubt"
                f"{' (its bookings in doubt: rows ' + rows_text(sorted(doubt)) + ')' if doubt else ''}: only a "
                "booking the bank's status could not settle is settled by hand (a resume asks the bank first)."
            )
        return {r: doubt[r] for r in yes + no}

    @contextlib.contextmanager
    def batch_at_rest(self, batch_id: int, doing: str) -> Iterator[None]:
        """Hold off every start and resume while the caller ``doing`` something to a batch none of
        whose runs executes (ConflictError naming the run otherwise)."""
        with self._registry_lock:
            if (job := self._running(batch_id)) is not None:
                raise ConflictError(
                    f"Batch {batch_id} is running (run {job.run_id}); cancel the run or wait for it to end before "
                    f"{doing}."
                )
            yield

    def _running(self, batch_id: int) -> Job | None:
        """The job executing a run of ``batch_id`` in this process (under the registry lock)."""
        return next(
            (j for (db, _), j in self._jobs.items() if db == self.db_key and j.batch_id == batch_id and j.running),
            None,
        )

    def _refuse_if_running(self, batch_id: int) -> None:
        job = self._running(batch_id)
        if job is None:
            return
        if job.cancel_requested.is_set():
            raise ConflictError(
                f"Run {job.run_id} of batch {batch_id} is still stopping after its cancel (the bank's calls in "
                "flight are answered first, its open quotes released); start the batch again in a moment."
            )
        raise ConflictError(
            f"Batch {batch_id} is already running (run {job.run_id}); wait for it to finish or cancel it."
        )

    def _launch(
        self,
        run_id: int,
        batch_id: int,
        trades: int,
        config: RunConfig,
        bank: Bank,
        *,
        fresh: bool = False,
        cancel: bool = False,
        settling: bool = False,
    ) -> Job:
        cur = self.store.cursor()
        records.set_run_status(cur, run_id, RunStatus.RUNNING, started=True)
        if fresh:  # nothing is final yet: no need to count (a query while no bank call is out)
            counts = {s.value: 0 for s in TradeStatus} | {TradeStatus.PENDING.value: trades}
        else:
            counts = records.count_outcomes(cur, run_id).counts
        job = Job(run_id, batch_id, Progress(run_id, trades, counts))
        self._jobs[(self.db_key, run_id)] = job
        if cancel:  # settles what the bank already has, sends nothing new (see Worker.__init__)
            job.cancel_requested.set()
        if settling:  # settles the bookings in doubt and executes nothing
            job.stop_requested.set()
        worker = Worker(self.store, self.rates, job, config, bank, fresh=fresh, settling=settling)
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


def refuse_other_kind(run_id: int, was: str | None, now: str | None) -> None:
    """One run, one kind of bank (ConflictError otherwise): a run of real orders (``was``: its HTTP
    bank) finished on the simulated bank would show deals the bank never made; simulated trades
    finished at a bank (``now``) would be real orders. Another address of an HTTP bank is fine."""
    if (was is None) == (now is None):
        return
    raise ConflictError(
        f"Run {run_id} sends its orders to {_bank_name(was)}: it cannot go on at the simulated bank, whose "
        "bookings would show as the run's deals while that bank made none. Resume it at that bank (another of "
        "its addresses: --bank URL), or cancel it."
        if was
        else f"Run {run_id} runs on the simulated bank: it cannot go on at {_bank_name(now)} (real orders in a "
        "run of simulated ones). Cancel it, and start a run against that bank."
    )


def _bank_name(url: str | None) -> str:
    """The bank a run talks to, as messages name it."""
    return f"the HTTP bank at {url.rstrip('/')}" if url else "the simulated bank"


def _cancel_rest(store: Store, rates: RateTable, run_id: int, summary: RunSummary) -> bool:
    """Cancel an INTERRUPTED run: trades not yet final end CANCELLED. False (nothing written)
    when some have a booking in flight: the bank's status must settle those first."""
    cur = store.cursor()
    todo = records.load_todo(
        cur, run_id, summary.batch_id, summary.config, rates.zar_factors(),
        trade_date=summary.trade_date, pairs=frozenset(rates.pairs),
    )  # fmt: skip
    if records.open_bookings(todo).any():
        return False
    write_cancelled(cur, run_id, todo)
    records.set_run_status(cur, run_id, RunStatus.CANCELLED, finished=True)
    return True


@contextlib.contextmanager
def _closed_on_error(bank: Bank) -> Iterator[Bank]:
    """``bank``, closed if the block raises: until a run's worker thread has started (and owns
    it, closing it when the run ends), an HTTP bank's event loop thread and connections are ours."""
    try:
        yield bank
    except BaseException:
        bank.close()
        raise
