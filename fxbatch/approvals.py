"""Four-eyes for real money: a run against an HTTP bank, on a server with login, needs an approval.

An analyst requests the run (a batch and its run settings); an approver other than the requester
approves or rejects it (a rejection says why). The approval binds what was approved: the batch's
content fingerprint (every trade's fields, in row order), the run's settings and the bank settings
the server would use (address, token endpoint, client, grant, user; never a secret). A change to
any of them voids it, and the run is refused saying what changed. A request expires after the
``approval_hours`` setting, approved or not; an approval starts one run, once, on the trading day
it was requested for (a run derives its value dates for its day: on another, the bank would get
settlement dates the approver never saw). A run it started is resumed under it only while it is
unexpired and still matches; with login, an approval decided by its requester starts nothing.

Statuses: pending, approved, rejected, expired, used (with its run), and void (computed when the
batch or the settings no longer match).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from fxbatch.errors import ConflictError, NotFoundError, SettingsError
from fxbatch.models import RunConfig
from fxbatch.store import update_returning, utc_now

if TYPE_CHECKING:
    from fxbatch.settings import Settings
    from fxbatch.store import Store

SCHEMA = """
CREATE SEQUENCE approval_id_seq START 1;
CREATE TABLE approvals (
    approval_id INTEGER PRIMARY KEY DEFAULT nextval('approval_id_seq'),
    batch_id INTEGER NOT NULL,
    batch_fingerprint VARCHAR NOT NULL,
    config VARCHAR NOT NULL,
    settings_fingerprint VARCHAR NOT NULL,
    trades INTEGER NOT NULL,
    requested_by VARCHAR NOT NULL,
    requested_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    decision VARCHAR NOT NULL,
    decided_by VARCHAR,
    decided_at TIMESTAMP,
    reason VARCHAR,
    run_id INTEGER,
    used_at TIMESTAMP
);
"""
# The bank settings a run against an HTTP bank uses besides its RunConfig (never the secrets).
BANK_SETTINGS = ("bank_token_url", "bank_client_id", "bank_grant", "bank_username", "bank_scope", "bank_user_id")
_COLS = ("approval_id, batch_id, batch_fingerprint, config, settings_fingerprint, trades, requested_by, requested_at, "
         "expires_at, decision, decided_by, decided_at, reason, run_id, used_at, trade_date")  # fmt: skip


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    USED = "used"
    VOID = "void"


class Approval(BaseModel):
    """A request for a real-money run and what became of it."""

    approval_id: int
    batch_id: int
    status: ApprovalStatus
    config: RunConfig = Field(description="The run's settings, as requested (and approved).")
    bank_url: str | None = Field(description="The HTTP bank the run goes to.")
    trades: int = Field(description="Trades in the batch when the run was requested.")
    trade_date: date | None = Field(
        None, description="The trading day it was requested for (None: a request made before it was kept)."
    )
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = Field(None, description="Why it was rejected (as the approver wrote it).")
    run_id: int | None = Field(None, description="The run it started (status used).")
    void_reason: str | None = Field(None, description="What changed since the request (status void).")


def batch_fingerprint(store: Store, batch_id: int) -> tuple[str, int]:
    """SHA-256 of the batch's trades (every column, as JSON, in row order) and their count; NotFoundError if none."""
    cur = store.cursor()
    found = cur.execute("SELECT fingerprint FROM batches WHERE batch_id = ?", [batch_id]).fetchall()
    if not found:
        raise NotFoundError(f"There is no batch {batch_id}; `python -m fxbatch batches` lists them.")
    digest = hashlib.sha256(str(found[0][0]).encode())
    count = 0
    # Streamed in row order, chunk by chunk: a 1M-trade batch never sits in memory as one string.
    reader = cur.execute("SELECT to_json(t)::VARCHAR FROM trades t WHERE batch_id = ? ORDER BY src_row", [batch_id])
    while rows := reader.fetchmany(65_536):
        count += len(rows)
        digest.update("\n".join(str(r[0]) for r in rows).encode())
        digest.update(b"\n")
    return digest.hexdigest(), count


def settings_fingerprint(config: RunConfig, settings: Settings) -> str:
    """SHA-256 of the run settings and the bank settings a run against an HTTP bank would use."""
    bound = {"config": config.model_dump(mode="json"), **{k: getattr(settings, k) for k in BANK_SETTINGS}}
    return hashlib.sha256(json.dumps(bound, sort_keys=True, default=str).encode()).hexdigest()


