"""Four-eyes for settling bookings in doubt by hand: one person proposes what the bank's dealers
said of them, an approver other than them confirms it (it is then applied), or rejects it saying why.

Settling by hand moves real money: a booking recorded "booked" that the bank never made leaves a
client without its deal, and one recorded "not booked" that the bank made is booked again by a
retry. So where a real-money run needs an approval (a server with login, a run against an HTTP
bank), settling needs two people too; elsewhere an approver settles at once
(``Workbench.settle_by_hand``).

A proposal binds the bookings it names, each with the quote it was sent with: once one of them is
no longer in doubt with that quote (a resume settled it, another settlement did, or it was sent
again), the proposal is void. Statuses: pending, confirmed, rejected, and void (computed).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from fxbatch.engine import records
from fxbatch.errors import ConflictError, NotFoundError, SettingsError, rows_text
from fxbatch.store import update_returning, utc_now

if TYPE_CHECKING:
    from fxbatch.store import Store

SCHEMA = """
CREATE SEQUENCE settlement_id_seq START 1;
CREATE TABLE settlements (
    settlement_id INTEGER PRIMARY KEY DEFAULT nextval('settlement_id_seq'),
    run_id INTEGER NOT NULL,
    bookings VARCHAR NOT NULL,  -- JSON [[row, quote id, booked], ...]
    note VARCHAR NOT NULL,
    proposed_by VARCHAR NOT NULL,
    proposed_at TIMESTAMP NOT NULL,
    decision VARCHAR NOT NULL,
    decided_by VARCHAR,
    decided_at TIMESTAMP,
    reason VARCHAR
);
"""
REASON_MAX = 2_000
_COLS = "settlement_id, run_id, bookings, note, proposed_by, proposed_at, decision, decided_by, decided_at, reason"


class SettlementStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    VOID = "void"


class Settlement(BaseModel):
    """A proposed settlement of bookings in doubt by hand, and what became of it."""

    settlement_id: int
    run_id: int
    status: SettlementStatus
    booked: list[int] = Field(description="Rows the bank's dealers said were booked.")
    not_booked: list[int] = Field(description="Rows the bank's dealers said were never booked.")
    quotes: dict[int, int] = Field(description="The quote id each booking was in doubt with (row -> quote id).")
    note: str = Field(description="What the bank confirmed (its reference, who at the bank).")
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = Field(None, description="Why it was rejected (as the approver wrote it).")
    void_reason: str | None = Field(None, description="What changed since it was proposed (status void).")

    def decision_text(self) -> str:
        """Its status as the desk reads it: "pending", "confirmed by pat", "rejected by pat (why)",
        "void (what changed)"."""
        text = self.status.value + (f" by {self.decided_by}" if self.decided_by else "")
        why = self.reason or self.void_reason
        return text + (f" ({why})" if why else "")

    def rows_text(self) -> str:
        """What it settles, for the desk: "booked: rows 3, 9; not booked: rows 12"."""
        return "; ".join(
            f"{label}: rows {', '.join(map(str, rows))}"
            for label, rows in (("booked", self.booked), ("not booked", self.not_booked))
            if rows
        )


def propose(
    store: Store, run_id: int, quotes: dict[int, int], booked: list[int], note: str, proposed_by: str
) -> Settlement:
    """Record a pending settlement of the bookings ``quotes`` names (checked by the engine first);
    the rows in ``booked`` were booked, the others not."""
    yes = set(booked)
    bookings = [[row, quote, row in yes] for row, quote in sorted(quotes.items())]
    for open_one in for_run(store, run_id):
        if open_one.status is SettlementStatus.PENDING and open_one.quotes == quotes and set(open_one.booked) == yes:
            raise ConflictError(
                f"Settlement {open_one.settlement_id} (proposed by {open_one.proposed_by}) already proposes exactly "
                "this; an approver other than its proposer confirms or rejects it."
            )
    rows = (
        store.cursor()
        .execute(
            "INSERT INTO settlements (run_id, bookings, note, proposed_by, proposed_at, decision) "
            "VALUES (?, ?, ?, ?, ?, 'pending') RETURNING settlement_id",
            [run_id, json.dumps(bookings), note, proposed_by, utc_now()],
        )
        .fetchall()
    )
    return get(store, int(rows[0][0]))


def _settlement(row: tuple[Any, ...]) -> Settlement:
    settlement_id, run_id, bookings, note, proposed_by, proposed_at, decision, decided_by, decided_at, reason = row
    named = json.loads(bookings)
    return Settlement(
        settlement_id=settlement_id, run_id=run_id, status=SettlementStatus(decision),
        booked=[int(r) for r, _, yes in named if yes], not_booked=[int(r) for r, _, yes in named if not yes],
        quotes={int(r): int(q) for r, q, _ in named}, note=note, proposed_by=proposed_by, proposed_at=proposed_at,
        decided_by=decided_by, decided_at=decided_at, reason=reason,
    )  # fmt: skip


def _checked(found: Settlement, doubt: dict[int, int]) -> Settlement:
    """A pending settlement is void once one of its bookings is no longer in doubt with its quote."""
    if found.status is not SettlementStatus.PENDING:
        return found
    gone = sorted(r for r, q in found.quotes.items() if doubt.get(r) != q)
    if not gone:
        return found
    why = f"row(s) {rows_text(gone)} are no longer in doubt as proposed (settled since, or sent to the bank again)"
    return found.model_copy(update={"status": SettlementStatus.VOID, "void_reason": why})


def _doubt(store: Store, run_id: int) -> dict[int, int]:
    return records.doubt_quotes(store.cursor(), run_id)


def get(store: Store, settlement_id: int) -> Settlement:
    """One settlement (a pending one that no longer matches the bookings in doubt is void)."""
    rows = (
        store.cursor().execute(f"SELECT {_COLS} FROM settlements WHERE settlement_id = ?", [settlement_id]).fetchall()
    )
    if not rows:
        raise NotFoundError(f"There is no settlement {settlement_id}; `python -m fxbatch in-doubt RUN` lists a run's.")
    found = _settlement(tuple(rows[0]))
    return _checked(found, _doubt(store, found.run_id))


def for_run(store: Store, run_id: int) -> list[Settlement]:
    """The run's settlements, newest first."""
    rows = (
        store.cursor()
        .execute(f"SELECT {_COLS} FROM settlements WHERE run_id = ? ORDER BY settlement_id DESC", [run_id])
        .fetchall()
    )
    if not rows:
        return []
    doubt = _doubt(store, run_id)
    return [_checked(_settlement(tuple(r)), doubt) for r in rows]


