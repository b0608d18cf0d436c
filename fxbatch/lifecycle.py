"""The one place where trade and run status transitions are defined and enforced.

Trade: PENDING -> EXECUTING -> QUOTED -> SUCCESS | FAILED; EXECUTING -> FAILED (quote or checks
failed); QUOTED -> EXECUTING (a retry asks for a new quote); PENDING -> CANCELLED; EXECUTING ->
CANCELLED (cancelled before its quote request was sent, or while it waited to try again);
QUOTED -> CANCELLED (cancelled before its booking was sent: the quote is released).
Run: PENDING -> RUNNING -> COMPLETED | PARTIAL | FAILED | CANCELLED | INTERRUPTED, and
INTERRUPTED -> RUNNING (resume) or CANCELLED.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fxbatch.errors import ConflictError
from fxbatch.models import RunStatus, TradeStatus

T = TradeStatus
R = RunStatus

TRADE_TRANSITIONS: dict[TradeStatus, frozenset[TradeStatus]] = {
    T.PENDING: frozenset({T.EXECUTING, T.CANCELLED}),
    # EXECUTING -> EXECUTING: re-quote after a retryable error. EXECUTING -> CANCELLED: the run
    # was cancelled before the trade's (next) quote request was sent.
    T.EXECUTING: frozenset({T.QUOTED, T.FAILED, T.EXECUTING, T.CANCELLED}),
    # QUOTED -> CANCELLED: the run was cancelled before the quote was booked (the quote is released).
    T.QUOTED: frozenset({T.SUCCESS, T.FAILED, T.EXECUTING, T.CANCELLED}),
    T.SUCCESS: frozenset(),
    T.FAILED: frozenset(),
    T.CANCELLED: frozenset(),
}

RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    R.PENDING: frozenset({R.RUNNING, R.CANCELLED}),
    R.RUNNING: frozenset({R.COMPLETED, R.PARTIAL, R.FAILED, R.CANCELLED, R.INTERRUPTED}),
    R.INTERRUPTED: frozenset({R.RUNNING, R.CANCELLED}),
    R.COMPLETED: frozenset(),
    R.PARTIAL: frozenset(),
    R.FAILED: frozenset(),
    R.CANCELLED: frozenset(),
}

# Trade statuses as small integers so whole chunks move in one vectorised step.
TRADE_CODES: tuple[TradeStatus, ...] = tuple(TradeStatus)
CODE_OF: dict[TradeStatus, int] = {s: i for i, s in enumerate(TRADE_CODES)}
_ALLOWED = np.zeros((len(TRADE_CODES), len(TRADE_CODES)), dtype=bool)
for _src, _dsts in TRADE_TRANSITIONS.items():
    for _dst in _dsts:
        _ALLOWED[CODE_OF[_src], CODE_OF[_dst]] = True


class IllegalTransition(ConflictError):
    code = "ILLEGAL_TRANSITION"


def check_run(current: RunStatus, new: RunStatus, run_id: int | None = None) -> None:
    if new not in RUN_TRANSITIONS[current]:
        label = f"Run {run_id}" if run_id is not None else "A run"
        raise IllegalTransition(f"{label} cannot go from {current.value} to {new.value}.")


def advance(states: np.ndarray, mask: np.ndarray, new: TradeStatus) -> None:
    """Move the trades selected by ``mask`` to ``new`` in place, refusing any illegal move."""
    target = CODE_OF[new]
    current = states[mask]
    ok = _ALLOWED[current, target]
    if not ok.all():
        bad = TRADE_CODES[int(current[~ok][0])]
        raise IllegalTransition(f"{int((~ok).sum())} trade(s) cannot go from {bad.value} to {new.value}.")
    states[mask] = target


def final_run_status(counts: dict[str, int], *, cancelled: bool) -> RunStatus:
    """COMPLETED (all succeeded), PARTIAL (some did), FAILED (none did), or CANCELLED."""
    if cancelled:
        return R.CANCELLED
    success = counts.get(T.SUCCESS, 0)
    total = sum(counts.get(s, 0) for s in (T.SUCCESS, T.FAILED, T.CANCELLED))
    if total and success == total:
        return R.COMPLETED
    return R.PARTIAL if success else R.FAILED


def names(codes: Iterable[int]) -> list[str]:
    return [TRADE_CODES[int(c)].value for c in codes]
