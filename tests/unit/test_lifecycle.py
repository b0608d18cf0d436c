"""Trade and run lifecycles (DOMAIN.md section 4, issue 3): the one place transitions are enforced."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fxbatch.errors import ConflictError
from fxbatch.lifecycle import CODE_OF, IllegalTransition, advance, check_run, final_run_status, names
from fxbatch.models import FINAL_RUN, FINAL_TRADE, RunStatus, TradeStatus

T = TradeStatus
R = RunStatus

# The specification, written out independently of fxbatch.lifecycle's own tables.
LEGAL_TRADE = {
    (T.PENDING, T.EXECUTING),
    (T.PENDING, T.CANCELLED),  # a run stopped before the trade started
    (T.EXECUTING, T.QUOTED),
    (T.EXECUTING, T.FAILED),  # quote or client checks failed
    (T.EXECUTING, T.EXECUTING),  # a retryable quote error: quote again
    (T.EXECUTING, T.CANCELLED),  # the run was cancelled before the (next) quote request was sent
    (T.QUOTED, T.SUCCESS),
    (T.QUOTED, T.FAILED),  # booking failed
    (T.QUOTED, T.EXECUTING),  # a retryable booking error: a new quote
    (T.QUOTED, T.CANCELLED),  # the run was cancelled before the quote was booked (the quote is released)
}
LEGAL_RUN = {
    (R.PENDING, R.RUNNING),
    (R.PENDING, R.CANCELLED),
    (R.RUNNING, R.COMPLETED),
    (R.RUNNING, R.PARTIAL),
    (R.RUNNING, R.FAILED),
    (R.RUNNING, R.CANCELLED),
    (R.RUNNING, R.INTERRUPTED),
    (R.INTERRUPTED, R.RUNNING),  # resume
    (R.INTERRUPTED, R.CANCELLED),
}
ILLEGAL_TRADE = sorted(set(itertools.product(T, T)) - LEGAL_TRADE)
ILLEGAL_RUN = sorted(set(itertools.product(R, R)) - LEGAL_RUN)


def states_of(*statuses: TradeStatus) -> np.ndarray:
    return np.array([CODE_OF[s] for s in statuses], dtype=np.int8)


def everything(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


# -- trades -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), sorted(LEGAL_TRADE), ids=lambda s: s.value)
def test_every_legal_trade_transition_is_accepted(src: TradeStatus, dst: TradeStatus) -> None:
    states = states_of(src, src)
    advance(states, everything(2), dst)
    assert names(states) == [dst.value, dst.value]


@pytest.mark.parametrize(("src", "dst"), ILLEGAL_TRADE, ids=lambda s: s.value)
def test_every_illegal_trade_transition_raises_and_changes_nothing(src: TradeStatus, dst: TradeStatus) -> None:
    states = states_of(src)
    with pytest.raises(IllegalTransition) as err:
        advance(states, everything(1), dst)
    assert names(states) == [src.value]
    assert src.value in err.value.message and dst.value in err.value.message


@pytest.mark.parametrize(
    ("src", "dst"),
    [(T.SUCCESS, T.EXECUTING), (T.PENDING, T.SUCCESS), (T.PENDING, T.QUOTED), (T.FAILED, T.SUCCESS),
     (T.CANCELLED, T.EXECUTING), (T.EXECUTING, T.SUCCESS), (T.CANCELLED, T.PENDING)],
    ids=lambda s: s.value,
)  # fmt: skip
def test_the_named_shortcuts_and_reversals_are_illegal(src: TradeStatus, dst: TradeStatus) -> None:
    with pytest.raises(IllegalTransition):
        advance(states_of(src), everything(1), dst)


def test_final_trade_statuses_have_no_way_out() -> None:
    for final in FINAL_TRADE:
        for dst in T:
            with pytest.raises(IllegalTransition):
                advance(states_of(final), everything(1), dst)


def test_a_chunk_with_one_illegal_move_is_refused_whole_and_left_untouched() -> None:
    states = states_of(T.QUOTED, T.QUOTED, T.SUCCESS, T.QUOTED)
    before = states.copy()
    with pytest.raises(IllegalTransition) as err:
        advance(states, everything(4), T.SUCCESS)
    np.testing.assert_array_equal(states, before)
    assert "1 trade(s)" in err.value.message
    assert "SUCCESS to SUCCESS" in err.value.message


def test_advance_moves_only_the_masked_trades() -> None:
    states = states_of(T.PENDING, T.SUCCESS, T.PENDING, T.FAILED)
    advance(states, np.array([True, False, True, False]), T.EXECUTING)
    assert names(states) == ["EXECUTING", "SUCCESS", "EXECUTING", "FAILED"]


def test_an_unmasked_illegal_state_does_not_block_the_masked_ones() -> None:
    states = states_of(T.SUCCESS, T.QUOTED)
    advance(states, np.array([False, True]), T.SUCCESS)
    assert names(states) == ["SUCCESS", "SUCCESS"]


def test_advance_with_an_empty_mask_is_a_no_op() -> None:
    states = states_of(T.SUCCESS, T.FAILED)
    advance(states, np.zeros(2, dtype=bool), T.EXECUTING)
    assert names(states) == ["SUCCESS", "FAILED"]


def test_illegal_transition_is_a_conflict_error_with_a_stable_code() -> None:
    with pytest.raises(ConflictError) as err:
        advance(states_of(T.PENDING), everything(1), T.SUCCESS)
    assert err.value.code == "ILLEGAL_TRANSITION"


# -- runs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), sorted(LEGAL_RUN), ids=lambda s: s.value)
def test_every_legal_run_transition_is_accepted(src: RunStatus, dst: RunStatus) -> None:
    check_run(src, dst, run_id=1)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL_RUN, ids=lambda s: s.value)
def test_every_illegal_run_transition_raises(src: RunStatus, dst: RunStatus) -> None:
    with pytest.raises(IllegalTransition):
        check_run(src, dst, run_id=7)


def test_a_refused_run_transition_names_the_run_and_both_statuses() -> None:
    with pytest.raises(IllegalTransition) as err:
        check_run(R.COMPLETED, R.RUNNING, run_id=7)
    assert err.value.message == "Run 7 cannot go from COMPLETED to RUNNING."


def test_final_runs_cannot_be_restarted_or_resumed() -> None:
    for final in FINAL_RUN:
        for dst in R:
            with pytest.raises(IllegalTransition):
                check_run(final, dst)


def test_only_an_interrupted_run_can_go_back_to_running() -> None:
    assert {src for src in R if (src, R.RUNNING) in LEGAL_RUN} == {R.PENDING, R.INTERRUPTED}
    check_run(R.INTERRUPTED, R.RUNNING)
    with pytest.raises(IllegalTransition):
        check_run(R.RUNNING, R.RUNNING)


# -- the run's final status ---------------------------------------------------------------------


def test_a_run_where_every_trade_succeeded_is_completed() -> None:
    assert final_run_status({"SUCCESS": 5, "FAILED": 0, "CANCELLED": 0}, cancelled=False) is R.COMPLETED


def test_a_run_where_some_trades_succeeded_is_partial() -> None:
    assert final_run_status({"SUCCESS": 4, "FAILED": 1}, cancelled=False) is R.PARTIAL


def test_a_run_where_no_trade_succeeded_is_failed() -> None:
    assert final_run_status({"SUCCESS": 0, "FAILED": 5}, cancelled=False) is R.FAILED


def test_a_run_stopped_by_the_analyst_is_cancelled_whatever_the_counts() -> None:
    assert final_run_status({"SUCCESS": 5}, cancelled=True) is R.CANCELLED
    assert final_run_status({"FAILED": 5}, cancelled=True) is R.CANCELLED


def test_cancelled_trades_keep_a_run_from_being_completed() -> None:
    assert final_run_status({"SUCCESS": 3, "CANCELLED": 2}, cancelled=False) is R.PARTIAL


def test_final_status_accepts_enum_or_string_keys() -> None:
    assert final_run_status({T.SUCCESS: 2}, cancelled=False) is R.COMPLETED  # type: ignore[dict-item]
    assert final_run_status({"SUCCESS": 2, "PENDING": 0, "EXECUTING": 0}, cancelled=False) is R.COMPLETED