def awaiting(store: Store, limit: int = 200) -> list[Settlement]:
    """Pending settlements of every run that are not void, newest first: what approvers have to decide."""
    rows = (
        store.cursor()
        .execute(
            f"SELECT {_COLS} FROM settlements WHERE decision = 'pending' ORDER BY settlement_id DESC LIMIT ?", [limit]
        )
        .fetchall()
    )
    doubts: dict[int, dict[int, int]] = {}
    found = []
    for row in rows:
        item = _settlement(tuple(row))
        if item.run_id not in doubts:
            doubts[item.run_id] = _doubt(store, item.run_id)
        item = _checked(item, doubts[item.run_id])
        if item.status is SettlementStatus.PENDING:
            found.append(item)
    return found


def _pending(store: Store, settlement_id: int) -> Settlement:
    current = get(store, settlement_id)
    if current.status is not SettlementStatus.PENDING:
        why = f": {current.void_reason}" if current.void_reason else ""
        by = f" by {current.decided_by}" if current.decided_by else ""
        raise ConflictError(
            f"Settlement {settlement_id} is {current.status.value}{by}{why}; only a pending one can be decided."
        )
    return current


def claim(store: Store, settlement_id: int, decided_by: str) -> Settlement:
    """Take a pending settlement to apply it (confirmed by ``decided_by``); ``release`` undoes
    that when it could not be applied."""
    _pending(store, settlement_id)
    taken = update_returning(
        store,
        "UPDATE settlements SET decision = 'confirmed', decided_by = ?, decided_at = ? "
        "WHERE settlement_id = ? AND decision = 'pending' RETURNING settlement_id",
        [decided_by, utc_now(), settlement_id],
    )
    if not taken:
        raise ConflictError(f"Settlement {settlement_id} was decided by someone else a moment ago.")
    return get(store, settlement_id)


def release(store: Store, settlement_id: int, decided_by: str) -> None:
    """A settlement ``decided_by`` claimed and could not apply is pending again (it may be void by now)."""
    store.cursor().execute(
        "UPDATE settlements SET decision = 'pending', decided_by = NULL, decided_at = NULL "
        "WHERE settlement_id = ? AND decision = 'confirmed' AND decided_by = ?",
        [settlement_id, decided_by],
    )


def reject(store: Store, settlement_id: int, decided_by: str, reason: str) -> Settlement:
    """Reject a pending settlement, saying why (the proposer reads it)."""
    text = " ".join(str(reason or "").split())
    if not text:
        raise SettingsError("reason: a rejection needs a reason (the proposer reads it).")
    if len(text) > REASON_MAX:
        raise SettingsError(f"reason: at most {REASON_MAX:,} characters (it has {len(text):,}).")
    _pending(store, settlement_id)
    taken = update_returning(
        store,
        "UPDATE settlements SET decision = 'rejected', decided_by = ?, decided_at = ?, reason = ? "
        "WHERE settlement_id = ? AND decision = 'pending' RETURNING settlement_id",
        [decided_by, utc_now(), text, settlement_id],
    )
    if not taken:
        raise ConflictError(f"Settlement {settlement_id} was decided by someone else a moment ago.")
    return get(store, settlement_id)
