"""The one object the app, the CLI and notebooks use: ``Workbench.open()``.

>>> import fxbatch
>>> wb = fxbatch.open()              # FXBATCH_DB or data/fxbatch.duckdb
>>> result = wb.load("trades.csv")
>>> wb.trades(result.batch_id).head()
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pandas as pd

from fxbatch import analytics, approvals, audit, batches, export, moneyview, settlements
from fxbatch.access import Access, Principal, Role, acting
from fxbatch.access import current as current_principal
from fxbatch.approvals import Approval
from fxbatch.audit import AuditCheck
from fxbatch.client import Client, connect
from fxbatch.engine import Engine, Job
from fxbatch.engine import records as run_records
from fxbatch.engine.core import refuse_other_kind
from fxbatch.errors import ConflictError, ForbiddenError, FxBatchError, ServerError, SettingsError
from fxbatch.ingest import Fixes
from fxbatch.masking import export_path
from fxbatch.models import (
    SEED_MAX,
    BatchInfo,
    CheckReport,
    LoadResult,
    RunConfig,
    RunProgress,
    RunSummary,
    same_bank,
)
from fxbatch.moneyview import RunMoney
from fxbatch.rates import RateTable
from fxbatch.serving import read_record
from fxbatch.settings import Settings, load_settings
from fxbatch.settlements import Settlement
from fxbatch.store import Store
from fxbatch.whatif.compare import compare_runs, differing_trades
from fxbatch.whatif.models import Sweep, SweepInfo
from fxbatch.whatif.sweep import (
    SweepCancel,
    SweepGrid,
    check_base,
    check_size,
    get_sweep,
    list_sweeps,
    make_executor,
    reserve_sweep_id,
    run_sweep,
    scenario_config,
)

# An unmasked view read again by the same person within this many seconds is not recorded again.
UNMASK_QUIET_S = 600.0
# A note settling bookings by hand (kept on each not-booked trade and on the audit trail).
NOTE_MAX = 500
# The approvals listing reuses a batch's fingerprint this long (a run's start always takes it afresh).
FINGERPRINT_REUSE_S = 30.0


class Workbench:
    """Settings + database + rate table, and the operations on them."""

    def __init__(
        self, settings: Settings, store: Store, rates: RateTable, *, actor: str | None = None, login: bool = False
    ) -> None:
        self.settings = settings
        self.store = store
        self.rates = rates
        # Who the audit trail records (the OS user; a server with login sets it per page run or
        # request with ``fxbatch.access.act_as``).
        self.actor = actor or audit.os_user()
        # Who may do what: without login the one local user may do everything; with login each
        # action checks the acting principal's role (``fxbatch.access``).
        self.access = Access(store, login=login, first_admin=settings.admin_email, token_days=settings.token_days)
        self._unmask_seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        self._memo_lock = threading.Lock()  # guards the memos here
        self._fingerprints: dict[int, tuple[float, str]] = {}  # batch -> (when, fingerprint), listing only
        # batch -> notional in ZAR at mid: a batch's trades never change once loaded, and batch ids are
        # never reused, so each is summed once (every page listed the batches by summing every trade).
        self._notionals: dict[int, float] = {}
        self.engine = Engine(store, rates, settings=settings)
        self.whatif = _WhatIf(self)

    @classmethod
    def open(
        cls,
        db: Path | str | None = None,
        settings: Settings | None = None,
        *,
        seed_sample: bool = False,
        server: str | None = None,
    ) -> Workbench | Client:
        """The workbench on the database at ``db`` or ``settings.db``, wherever it is held.

        When a running fxbatch server holds that database (it records its address beside the
        file), or ``server`` / ``FXBATCH_SERVER`` names one, this is a ``Client`` of that server:
        the same methods and result types over its HTTP API. Otherwise the file is opened here
        (created and migrated if needed; with ``seed_sample`` a new database gets the sample batch).
        """
        settings = settings or load_settings()
        if db is not None:
            settings = settings.model_copy(update={"db": Path(db)})
        url = server or settings.server
        if url:
            return connect(url, token=_token(settings))
        return _held_by_server(settings) or cls.open_local(settings=settings, seed_sample=seed_sample)

    @classmethod
    def open_local(
        cls,
        db: Path | str | None = None,
        settings: Settings | None = None,
        *,
        seed_sample: bool = False,
        actor: str | None = None,
        login: bool = False,
    ) -> Workbench:
        """Open the database file in this process (what a server does); never a client. ``login``:
        the server signs users in, and every action needs a principal with the role it takes."""
        settings = settings or load_settings()
        if db is not None:
            settings = settings.model_copy(update={"db": Path(db)})
        rates = RateTable.from_csv(settings.rates_file)
        store = Store(settings.db)
        try:
            wb = cls(settings, store, rates, actor=actor, login=login)
        except BaseException:
            store.close()
            raise
        wb.engine.recover()  # runs left RUNNING by a process that died become INTERRUPTED
        audit.ensure_head(store)
        if seed_sample and store.created and settings.load_sample_on_create:
            with acting(Principal(f"{audit.os_user()} (first start)", Role.ADMIN, "system")):
                wb.load(settings.sample_file, name="Sample batch")
        return wb

    def __repr__(self) -> str:
        return f"fxbatch.Workbench({str(self.settings.db)!r})"

    def close(self) -> None:
        """Stop runs in progress (they stay resumable) and background sweeps (nothing of them is
        stored), then close the database."""
        self.engine.close()
        self.whatif.stop_all()
        self.store.close()

    def __enter__(self) -> Workbench:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- batches ---------------------------------------------------------------
    def load(
        self,
        path: Path | str,
        *,
        name: str | None = None,
        sheet: str | None = None,
        column_map: Mapping[str, str] | None = None,
        fixes: Fixes | None = None,
        today: date | None = None,
        display_name: str | None = None,
    ) -> LoadResult:
        """Validate a CSV/XLSX/Parquet file and store its good rows as a new batch.

        ``column_map`` maps a file header to a field ('' ignores the column); ``fixes`` corrects
        rejected rows first: ``{row: {field: new text}}`` with the file's row numbers.
        """
        shown = display_name or Path(path).name
        doing = "correct a batch" if fixes else "load a batch"
        with self._audited("correct" if fixes else "load", f"file:{shown}", needs=(Role.ANALYST, doing),
                           file=shown) as extra:  # fmt: skip
            result = batches.load_file(
                self.store,
                self.settings,
                self.rates,
                path,
                name=name,
                sheet=sheet,
                column_map=column_map,
                fixes=fixes,
                today=today,
                display_name=display_name,
            )
            extra.update(object=f"batch:{result.batch_id}", batch_id=result.batch_id, fingerprint=result.fingerprint,
                         accepted=result.accepted, rejected=result.rejected, corrected=len(result.fixed))  # fmt: skip
        return result

    def check(
        self,
        path: Path | str,
        *,
        sheet: str | None = None,
        column_map: Mapping[str, str] | None = None,
        fixes: Fixes | None = None,
        today: date | None = None,
        display_name: str | None = None,
        limit: int = 1000,
    ) -> CheckReport:
        """Validate a file as ``load`` would, without creating a batch: counts, mapping, and
        the first ``limit`` rejected rows with their cell texts, to correct and check again."""
        self._need(Role.ANALYST, "check a file for loading")
        return batches.check_report(
            self.store,
            self.settings,
            self.rates,
            path,
            sheet=sheet,
            column_map=column_map,
            fixes=fixes,
            today=today,
            display_name=display_name,
            limit=limit,
        )

    def batches(self) -> list[BatchInfo]:
        """Every batch, newest first, with its notional in ZAR at mid."""
        found = batches.list_batches(self.store)
        notional = self._notional([b.batch_id for b in found])
        return [b.model_copy(update={"notional_zar": notional.get(b.batch_id, 0.0)}) for b in found]

    def _notional(self, batch_ids: list[int]) -> dict[int, float]:
        """The batches' notionals in ZAR at mid, each summed over its trades once (``_notionals``)."""
        with self._memo_lock:
            known = {b: self._notionals[b] for b in batch_ids if b in self._notionals}
        missing = [b for b in batch_ids if b not in known]
        if missing:
            summed = moneyview.batch_notional(self.store, self.rates.zar_factors(), missing)
            fresh = {b: summed.get(b, 0.0) for b in missing}
            with self._memo_lock:
                self._notionals.update(fresh)
            known |= fresh
        return known

    def batches_df(self) -> pd.DataFrame:
        rows = [b.model_dump() for b in self.batches()]
        return pd.DataFrame(rows, columns=list(BatchInfo.model_fields))

    def batch(self, batch_id: int) -> BatchInfo:
        found = batches.get_batch(self.store, batch_id)
        return found.model_copy(update={"notional_zar": self._notional([batch_id])[batch_id]})

    def trades(self, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False) -> pd.DataFrame:
        """A batch's trades in row order; ``limit``/``offset`` page through big batches.
        Account numbers show their last 4 digits unless ``unmask`` (``fxbatch.masking``)."""
        with self._unmasked(unmask, f"batch:{batch_id}", view="trades", limit=limit, offset=offset):
            return batches.batch_trades(self.store, batch_id, limit, offset, unmask=unmask)

    def corrections(
        self, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
    ) -> pd.DataFrame:
        """Cells corrected before loading: row, field, original (the file's text), corrected (accounts masked)."""
        with self._unmasked(unmask, f"batch:{batch_id}", view="corrections", limit=limit, offset=offset):
            return batches.batch_corrections(self.store, batch_id, limit, offset, unmask=unmask)

    def rejections(
        self, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
    ) -> pd.DataFrame:
        """A batch's rejections in row order; a rejected account is masked unless ``unmask``."""
        with self._unmasked(unmask, f"batch:{batch_id}", view="rejections", limit=limit, offset=offset):
            return batches.batch_rejections(self.store, batch_id, limit, offset, unmask=unmask)

    # -- runs ------------------------------------------------------------------
    def start_run(
        self, batch_id: int, config: RunConfig | None = None, *, approval: int | None = None, **overrides: object
    ) -> Job:
        """Start a run in the background and return its job at once (``wb.progress(job.run_id)``).

        ``overrides`` set RunConfig fields (``seed=7``) or bank settings (``success_rate=0.8``).
        With login, a run against an HTTP bank needs ``approval``: the id of an approved request
        for this batch with these settings (``request_run``); it starts this one run.
        """
        config = make_config(self._retry_base(config, overrides), **overrides)
        action = "retry" if config.retry_of_run is not None else "run"
        params = run_params(batch_id, config)
        if approval is not None:
            params["approval_id"] = approval
        with self._audited(action, f"batch:{batch_id}", needs=(Role.ANALYST, "start a run"), **params) as extra:
            claimed = self._claim_approval(batch_id, config, approval)
            try:
                job = self.engine.start(batch_id, config)
            except BaseException:
                if claimed is not None:
                    approvals.bind(self.store, claimed, None)
                raise
            if claimed is not None:
                approvals.bind(self.store, claimed, job.run_id)
            extra.update(object=f"run:{job.run_id}", run_id=job.run_id)
        return job

    def _retry_base(self, config: RunConfig | None, overrides: Mapping[str, object]) -> RunConfig | None:
        """The settings a retry of a run's failed trades (``retry_of_run``, no ``config``) starts from:
        that run's (not the sweep it was promoted from), with the next seed unless one is given. The
        simulated bank draws its answers by seed and trade, so the same seed would fail every trade
        fated to fail again; a bank asked again later answers afresh, and so does the next seed."""
        parent_id = overrides.get("retry_of_run")
        if config is not None or parent_id is None or not self.access.may(Role.ANALYST):
            return config  # one who may not run is refused for the role first (on the audit trail)
        parent = self.run_summary(int(str(parent_id))).config
        update: dict[str, object] = {"sweep_id": None, "scenario": None}
        simulated = not (overrides.get("bank_url") or parent.bank_url)
        if overrides.get("seed") is None and simulated:
            update["seed"] = retry_seed(parent.seed)
        return parent.model_copy(update=update)

    def run(
        self, batch_id: int, config: RunConfig | None = None, *, approval: int | None = None, **overrides: object
    ) -> RunSummary:
        """Run a batch and wait for the end (``approval`` as in ``start_run``)."""
        job = self.start_run(batch_id, config, approval=approval, **overrides)
        job.wait()
        return self.run_summary(job.run_id)

    def start_approved(self, approval_id: int) -> Job:
        """Start exactly the run an approval approved (its batch and settings)."""
        found = approvals.get(self.store, approval_id)
        return self.start_run(found.batch_id, found.config, approval=approval_id)

    def _claim_approval(self, batch_id: int, config: RunConfig, approval: int | None) -> int | None:
        """The approval this run uses (taken for it), None when it needs none; refused when it needs one."""
        if approval is None:
            if config.bank_url and self.access.four_eyes:
                where = (
                    "" if self.access.login else
                    " This is a team's database (its people sign in on the fxbatch server): start the server and "
                    "sign in to request and approve it."
                )  # fmt: skip
                raise ForbiddenError(
                    f"A run against the HTTP bank {config.bank_url} moves real money: it needs a second person's "
                    "approval. Request it (Approvals page, `python -m fxbatch request-run`, POST /api/v1/runs:request), "
                    f"then start it with the approval's id once an approver has approved it.{where}"
                )
            return None
        approvals.claim(self.store, approval, batch_id, config, self.settings,
                        approver=self._is_approver if self.access.four_eyes else None)  # fmt: skip
        return approval

    def _is_approver(self, email: str) -> bool:
        role = self.access.role_of(email)
        return bool(role and role.allows(Role.APPROVER))

    # -- four-eyes approvals ----------------------------------------------------------
    def request_run(self, batch_id: int, config: RunConfig | None = None, **overrides: object) -> Approval:
        """Ask for a run against an HTTP bank; an approver other than you approves it (``approve``)."""
        config = make_config(self._retry_base(config, overrides), **overrides)
        with self._audited("run.request", f"batch:{batch_id}", needs=(Role.ANALYST, "request a real-money run"),
                           **run_params(batch_id, config)) as extra:  # fmt: skip
            who = self.access.principal()
            found = approvals.request(self.store, batch_id, config, self.settings, who.name)
            extra.update(object=f"approval:{found.approval_id}", approval_id=found.approval_id, trades=found.trades)
        return found

    def approve(self, approval_id: int) -> Approval:
        """Approve a pending request (an approver who did not request it)."""
        return self._decide(approval_id, approve=True, reason="")

    def reject(self, approval_id: int, reason: str) -> Approval:
        """Reject a pending request, saying why (an approver who did not request it)."""
        return self._decide(approval_id, approve=False, reason=reason)

    def _decide(self, approval_id: int, *, approve: bool, reason: str) -> Approval:
        action = "run.approve" if approve else "run.reject"
        with self._audited(action, f"approval:{approval_id}", needs=(Role.APPROVER, "approve or reject a real-money run"),
                           approval_id=approval_id, reason=reason or None):  # fmt: skip
            self._refuse_offline("An approval")
            who = self.access.principal()
            found = approvals.get(self.store, approval_id)
            if self.access.four_eyes and found.requested_by == who.name:
                raise ForbiddenError(
                    f"You requested approval {approval_id} yourself: another approver must "
                    f"{'approve' if approve else 'reject'} it (four eyes)."
                )
            return approvals.decide(self.store, approval_id, self.settings, who.name, approve, reason)

    def approvals(self, status: str | None = None) -> list[Approval]:
        """Requests for real-money runs, newest first; open ones that no longer match show as void.

        A batch's fingerprint (1.3 s for a million trades) is reused for ``FINGERPRINT_REUSE_S`` by
        this listing only, so a page that reruns does not hash the batch each time; starting a
        run always hashes it afresh."""
        now = time.monotonic()
        with self._memo_lock:
            known = {b: fp for b, (at, fp) in self._fingerprints.items() if now - at < FINGERPRINT_REUSE_S}
        taken = dict(known)
        found = approvals.list_approvals(self.store, self.settings, status, fingerprints=taken)
        with self._memo_lock:
            self._fingerprints.update({b: (now, fp) for b, fp in taken.items() if b not in known})
        return found

    def approval(self, approval_id: int) -> Approval:
        return approvals.get(self.store, approval_id, self.settings)

    def start_resume(self, run_id: int, *, bank_url: str | None = None) -> Job:
        """Go on with an INTERRUPTED run in the background and return its job at once; ``bank_url``
        points it at another HTTP bank address ('' = the in-process simulated bank), None keeps the run's own."""
        bank = {} if bank_url is None else {"bank": "http" if bank_url else "simulated", "bank_url": bank_url or None}
        with self._audited("resume", f"run:{run_id}", needs=(Role.ANALYST, "resume a run"), run_id=run_id, **bank):
            self._check_resume_approval(run_id, bank_url)
            return self.engine.resume(run_id, bank_url=bank_url)

    def _check_resume_approval(self, run_id: int, bank_url: str | None) -> None:
        """A run goes on at the kind of bank it started at; with four eyes (``Access.four_eyes``),
        against an HTTP bank only under the approval that started it, at its address."""
        own = self.run_summary(run_id).config.bank_url
        target = own if bank_url is None else (bank_url or None)
        refuse_other_kind(run_id, own, target)
        if not self.access.four_eyes or target is None:
            return
        # The address the approval named (a run may have gone on at another address since).
        approved = approvals.approval_of_run(self.store, run_id)
        named = approvals.get(self.store, approved).bank_url if approved is not None else None
        if approved is None or named is None or not same_bank(target, named):
            raise ForbiddenError(
                f"Run {run_id} would go on against the HTTP bank {target}, which no approval covers: resume it against "
                "the bank it was approved for, or request a new run."
            )
        why = approvals.still_holds(self.store, approved, self.settings)
        if why:
            raise ForbiddenError(
                f"Run {run_id} cannot go on against the HTTP bank: its approval {approved} no longer holds ({why}). "
                "Cancel it and request a new run."
            )

    def resume(self, run_id: int, *, bank_url: str | None = None) -> RunSummary:
        """Finish an INTERRUPTED run and wait for the end (``bank_url`` as in ``start_resume``)."""
        job = self.start_resume(run_id, bank_url=bank_url)
        job.wait()
        return self.run_summary(run_id)

    def cancel(self, run_id: int, *, wait: bool = True) -> None:
        """Cancel a run (see ``Engine.cancel``): an executing run stops sending at once and ends in
        the background. An INTERRUPTED run that left bookings unanswered asks the bank about them
        first (the run shows RUNNING meanwhile, up to the bank's unreachable window if it is down):
        ``wait`` waits for that."""
        with self._audited("cancel", f"run:{run_id}", needs=(Role.ANALYST, "cancel a run"), run_id=run_id):
            job = self.engine.cancel(run_id)
        if wait and job is not None:
            job.wait()

    def bookings_in_doubt(self, run_id: int) -> pd.DataFrame:
        """Trades of the run whose booking was asked for and never answered (the bank's status could
        not settle them, or the bank could not be reached to ask): row, trade, client, pair, side,
        amount, value date, deal transaction id, and the quote it was sent with. Empty for a run with none."""
        run_records.get_run(self.store, run_id)  # NotFoundError for an unknown run
        return run_records.bookings_in_doubt(self.store.cursor(), run_id)

    def settle_by_hand(
        self, run_id: int, *, booked: Iterable[int] = (), not_booked: Iterable[int] = (), note: str
    ) -> RunSummary:
        """Settle bookings in doubt of an INTERRUPTED run with what the bank's dealers said: the
        trades at rows ``booked`` end SUCCESS with the quote they were sent with, those at rows
        ``not_booked`` end FAILED (TIMEOUT_UNKNOWN) with ``note`` (the bank's confirmation, e.g. its
        reference: required). Nothing is sent to the bank. The run ends when nothing else is left,
        else it stays INTERRUPTED (resume or cancel it). Approvers only; on the audit trail.

        Where settling needs two people (``settling_needs_two``) this is refused: propose it
        (``propose_settlement``) and another approver confirms it."""
        yes, no = sorted(int(r) for r in booked), sorted(int(r) for r in not_booked)
        with self._audited("settle", f"run:{run_id}", needs=(Role.APPROVER, "settle a booking in doubt by hand"),
                           run_id=run_id, booked=yes, not_booked=no, note=_one_line(note)) as extra:  # fmt: skip
            if self.settling_needs_two(run_id):  # NotFoundError first
                url = self.run_summary(run_id).config.bank_url
                raise ForbiddenError(
                    f"Settling run {run_id}'s bookings in doubt (the HTTP bank {url}) moves real money: it needs a "
                    "second approver. Propose the settlement (Run detail, `python -m fxbatch settle ... --propose`, "
                    f"POST /api/v1/runs/{run_id}/settlements); an approver other than you confirms it."
                )
            text = _settle_note(note)
            who = audit.current_actor(self.actor)
            job = self.engine.settle(run_id, yes, no, f"Not booked at the bank, settled by hand by {who}: {text}")
            summary = self.run_summary(run_id)
            extra.update(status=summary.status.value, error=job.progress.error)
        return summary

    def settling_needs_two(self, run_id: int) -> bool:
        """Whether settling the run's bookings in doubt by hand needs a second approver: with login
        (or on a team's database: ``Access.four_eyes``), for a run against an HTTP bank (real money),
        as starting such a run does."""
        url = self.run_summary(run_id).config.bank_url  # NotFoundError for an unknown run
        return bool(url and self.access.four_eyes)

    def propose_settlement(
        self, run_id: int, *, booked: Iterable[int] = (), not_booked: Iterable[int] = (), note: str
    ) -> Settlement:
        """Propose settling bookings in doubt by hand (as ``settle_by_hand``); an approver other than
        you confirms it (``confirm_settlement``), which applies it, or rejects it. The proposal is
        bound to the bookings as they are in doubt now: it is void once one of them is settled or
        sent again."""
        yes, no = sorted(int(r) for r in booked), sorted(int(r) for r in not_booked)
        with self._audited("settle.propose", f"run:{run_id}", needs=(Role.ANALYST, "propose settling bookings in "
                           "doubt"), run_id=run_id, booked=yes, not_booked=no, note=_one_line(note)) as extra:  # fmt: skip
            self.run_summary(run_id)  # NotFoundError first
            self._refuse_offline("A settlement of bookings in doubt")
            text = _settle_note(note)
            quotes = self.engine.check_settlement(run_id, yes, no)
            found = settlements.propose(self.store, run_id, quotes, yes, text, self.access.principal().name)
            extra.update(object=f"settlement:{found.settlement_id}", settlement_id=found.settlement_id)
        return found

    def confirm_settlement(self, settlement_id: int) -> RunSummary:
        """Confirm someone else's proposed settlement: it is applied as ``settle_by_hand`` would (the
        not-booked trades' message names both people). Refused when it is void or decided."""
        with self._audited("settle.confirm", f"settlement:{settlement_id}", needs=(Role.APPROVER, "confirm a "
                           "settlement of bookings in doubt"), settlement_id=settlement_id) as extra:  # fmt: skip
            who = self.access.principal().name
            found = self._not_mine(settlement_id, "confirm")
            extra.update(run_id=found.run_id, booked=found.booked, not_booked=found.not_booked,
                         proposed_by=found.proposed_by, note=found.note)  # fmt: skip
            taken = settlements.claim(self.store, settlement_id, who)
            message = (
                f"Not booked at the bank, settled by hand by {found.proposed_by}, confirmed by "
                f"{audit.current_actor(self.actor)}: {found.note}"
            )
            try:
                job = self.engine.settle(found.run_id, taken.booked, taken.not_booked, message, quotes=taken.quotes)
                if (
                    run_records.doubt_quotes(self.store.cursor(), found.run_id).keys() & taken.quotes.keys()
                ):  # the settling job stopped on an error: nothing it names is settled
                    raise ServerError(
                        f"Settlement {settlement_id} could not be applied ({job.progress.error}); it is pending again."
                    )
            except BaseException:
                settlements.release(self.store, settlement_id, who)
                raise
            summary = self.run_summary(found.run_id)
            extra.update(status=summary.status.value, error=job.progress.error)
        return summary

    def reject_settlement(self, settlement_id: int, reason: str) -> Settlement:
        """Reject someone else's proposed settlement, saying why (nothing is settled)."""
        with self._audited("settle.reject", f"settlement:{settlement_id}", needs=(Role.APPROVER, "reject a "
                           "settlement of bookings in doubt"), settlement_id=settlement_id, reason=reason) as extra:  # fmt: skip
            found = self._not_mine(settlement_id, "reject")
            extra.update(run_id=found.run_id)
            return settlements.reject(self.store, settlement_id, self.access.principal().name, reason)

    def _refuse_offline(self, what: str) -> None:
        """On a team's database opened without sign-in, four-eyes decisions are not taken: whoever
        opens the file acts as the OS user, whose name is not a signed-in person's (ForbiddenError)."""
        if self.access.four_eyes and not self.access.login:
            raise ForbiddenError(
                f"{what} on a team's database is decided signed in, on its fxbatch server (four eyes), not by "
                "whoever opens its file: start the server and sign in."
            )

    def _not_mine(self, settlement_id: int, doing: str) -> Settlement:
        self._refuse_offline("A settlement of bookings in doubt")
        found = settlements.get(self.store, settlement_id)
        if self._proposed_it(found):
            raise ForbiddenError(
                f"You proposed settlement {settlement_id} yourself: another approver must {doing} it (four eyes)."
            )
        return found

    def _proposed_it(self, found: Settlement) -> bool:
        """With login, the person acting proposed it (and so may not decide it)."""
        return bool(self.access.four_eyes and found.proposed_by == self.access.principal().name)

    def may_decide(self, found: Settlement) -> bool:
        """Whether the person acting may confirm or reject ``found``: an approver, not its proposer
        (pages offer the buttons only then; ``confirm_settlement`` refuses anyway)."""
        return self.access.may(Role.APPROVER) and not self._proposed_it(found)

    def settlements(self, run_id: int) -> list[Settlement]:
        """The run's proposed settlements of bookings in doubt, newest first (open ones that no
        longer match the bookings in doubt are void)."""
        self.run_summary(run_id)  # NotFoundError for an unknown run
        return settlements.for_run(self.store, run_id)

    def settlement(self, settlement_id: int) -> Settlement:
        return settlements.get(self.store, settlement_id)

    def awaiting_settlements(self) -> list[Settlement]:
        """Proposed settlements of every run waiting for an approver's decision (not void), newest first."""
        return settlements.awaiting(self.store)

    def run_summary(self, run_id: int) -> RunSummary:
        return run_records.get_run(self.store, run_id)

    def run_money(self, run_id: int) -> RunMoney:
        """The run's money: notional booked, failed, cancelled and still to go, income and income lost (ZAR)."""
        return moneyview.run_money(self.store, run_id, self.rates.mids, self.rates.zar_factors())

    def runs(self, batch_id: int | None = None) -> list[RunSummary]:
        """Every run, newest first; a batch's only (NotFoundError for an unknown batch)."""
        if batch_id is not None:
            run_records.batch_fingerprint(self.store.cursor(), batch_id)
        return run_records.list_runs(self.store, batch_id)

    def progress(self, run_id: int) -> RunProgress | None:
        """Live progress of a run started in this process (None for any other run)."""
        job = self.engine.job(run_id)
        return job.progress.snapshot(job.batch_id) if job is not None else None

    # -- batches (removal) -------------------------------------------------------
    def delete_batch(self, batch_id: int) -> None:
        """Delete a batch and everything recorded about it; refused while one of its runs executes."""
        with (
            self._audited("delete", f"batch:{batch_id}", needs=(Role.ANALYST, "delete a batch"), batch_id=batch_id),
            self.engine.batch_at_rest(batch_id, "deleting it"),  # no run starts meanwhile
        ):
            for sweep in self.whatif.running_sweeps(batch_id):
                raise ConflictError(
                    f"A what-if sweep of batch {batch_id} is running (sweep {sweep.sweep_id}); cancel it or wait for it "
                    "to end before deleting the batch."
                )
            batches.delete_batch(self.store, batch_id)

    def active_runs(self) -> list[RunProgress]:
        """Progress of the runs executing in this process, oldest first (``batch_id`` set)."""
        jobs = sorted(self.engine.active_jobs(), key=lambda j: j.run_id)
        return [j.progress.snapshot(j.batch_id) for j in jobs]

    # -- review (analytics) --------------------------------------------------------
    # Thin delegates: the queries live in fxbatch.analytics and take (store, run_id).
    def outcome_counts(self, run_id: int) -> pd.DataFrame:
        return analytics.outcome_counts(self.store, run_id)

    def failure_pareto(self, run_id: int) -> pd.DataFrame:
        return analytics.failure_pareto(self.store, run_id)

    def outcomes_by(self, run_id: int, by: str, top: int = 10) -> pd.DataFrame:
        return analytics.outcomes_by(self.store, run_id, by, top)

    def notional_by_outcome(self, run_id: int) -> pd.DataFrame:
        return analytics.notional_by_outcome(self.store, run_id)

    def income_by(self, run_id: int, by: str, top: int = 10) -> pd.DataFrame:
        """The desk's spread income in ZAR by currency pair or client (``by``: pair or client)."""
        return analytics.income_by(self.store, run_id, by, top)

    def notional_by(self, run_id: int, by: str, top: int = 10, *, failed: bool = False) -> pd.DataFrame:
        """Notional in ZAR per outcome of the top pairs or clients by notional (by failed notional when ``failed``)."""
        return analytics.notional_by(self.store, run_id, by, top, failed=failed)

    def notional_breakdown(self, run_id: int, top: int = 10) -> dict[tuple[str, bool], pd.DataFrame]:
        """``notional_by`` for pairs and clients, by notional and by failed notional, in one pass:
        keys ``("pair" | "client", failed)``."""
        return analytics.notional_breakdown(self.store, run_id, ("pair", "client"), top)

    def latency_histogram(self, run_id: int, bins: int = 30) -> pd.DataFrame:
        return analytics.latency_histogram(self.store, run_id, bins)

    def throughput(self, run_id: int) -> pd.DataFrame:
        return analytics.throughput(self.store, run_id)

    def run_trades_page(
        self, run_id: int, filters: analytics.TradeFilter | None = None, *, limit: int = 50, offset: int = 0,
        unmask: bool = False,
    ) -> tuple[pd.DataFrame, int]:  # fmt: skip
        with self._unmasked(unmask, f"run:{run_id}", view="trades", limit=limit, offset=offset):
            return analytics.trades_page(self.store, run_id, filters, limit=limit, offset=offset, unmask=unmask)

    def run_filter_choices(self, run_id: int) -> dict[str, list[str]]:
        return analytics.filter_choices(self.store, run_id)

    def trade_detail(self, run_id: int, row: int, *, unmask: bool = False) -> dict[str, Any]:
        with self._unmasked(unmask, f"run:{run_id}", view="trade", row=row):
            return analytics.trade_detail(self.store, run_id, row, unmask=unmask)

    def export_run(self, run_id: int, path: Path | str, *, unmask: bool = False) -> int:
        """A run's per-trade results to CSV/XLSX/Parquet (by the file's suffix); returns the rows written.

        Accounts are masked unless ``unmask``; an unmasked file gets ``-UNMASKED`` in its name
        (``masking.export_path`` says where)."""
        with self._exported(f"run:{run_id}", path, unmask) as extra:
            extra["rows"] = rows = export.export_run(self.store, run_id, path, unmask=unmask)
        return rows

    def export_batch(self, batch_id: int, path: Path | str, *, unmask: bool = False) -> int:
        """A batch's trades as loaded to CSV/XLSX/Parquet; accounts masked unless ``unmask`` (as ``export_run``)."""
        with self._exported(f"batch:{batch_id}", path, unmask) as extra:
            extra["rows"] = rows = export.export_batch(self.store, batch_id, path, unmask=unmask)
        return rows

    def export_rejections(self, batch_id: int, path: Path | str, *, unmask: bool = False) -> int:
        """A batch's rejections to CSV/XLSX/Parquet; a rejected account masked unless ``unmask`` (as ``export_run``)."""
        with self._exported(f"batch:{batch_id}:rejections", path, unmask) as extra:
            extra["rows"] = rows = export.export_rejections(self.store, batch_id, path, unmask=unmask)
        return rows

    def export_ledger(self, path: Path | str, run_id: int | None = None) -> int:
        """The simulated bank's booked deals (of one run, or all) to CSV/XLSX/Parquet; returns the rows written."""
        with self._exported("ledger" if run_id is None else f"ledger:run:{run_id}", path, False) as extra:
            extra["rows"] = rows = export.export_ledger(self.store, path, run_id)
        return rows

    # -- audit trail ---------------------------------------------------------------
    def audit_trail(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """The audit trail, newest first (``fxbatch.audit.read``); admins only, with login."""
        self._need(Role.ADMIN, "read the audit trail")
        return audit.read(self.store, actor=actor, action=action, since=since, until=until, limit=limit)

    def audit_overview(self) -> audit.Overview:
        """How many entries the trail has, and the actors and actions in it (to filter it by); admins only."""
        self._need(Role.ADMIN, "read the audit trail")
        return audit.overview(self.store)

    def audit_count(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """How many entries ``audit_trail`` gives with these filters; admins only."""
        self._need(Role.ADMIN, "read the audit trail")
        return audit.count(self.store, actor=actor, action=action, since=since, until=until)

    def record_settings(self, where: str = "server start") -> list[str]:
        """Record the settings (secrets redacted) in the audit trail when they differ from the ones
        last recorded (what a server does when it starts); returns the names that changed."""
        current = json.loads(self.settings.model_dump_json(exclude={"token"}))
        last = audit.read(self.store, action="settings", limit=1)
        before: dict[str, Any] = json.loads(last["params"].iloc[0]).get("settings", {}) if len(last) else {}
        shown = audit.redact(current)
        changed = sorted(k for k in shown if before.get(k) != shown[k]) if before else sorted(shown)
        if before and not changed:
            return []
        audit.record(self.store, audit.os_user(), "settings", where, {"settings": current, "changed": changed})
        return changed

    def verify_audit(self) -> AuditCheck:
        """Walk the audit trail's hash chain: intact, or the first changed, removed or inserted row."""
        self._need(Role.ADMIN, "check the audit trail")
        return audit.verify(self.store)

    def _need(self, role: Role, doing: str) -> Principal:
        """The acting principal, refused (ForbiddenError naming the role) unless its role allows ``role``."""
        return self.access.require(role, doing)

    @contextmanager
    def _audited(
        self, action: str, obj: str, *, needs: tuple[Role, str] | None = None, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Record ``action`` when the block ends (``fxbatch.audit.audited``); ``needs`` (role, what it
        is for) is checked first, inside the record, so a refusal is on the trail too."""
        with audit.audited(self.store, self.actor, action, obj, **params) as extra:
            if needs is not None:
                self._need(*needs)
            yield extra

    def _exported(self, what: str, path: Path | str, unmask: bool) -> AbstractContextManager[dict[str, Any]]:
        doing = "export unmasked account numbers" if unmask else "export"
        return self._audited("export", what, needs=(Role.ANALYST, doing), path=str(export_path(path, unmask=unmask)),
                             unmasked=unmask)  # fmt: skip

    @contextmanager
    def _unmasked(self, unmask: bool, obj: str, **params: Any) -> Iterator[None]:
        """Around a read: with ``unmask``, the role is checked before anything is read, and the read
        of full account numbers is recorded once it has succeeded.

        The same person reading the same view again (another page of it, a page rerun) within
        ``UNMASK_QUIET_S`` is not recorded again: one row per look, not one per screen refresh.
        """
        if unmask:
            try:
                self._need(Role.ANALYST, "see full account numbers")
            except ForbiddenError as refused:  # on the trail, as every refusal
                audit.record(self.store, self.actor, "unmask", obj, params, outcome=audit.failure(refused))
                raise
        yield
        if unmask:
            self.note_unmasked(obj, **params)

    def note_unmasked(self, obj: str, **params: Any) -> None:
        """Record that the person acting has read full account numbers of ``obj`` (a view named by
        ``params``): once per look, as ``_unmasked`` does for the workbench's own reads. For a
        caller that unmasked what it read itself (the API's answers to an upload)."""
        view = tuple(sorted((k, str(v)) for k, v in params.items() if k not in ("limit", "offset")))
        key = (audit.current_actor(self.actor), obj, view)
        now = time.monotonic()
        with self._memo_lock:
            last = self._unmask_seen.get(key)
            if last is not None and now - last < UNMASK_QUIET_S:
                return
            self._unmask_seen[key] = now
        audit.record(self.store, self.actor, "unmask", obj, params)

    def schema_version(self) -> int:
        """The database's schema version (what ``python -m fxbatch init`` reports)."""
        return self.store.schema_version()

    def backup(self, path: Path | str, *, force: bool = False) -> Path:
        """A consistent copy of the database at ``path`` that opens as one (``python -m fxbatch backup``).

        To restore: stop fxbatch, then copy the backup (and its ``.audit-head`` file) over the database's."""
        # On the trail (of the original; the copy's ends just before it): a copy holds every account in full.
        with self._audited("backup", f"file:{path}", needs=(Role.ADMIN, "back up the database")) as extra:
            with audit.holding(self.store):  # no row written between the copy and its head
                copy = self.store.backup(path, force=force)
                audit.copy_head(self.store, copy)  # the backup's trail checks as the original's did
            extra["path"] = str(copy)
        return copy


def _grid(
    success_rates: list[float],
    seeds: int | list[int],
    seed: int,
    base: RunConfig | None,
    variants: dict[str, list[Any]] | None,
) -> SweepGrid:
    """A sweep's grid; ``seeds`` a count (from ``seed``) or a list. Its size is checked before any list is built."""
    check_size(len(success_rates), seeds if isinstance(seeds, int) else len(seeds), variants)
    seed_list = list(range(seed, seed + seeds)) if isinstance(seeds, int) else list(seeds)
    return SweepGrid(success_rates=success_rates, seeds=seed_list, base=base or RunConfig(), variants=variants or {})


# Background sweeps that have ended are kept this many per database (newest first), so the page and
# the API can still say how each ended; a closed workbench forgets its own.
KEPT_SWEEP_JOBS = 100
# Sweep ids reserved and not yet swept keep their cancel this many per process (newest first): an
# older reservation's sweep still runs when it comes, but a cancel asked before it started is lost.
KEPT_RESERVATIONS = 1000


class SweepJob:
    """A sweep running in the background (``wb.whatif.start_sweep``): its progress, its end, and
    why it ended without a sweep (an FxBatchError; CancelledError for a cancel); the batch it runs
    over, its name, who started it and when (shown to everyone who opens the batch meanwhile)."""

    def __init__(self, sweep_id: int, total: int, batch_id: int, name: str | None, started_by: str | None) -> None:
        self.sweep_id = sweep_id
        self.total = total
        self.batch_id = batch_id
        self.name = name
        self.started_by = started_by
        self.started_at = datetime.now()
        self.done = 0
        self.error: FxBatchError | None = None
        self._ended = threading.Event()

    @property
    def running(self) -> bool:
        return not self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the end; False if it is still running after ``timeout`` seconds."""
        return self._ended.wait(timeout)


class _WhatIf:
    """Sweeps and comparisons (``wb.whatif``), kept apart from the run methods."""

    # The cancel of each sweep id reserved or running in this process, by database.
    _stops: ClassVar[dict[tuple[str, int], SweepCancel]] = {}
    _stops_lock: ClassVar[threading.Lock] = threading.Lock()
    # Those of ``_stops`` reserved and not yet swept, oldest first.
    _reserved: ClassVar[dict[tuple[str, int], None]] = {}
    # Sweeps started in the background in this process, by database and sweep id.
    _jobs: ClassVar[dict[tuple[str, int], SweepJob]] = {}

    def __init__(self, wb: Workbench) -> None:
        self.wb = wb

    def _stop(self, sweep_id: int) -> SweepCancel | None:
        """The cancel of a sweep reserved or running in this process (None: neither)."""
        with self._stops_lock:
            return self._stops.get((self.wb.engine.db_key, sweep_id))

    def _swept(self, sweep_id: int) -> SweepCancel:
        """The cancel of a sweep starting now (kept from its reservation, which it no longer is)."""
        key = (self.wb.engine.db_key, sweep_id)
        with self._stops_lock:
            self._reserved.pop(key, None)
            return self._stops.setdefault(key, SweepCancel())

    def sweep(
        self,
        batch_id: int,
        success_rates: list[float],
        *,
        seeds: int | list[int] = 1,
        seed: int = 42,
        base: RunConfig | None = None,
        variants: dict[str, list[Any]] | None = None,
        name: str | None = None,
        workers: int | None = None,
        dask_address: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        sweep_id: int | None = None,
    ) -> Sweep:
        """Run a sweep: every success rate x variant x seed; ``seeds`` is a count (from ``seed``) or a list.

        ``sweep_id`` stores it under an id taken beforehand with ``reserve_sweep_id`` (so the id can be
        handed out while the sweep runs); None takes a fresh one as it starts. ``cancel`` from another
        thread stops it: CancelledError, nothing stored.
        """
        try:
            self.wb._need(Role.ANALYST, "run a what-if sweep")
            grid = _grid(success_rates, seeds, seed, base, variants)
            if workers is not None and (workers < 1 or dask_address):
                raise SettingsError(
                    f"workers: {workers} is not a number of processes (1 or more)" if workers < 1 else
                    "workers and dask_address: name processes on this machine or a Dask scheduler, not both"
                )  # fmt: skip
            # Processes named here run here, whatever scheduler FXBATCH_DASK_ADDRESS names.
            address = dask_address or (self.wb.settings.dask_address if workers is None else None)
            executor = make_executor(workers, address, len(grid.scenarios()))
            if sweep_id is None:
                sweep_id = self.reserve_sweep_id()
            return run_sweep(self.wb.store, self.wb.rates, batch_id, grid, name=name, executor=executor,
                             on_progress=on_progress, trade_date=self.wb.settings.trading_date(),
                             sweep_id=sweep_id, cancel=self._swept(sweep_id))  # fmt: skip
        finally:
            if sweep_id is not None:
                self._forget_stop(sweep_id)

    def start_sweep(
        self,
        batch_id: int,
        success_rates: list[float],
        *,
        seeds: int | list[int] = 1,
        seed: int = 42,
        base: RunConfig | None = None,
        variants: dict[str, list[Any]] | None = None,
        name: str | None = None,
        workers: int | None = None,
    ) -> SweepJob:
        """Start ``sweep`` on a thread of its own and return its job at once (the batch, the role and
        the grid are checked first, here); ``cancel(job.sweep_id)`` stops it, ``sweep_job`` finds it."""
        self.wb._need(Role.ANALYST, "run a what-if sweep")
        self.wb.batch(batch_id)  # NotFoundError now, not a failed sweep later
        grid = _grid(success_rates, seeds, seed, base, variants)
        who = current_principal()
        job = SweepJob(
            self.reserve_sweep_id(), len(grid.scenarios()), batch_id, name, who.name if who is not None else None
        )
        key = (self.wb.engine.db_key, job.sweep_id)
        with self._stops_lock:
            self._forget_ended(self.wb.engine.db_key, keep=KEPT_SWEEP_JOBS - 1)
            self._jobs[key] = job

        def progress(done: int, total: int) -> None:
            job.done = done

        def sweep() -> None:
            try:
                self.sweep(batch_id, success_rates, seeds=grid.seeds, base=base, variants=variants, name=name,
                           workers=workers, on_progress=progress, sweep_id=job.sweep_id)  # fmt: skip
            except FxBatchError as exc:
                # Kept without its traceback, whose frames hold the batch's arrays and the results.
                job.error = exc.with_traceback(None)
                exc.__context__ = exc.__cause__ = None
            except Exception as exc:  # a bug: logged, said as one, and the job still ends
                logging.getLogger("fxbatch").exception("sweep %s failed", job.sweep_id)
                job.error = FxBatchError(f"The sweep failed: {type(exc).__name__}: {exc}", code="INTERNAL_ERROR")
            finally:
                job._ended.set()

        # The caller's context goes with it: the sweep acts as (and is checked as) the caller.
        thread = threading.Thread(target=contextvars.copy_context().run, args=(sweep,), daemon=True,
                                  name=f"fxbatch-sweep-{job.sweep_id}")  # fmt: skip
        try:
            thread.start()
        except BaseException:  # no thread: no job left waiting for ever
            with self._stops_lock:
                self._jobs.pop(key, None)
            self._forget_stop(job.sweep_id)
            job._ended.set()
            raise
        return job

    def _forget_ended(self, db: str, keep: int) -> None:
        """Drop all but the newest ``keep`` ended jobs of database ``db`` (``_stops_lock`` held)."""
        ended = sorted(sid for (d, sid), j in self._jobs.items() if d == db and not j.running)
        for sid in ended[: max(0, len(ended) - keep)]:
            del self._jobs[(db, sid)]

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """Cancel this database's background sweeps and wait for them to end (the database closes next)."""
        mine = self.running_sweeps()
        for job in mine:
            stop = self._stop(job.sweep_id)
            if stop is not None:
                stop.request()
        deadline = time.monotonic() + timeout_s
        for job in mine:
            job.wait(max(0.0, deadline - time.monotonic()))
        with self._stops_lock:
            self._forget_ended(self.wb.engine.db_key, keep=0)

    def sweep_job(self, sweep_id: int) -> SweepJob | None:
        """A sweep started in the background in this process (running or ended), or None."""
        with self._stops_lock:
            return self._jobs.get((self.wb.engine.db_key, sweep_id))

    def running_sweeps(self, batch_id: int | None = None) -> list[SweepJob]:
        """The sweeps running in the background in this process on this database (over
        ``batch_id`` only, when given), oldest first: whoever started them, from any session."""
        db = self.wb.engine.db_key
        with self._stops_lock:
            jobs = [j for (d, _), j in self._jobs.items() if d == db and j.running]
        return sorted((j for j in jobs if batch_id is None or j.batch_id == batch_id), key=lambda j: j.sweep_id)

    def reserve_sweep_id(self) -> int:
        """A fresh sweep id for ``sweep(..., sweep_id=...)``; it can be cancelled from now on (a
        sweep cancelled before it starts runs no scenario)."""
        sweep_id = reserve_sweep_id(self.wb.store)
        key = (self.wb.engine.db_key, sweep_id)
        with self._stops_lock:
            self._stops[key] = SweepCancel()
            self._reserved[key] = None
            while len(self._reserved) > KEPT_RESERVATIONS:  # never swept: let the oldest go
                oldest = next(iter(self._reserved))
                del self._reserved[oldest]
                self._stops.pop(oldest, None)
        return sweep_id

    def _forget_stop(self, sweep_id: int) -> None:
        """The sweep has ended (or never will start): nothing can cancel it any more."""
        key = (self.wb.engine.db_key, sweep_id)
        with self._stops_lock:
            self._stops.pop(key, None)
            self._reserved.pop(key, None)

    def cancel(self, sweep_id: int) -> None:
        """Stop a sweep running in this process (any thread): the scenarios under way end, no
        other starts, and nothing of it is stored. NotFoundError for an unknown sweep, ConflictError
        for one that has ended."""
        self.wb._need(Role.ANALYST, "cancel a what-if sweep")
        stop = self._stop(sweep_id)
        if stop is None:
            job = self.sweep_job(sweep_id)
            if job is not None and job.wait(5.0) and job.error is not None:  # it has just failed or stopped
                raise ConflictError(f"Sweep {sweep_id} has ended without a sweep: there is nothing to cancel.")
            self.get(sweep_id)  # NotFoundError for a sweep that was never stored
            raise ConflictError(f"Sweep {sweep_id} has finished and is stored: there is nothing to cancel.")
        if not stop.request():
            raise ConflictError(f"Sweep {sweep_id} has finished and is being stored: there is nothing to cancel.")

    def get(self, sweep_id: int) -> Sweep:
        return get_sweep(self.wb.store, sweep_id)

    def sweeps(self, batch_id: int | None = None) -> list[SweepInfo]:
        return list_sweeps(self.wb.store, batch_id)

    def scenarios_df(self, sweep_id: int) -> pd.DataFrame:
        return self.get(sweep_id).scenarios_df()

    def summary_df(self, sweep_id: int) -> pd.DataFrame:
        return self.get(sweep_id).summary_df()

    def start_promote(self, sweep_id: int, scenario: int) -> Job:
        """Start a stored scenario as a full run with per-trade records; return its job at once."""
        batch_id, config, simulated = scenario_config(self.wb.store, sweep_id, scenario)
        check_base(config)  # a scenario stored before sweeps refused such settings
        today = self.wb.settings.trading_date()
        if simulated is not None and simulated != today:
            raise ConflictError(
                f"Sweep {sweep_id} simulated trading day {simulated.isoformat()}; today is {today.isoformat()}, when "
                "value dates (and so which trades can settle) differ: its figures would not be this run's. Sweep the "
                "batch again today and promote from that sweep."
            )
        # The run remembers where it came from (its page names the sweep and the scenario).
        config = config.model_copy(update={"sweep_id": sweep_id, "scenario": scenario})
        params = {**run_params(batch_id, config), "sweep_id": sweep_id, "scenario": scenario}
        with self.wb._audited("promote", f"sweep:{sweep_id}", needs=(Role.ANALYST, "promote a scenario to a run"),
                              **params) as extra:  # fmt: skip
            # A scenario whose settings name an HTTP bank would move real money: the same rule as a run.
            self.wb._claim_approval(batch_id, config, None)
            job = self.wb.engine.start(batch_id, config)
            extra.update(object=f"run:{job.run_id}", run_id=job.run_id)
        return job

    def promote(self, sweep_id: int, scenario: int) -> RunSummary:
        """Turn a stored scenario into a full run with per-trade records and wait for the end."""
        job = self.start_promote(sweep_id, scenario)
        job.wait()
        return self.wb.run_summary(job.run_id)

    def compare(self, run_ids: list[int]) -> pd.DataFrame:
        return compare_runs(self.wb.store, run_ids)

    def differing_trades(self, run_a: int, run_b: int, limit: int = 1000) -> pd.DataFrame:
        return differing_trades(self.wb.store, run_a, run_b, limit)


_BANK_FIELDS = frozenset(
    {"success_rate", "failure_mix", "latency_ms", "quote_ttl_s", "volatility_bps", "transient_absorb_share",
     "price_tolerance_bps", "registry_file"}
)  # fmt: skip


def _one_line(note: str) -> str:
    return " ".join(str(note).split())


def _settle_note(note: str) -> str:
    """A settlement's note, one line: what the bank confirmed (required, at most ``NOTE_MAX`` characters)."""
    text = _one_line(note)
    if not text:
        raise SettingsError(
            "note: say what the bank confirmed (its reference, who at the bank): it is kept with the trades."
        )
    if len(text) > NOTE_MAX:
        raise SettingsError(f"note: at most {NOTE_MAX} characters (it has {len(text):,}).")
    return text


def retry_seed(seed: int) -> int:
    """The seed a retry of a run's failed trades takes by default: the next one (0 after the last)."""
    return 0 if seed >= SEED_MAX else seed + 1


def make_config(base: RunConfig | None = None, **overrides: object) -> RunConfig:
    """A RunConfig from a base and flat overrides; bank settings may be given at top level. A run
    started from a promoted run's settings is not a promotion: where that run came from (sweep_id,
    scenario) is not carried over."""
    config = base or RunConfig()
    bank = {k: v for k, v in overrides.items() if k in _BANK_FIELDS and v is not None}
    run = {k: v for k, v in overrides.items() if k not in _BANK_FIELDS and v is not None}
    data = config.model_dump() | {"sweep_id": None, "scenario": None}
    data["bank"].update(bank)
    data.update(run)
    return RunConfig.model_validate(data)


def run_params(batch_id: int, config: RunConfig) -> dict[str, Any]:
    """What the audit trail keeps of a run's settings (never credentials: they live in settings)."""
    return {"batch_id": batch_id, "bank": "http" if config.bank_url else "simulated", "bank_url": config.bank_url,
            "seed": config.seed, "success_rate": config.bank.success_rate, "concurrency": config.concurrency,
            "max_attempts": config.max_attempts, "retry_of_run": config.retry_of_run}  # fmt: skip


def open(
    db: Path | str | None = None, settings: Settings | None = None, *, server: str | None = None
) -> Workbench | Client:
    """Shortcut for ``Workbench.open``: the database here, or the server that holds it."""
    return Workbench.open(db, settings, server=server)


def _held_by_server(settings: Settings) -> Client | None:
    """A client of the server recorded beside the database file, when it answers for that file.

    A record whose server does not answer is left to the local open: a stale record (the pid
    reused after a crash) opens the file; a server that holds it but hangs gives the lock error.
    """
    record = read_record(settings.db)
    if record is None:
        return None
    try:
        client = connect(record.url, token=_token(settings))
    except ServerError:
        return None
    if client.db is not None and Path(client.db).resolve() != Path(settings.db).resolve():
        client.close()
        return None
    return client


def _token(settings: Settings) -> str | None:
    """The personal API token for a server with sign-in (FXBATCH_TOKEN, or ``token`` in the settings)."""
    return settings.token.get_secret_value() if settings.token is not None else None