def request(store: Store, batch_id: int, config: RunConfig, settings: Settings, requested_by: str) -> Approval:
    if not config.bank_url:
        raise ConflictError(
            "Only a run against an HTTP bank needs an approval; simulated runs and what-if start at once."
        )
    fingerprint, trades = batch_fingerprint(store, batch_id)
    if trades == 0:
        raise ConflictError(f"Batch {batch_id} has no trades to run.")
    now = utc_now()
    rows = store.cursor().execute(
        "INSERT INTO approvals (batch_id, batch_fingerprint, config, settings_fingerprint, trades, requested_by, "
        "requested_at, expires_at, decision, trade_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?) "
        "RETURNING approval_id",
        [batch_id, fingerprint, config.model_dump_json(), settings_fingerprint(config, settings), trades, requested_by,
         now, now + timedelta(hours=settings.approval_hours), settings.trading_date()],
    ).fetchall()  # fmt: skip
    return get(store, int(rows[0][0]))


def _approval(row: tuple[Any, ...]) -> Approval:
    (approval_id, batch_id, _fp, config, _sfp, trades, requested_by, requested_at, expires_at, decision, decided_by,
     decided_at, reason, run_id, _used_at, trade_date) = row  # fmt: skip
    status = ApprovalStatus(decision)
    if status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) and expires_at <= utc_now():
        status = ApprovalStatus.EXPIRED
    cfg = RunConfig.model_validate_json(config)
    return Approval(approval_id=approval_id, batch_id=batch_id, status=status, config=cfg, bank_url=cfg.bank_url,
                    trades=trades, requested_by=requested_by, requested_at=requested_at, expires_at=expires_at,
                    decided_by=decided_by, decided_at=decided_at, reason=reason, run_id=run_id,
                    trade_date=trade_date)  # fmt: skip


def _row(store: Store, approval_id: int) -> tuple[Any, ...]:
    rows = store.cursor().execute(f"SELECT {_COLS} FROM approvals WHERE approval_id = ?", [approval_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no approval request {approval_id}; `python -m fxbatch approvals` lists them.")
    return tuple(rows[0])


def void_reason(
    store: Store,
    row: tuple[Any, ...],
    settings: Settings,
    config: RunConfig | None = None,
    fingerprints: dict[int, str] | None = None,
    *,
    day: bool = True,
) -> str | None:
    """What changed since the request (the trading day, the batch, the run settings, the bank
    settings), or None. ``fingerprints`` holds batch fingerprints already taken (a listing takes
    each batch's once). ``day=False``: not the trading day (a run it started keeps its own day)."""
    approved = RunConfig.model_validate_json(row[3])
    requested_for, today = row[15], settings.trading_date()
    if day and requested_for is not None and requested_for != today:
        return (
            f"it was requested for trading on {requested_for:%Y-%m-%d}, and today is {today:%Y-%m-%d}: the batch's "
            "value dates move with the day (CASH, TOM and SPOT), so the bank would get settlement dates the "
            "approver never saw"
        )
    if config is not None and config != approved:
        a, b = approved.model_dump(mode="json"), config.model_dump(mode="json")
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        return f"the run's settings differ from the approved ones ({', '.join(changed)})"
    batch_id = int(row[1])
    try:
        if fingerprints is not None and batch_id in fingerprints:
            fingerprint = fingerprints[batch_id]
        else:
            fingerprint, _ = batch_fingerprint(store, batch_id)
            if fingerprints is not None:
                fingerprints[batch_id] = fingerprint
    except NotFoundError:
        return f"batch {row[1]} was deleted"
    if fingerprint != row[2]:
        return f"batch {row[1]} changed since the request"
    if settings_fingerprint(approved, settings) != row[4]:
        return "the server's bank settings changed since the request (" + ", ".join(
            f"FXBATCH_{k.upper()}" for k in BANK_SETTINGS) + ")"  # fmt: skip
    return None


def still_holds(store: Store, approval_id: int, settings: Settings) -> str | None:
    """Why an approval that started a run no longer covers it (it has expired, or the batch or the
    bank settings changed since), or None: what resuming that run checks. Not the trading day: the
    run sends the value dates of the day it was created, the ones approved."""
    row = _row(store, approval_id)
    if row[8] <= utc_now():
        return f"it expired at {row[8]:%Y-%m-%d %H:%M} UTC"
    return void_reason(store, row, settings, day=False)


def get(store: Store, approval_id: int, settings: Settings | None = None) -> Approval:
    """One request; with ``settings``, a pending or approved one that no longer matches is void."""
    row = _row(store, approval_id)
    return _approval(row) if settings is None else _checked(store, row, settings, {})


def _checked(store: Store, row: tuple[Any, ...], settings: Settings, fingerprints: dict[int, str]) -> Approval:
    """The request, void when it is still open but no longer matches the batch or the settings."""
    found = _approval(row)
    if found.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED):
        why = void_reason(store, row, settings, fingerprints=fingerprints)
        if why:
            found = found.model_copy(update={"status": ApprovalStatus.VOID, "void_reason": why})
    return found


def list_approvals(
    store: Store,
    settings: Settings,
    status: str | None = None,
    limit: int = 200,
    fingerprints: dict[int, str] | None = None,
) -> list[Approval]:
    """Requests, newest first (open ones checked for changes, each batch hashed once), optionally of one
    status. ``fingerprints``: batch fingerprints known already; the ones taken here are added to it."""
    rows = store.cursor().execute(f"SELECT {_COLS} FROM approvals ORDER BY approval_id DESC").fetchall()
    found: list[Approval] = []
    fingerprints = {} if fingerprints is None else fingerprints
    for row in rows:
        item = _checked(store, tuple(row), settings, fingerprints)
        if status is None or item.status == status:
            found.append(item)
        if len(found) >= limit:
            break
    return found


def decide(
    store: Store, approval_id: int, settings: Settings, decided_by: str, approve: bool, reason: str = ""
) -> Approval:
    """Approve or reject a pending request; refused if it is not pending (decided, expired, void)."""
    current = get(store, approval_id, settings)
    if current.status is not ApprovalStatus.PENDING:
        why = f": {current.void_reason}" if current.void_reason else ""
        raise ConflictError(
            f"Approval request {approval_id} is {current.status.value}{why}; only a pending one can be decided."
        )
    text = str(reason or "").strip()
    if not approve and not text:
        raise SettingsError("A rejection needs a reason (the requester reads it).")
    updated = update_returning(
        store,
        "UPDATE approvals SET decision = ?, decided_by = ?, decided_at = ?, reason = ? "
        "WHERE approval_id = ? AND decision = 'pending' RETURNING approval_id",
        ["approved" if approve else "rejected", decided_by, utc_now(), text or None, approval_id],
    )
    if not updated:
        raise ConflictError(f"Approval request {approval_id} was decided by someone else a moment ago.")
    return get(store, approval_id)


def claim(
    store: Store,
    approval_id: int,
    batch_id: int,
    config: RunConfig,
    settings: Settings,
    *,
    approver: Callable[[str], bool] | None = None,
) -> Approval:
    """Take an approval for one run of ``batch_id`` with ``config``: it must be approved, unexpired and
    still match; it is then used (``bind`` records the run). ConflictError saying why otherwise.
    ``approver`` (four eyes: whether a person holds the approver role here): one decided by someone
    who does not (a decision taken without sign-in), or by its own requester, starts nothing."""
    row = _row(store, approval_id)
    current = _approval(row)
    decided_by = current.decided_by
    if approver is not None and decided_by is not None and not approver(decided_by):
        raise ConflictError(
            f"Approval {approval_id} was decided by {decided_by}, who holds no approver role here (a decision "
            "taken without sign-in, or by someone whose role was taken away): request the run again."
        )
    if approver is not None and decided_by is not None and decided_by == current.requested_by:
        raise ConflictError(
            f"Approval {approval_id} was decided by the person who requested it ({current.requested_by}), without a "
            "second person: request the run again, for another approver."
        )
    if current.status is not ApprovalStatus.APPROVED:
        detail = {
            ApprovalStatus.PENDING: "it is waiting for an approver",
            ApprovalStatus.REJECTED: f"it was rejected by {current.decided_by}: {current.reason}",
            ApprovalStatus.EXPIRED: f"it expired at {current.expires_at:%Y-%m-%d %H:%M} UTC; request the run again",
            ApprovalStatus.USED: f"it already started run {current.run_id}; request the run again",
        }.get(current.status, current.status.value)
        raise ConflictError(f"Approval {approval_id} cannot start a run: {detail}.")
    if current.batch_id != batch_id:
        raise ConflictError(f"Approval {approval_id} is for batch {current.batch_id}, not batch {batch_id}.")
    why = void_reason(store, row, settings, config)
    if why:
        raise ConflictError(f"Approval {approval_id} is void: {why}. Request the run again for a new approval.")
    taken = update_returning(
        store,
        "UPDATE approvals SET decision = 'used', used_at = ? WHERE approval_id = ? AND decision = 'approved' "
        "RETURNING approval_id",
        [utc_now(), approval_id],
    )
    if not taken:
        raise ConflictError(f"Approval {approval_id} was used by another run a moment ago.")
    return current


def bind(store: Store, approval_id: int, run_id: int | None) -> None:
    """Record the run an approval started; ``None`` hands the approval back (the run did not start)."""
    if run_id is None:
        store.cursor().execute(
            "UPDATE approvals SET decision = 'approved', used_at = NULL WHERE approval_id = ?", [approval_id]
        )
    else:
        store.cursor().execute("UPDATE approvals SET run_id = ? WHERE approval_id = ?", [run_id, approval_id])


def approval_of_run(store: Store, run_id: int) -> int | None:
    rows = store.cursor().execute("SELECT approval_id FROM approvals WHERE run_id = ?", [run_id]).fetchall()
    return int(rows[0][0]) if rows else None
