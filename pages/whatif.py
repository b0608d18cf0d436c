"""What-if: sweep the bank's success rate over a batch, see the fan chart, compare runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Role
from fxbatch.errors import CancelledError
from fxbatch.labels import run_status_label, trade_status_label
from fxbatch.whatif import charts
from fxbatch.whatif.compare import split_differing
from fxbatch.whatif.models import ScenarioResult
from fxbatch.workbench import SweepJob
from pages.common import (
    POLL_S,
    RUN_PAGE,
    SELECT_ROWS,
    TableConfig,
    confirmed,
    get_workbench,
    labelled,
    may,
    needs_role,
    newly_selected_row,
    show_error,
)

PROMOTING = "whatif_promoting"  # (sweep, scenario) whose promotion this session is confirming
PROMOTED = "whatif_promoted"  # (run, scenario) just started: the link to it
SWEEPING = "whatif_sweeping"  # the sweep this session started in the background, until it has ended

_ZAR = "%,.2f"
_INCOME_HELP = "The desk's spread income on the succeeded trades, in ZAR at mid"
_LOST_HELP = "The spread income the failed trades would have earned"
_BAND_HELP = (
    "Each success rate is run once per seed: the same odds on different days. The 5th to 95th percentile across "
    "those seeds is the band the fan chart shades: nine days in ten fall inside it."
)
COMPARE_TABLE: dict[str, Any] = {
    "run_id": st.column_config.NumberColumn("Run", format="%d", width="small"),
    "batch_id": st.column_config.NumberColumn("Batch", format="%d", width="small"),
    "seed": st.column_config.NumberColumn("Seed", format="%d", width="small"),
    "success_rate_setting": st.column_config.NumberColumn(
        "Bank success rate (setting)", format="percent", help="The simulated bank's success rate the run was set to"
    ),
    "success_share": st.column_config.NumberColumn("Succeeded (share)", format="percent"),
    "notional_zar_succeeded": st.column_config.NumberColumn("Booked notional (ZAR)", format=_ZAR),
    "notional_zar_failed": st.column_config.NumberColumn("Failed notional (ZAR)", format=_ZAR),
    "notional_zar_total": st.column_config.NumberColumn("Notional (ZAR)", format=_ZAR),
    "spread_income_zar": st.column_config.NumberColumn("Income (ZAR)", format=_ZAR, help=_INCOME_HELP),
}
SCENARIOS_TABLE: TableConfig = {
    "column_order": [
        "scenario",
        "success_rate",
        "seed",
        "trades",
        "succeeded",
        "failed",
        "notional_zar_succeeded",
        "spread_income_zar",
        "income_lost_zar",
        "failure_reasons",
    ],
    "column_config": {
        "scenario": st.column_config.NumberColumn("Scenario", format="%d", width="small"),
        "success_rate": st.column_config.NumberColumn("Success rate", format="percent"),
        "seed": st.column_config.NumberColumn("Seed", format="%d", width="small"),
        "trades": st.column_config.NumberColumn("Trades", format="%d"),
        "succeeded": st.column_config.NumberColumn("Succeeded", format="%d"),
        "failed": st.column_config.NumberColumn("Failed", format="%d"),
        "notional_zar_succeeded": st.column_config.NumberColumn("Executed notional (ZAR)", format=_ZAR),
        "spread_income_zar": st.column_config.NumberColumn("Income (ZAR)", format=_ZAR, help=_INCOME_HELP),
        "income_lost_zar": st.column_config.NumberColumn("Income lost (ZAR)", format=_ZAR, help=_LOST_HELP),
        "failure_reasons": "Why trades failed",
    },
}
SUMMARY_TABLE: TableConfig = {
    "column_order": [
        "success_rate",
        "scenarios",
        "success_share_mean",
        "mean",
        "p05",
        "p95",
        "income_mean",
        "income_p05",
        "income_p95",
        "income_lost_mean",
        "income_lost_p05",
        "income_lost_p95",
    ],
    "column_config": {
        "success_rate": st.column_config.NumberColumn("Success rate", format="percent"),
        "scenarios": st.column_config.NumberColumn("Seeds", format="%d", width="small"),
        "success_share_mean": st.column_config.NumberColumn("Succeeded (mean)", format="percent"),
        "mean": st.column_config.NumberColumn("Executed notional (mean, ZAR)", format=_ZAR),
        "p05": st.column_config.NumberColumn("Notional p5", format=_ZAR),
        "p95": st.column_config.NumberColumn("Notional p95", format=_ZAR),
        "income_mean": st.column_config.NumberColumn("Income (mean, ZAR)", format=_ZAR, help=_INCOME_HELP),
        "income_p05": st.column_config.NumberColumn("Income p5", format=_ZAR),
        "income_p95": st.column_config.NumberColumn("Income p95", format=_ZAR),
        "income_lost_mean": st.column_config.NumberColumn("Income lost (mean, ZAR)", format=_ZAR, help=_LOST_HELP),
        "income_lost_p05": st.column_config.NumberColumn("Income lost p5", format=_ZAR),
        "income_lost_p95": st.column_config.NumberColumn("Income lost p95", format=_ZAR),
    },
}


def _sweep_form(wb: Workbench, batch_id: int) -> None:
    with st.form("sweep"):
        low, high = st.slider("Success rates", 0.0, 1.0, (0.5, 1.0), step=0.05, key="rates")
        step = st.select_slider("Step", options=[0.01, 0.025, 0.05, 0.1, 0.25], value=0.05, key="step")
        seeds = st.slider("Seeds per rate (replications)", 1, 20, 5, key="seeds", help=_BAND_HELP)
        first_seed = st.number_input(
            "First seed", min_value=0, value=42, step=1, key="first_seed",
            help="Seeds start the simulated bank's random draws: each rate runs with this seed and the next ones, "
            "so the same sweep can be repeated exactly and the seeds show how much one day differs from another.",
        )  # fmt: skip
        name = st.text_input("Sweep name", placeholder="e.g. bad Monday", key="sweep_name")
        mine = st.session_state.get(SWEEPING)
        job = wb.whatif.sweep_job(mine) if mine is not None else None
        busy = job is not None and job.running
        submitted = st.form_submit_button(
            "Run sweep", type="primary", disabled=busy,
            help="One sweep at a time: this one is still running (cancel it below)." if busy else None,
        )  # fmt: skip
    if not submitted:
        return
    rates = []
    rate = low
    while rate <= high + 1e-9:
        rates.append(round(rate, 4))
        rate += step
    try:
        job = wb.whatif.start_sweep(batch_id, rates, seeds=int(seeds), seed=int(first_seed), name=name or None)
    except FxBatchError as exc:
        show_error(exc)
        return
    st.session_state[SWEEPING] = job.sweep_id
    st.rerun()  # drawn again with the form off and the sweep's progress


def _sweeps_live(wb: Workbench, sweep_ids: list[int], label: Callable[[SweepJob], str]) -> None:
    """The progress of running sweeps (each named by ``label``); polled by a fragment, which
    redraws the page once one has ended."""
    for sweep_id in sweep_ids:
        job = wb.whatif.sweep_job(sweep_id)
        if job is None or not job.running:
            st.rerun()
        st.progress(job.done / max(job.total, 1), text=f"{label(job)}: {job.done:,} of {job.total:,} scenarios")


def _plain(job: SweepJob) -> str:
    return f"Sweep {job.sweep_id}"


def _sweeping(wb: Workbench) -> None:
    """The sweep this session started: its progress and a cancel while it runs, what became of it
    once it has ended (it is then chosen below, or the page says why there is none)."""
    sweep_id = st.session_state.get(SWEEPING)
    job = wb.whatif.sweep_job(sweep_id) if sweep_id is not None else None
    if job is None:
        st.session_state.pop(SWEEPING, None)
        return
    if job.running:
        st.fragment(run_every=POLL_S)(_sweeps_live)(wb, [job.sweep_id], _plain)
        _cancel_button(wb, job, "Cancel sweep", "cancel_sweep", _CANCEL_HELP)
        st.caption("Leaving this page does not stop the sweep; its result is listed here when it has finished.")
        return
    del st.session_state[SWEEPING]
    if isinstance(job.error, CancelledError):
        st.info(job.error.message, icon=":material/stop_circle:")
    elif job.error is not None:
        show_error(job.error)
    else:
        st.session_state["sweep_pick"] = job.sweep_id  # shown below (before its box is drawn this run)
        st.toast(f"Sweep {job.sweep_id}: {job.total:,} scenarios", icon=":material/insights:")


_CANCEL_HELP = "The scenarios under way end, no other starts, and nothing of the sweep is stored."


def _cancel_button(wb: Workbench, job: SweepJob, label: str, key: str, help_text: str) -> None:
    """A button that cancels a running sweep, then draws the page again once it has stopped (or
    after a moment: the next drawing says so)."""
    if not st.button(label, key=key, icon=":material/stop_circle:", help=help_text):
        return
    try:
        wb.whatif.cancel(job.sweep_id)
    except FxBatchError as exc:
        show_error(exc)
    else:
        job.wait(POLL_S)
        st.rerun()


def _started(job: SweepJob) -> str:
    name = f" ({job.name})" if job.name else ""
    who = f" by {job.started_by}" if job.started_by else ""
    return f"Sweep {job.sweep_id}{name}, started{who} at {job.started_at:%H:%M}"


def _others_sweeping(wb: Workbench, batch_id: int) -> None:
    """Sweeps over this batch that another session (or the API, or a notebook through the server)
    started and that are still running: their progress for everyone, a cancel for analysts."""
    mine = st.session_state.get(SWEEPING)
    others = [job for job in wb.whatif.running_sweeps(batch_id) if job.sweep_id != mine]
    if not others:
        return
    st.fragment(run_every=POLL_S)(_sweeps_live)(wb, [job.sweep_id for job in others], _started)
    if not may(wb, Role.ANALYST):
        return
    for job in others:
        _cancel_button(
            wb, job, f"Cancel sweep {job.sweep_id}", f"cancel_other_sweep_{job.sweep_id}",
            f"{_started(job)}. {_CANCEL_HELP}",
        )  # fmt: skip


def _show_sweep(wb: Workbench, sweep_id: int) -> None:
    try:
        sweep = wb.whatif.get(sweep_id)
    except FxBatchError as exc:
        show_error(exc)
        return
    st.subheader(f"{sweep.name} · {len(sweep.scenarios)} scenarios over batch {sweep.batch_id}")
    if sweep.trade_date is not None:
        st.caption(f"Simulated for trading day {sweep.trade_date:%a %d %b %Y}: its scenarios are promoted on that day.")
    summary = sweep.summary_df()
    scenarios = sweep.scenarios_df()
    for fig, key in ((charts.fan_chart(summary), "fan"), (charts.failure_reasons_chart(scenarios), "reasons")):
        st.plotly_chart(fig, key=key)
        st.caption(charts.caption_of(fig))  # what to read from it
    st.markdown("**Per success rate** (across seeds: mean, 5th and 95th percentiles)", help=_BAND_HELP)
    st.dataframe(summary, hide_index=True, width="stretch", **SUMMARY_TABLE)
    by_number = {s.scenario: s for s in sweep.scenarios}
    with st.expander("Scenarios (click one to promote it)"):
        if not scenarios.empty:  # a sentence per scenario reads better than a nested column
            scenarios["failure_reasons"] = [
                " · ".join(f"{code} {n:,}" for code, n in reasons.items()) for reasons in scenarios["failure_reasons"]
            ]
        event = st.dataframe(
            scenarios, hide_index=True, width="stretch", key="scenarios_table", on_select="rerun",
            selection_mode=SELECT_ROWS, **SCENARIOS_TABLE,
        )  # fmt: skip
    clicked = newly_selected_row(event, "scenarios_table")
    if clicked is not None and clicked < len(scenarios):
        st.session_state["promote_pick"] = int(scenarios["scenario"].iloc[clicked])  # the dropdown follows
    scenario = st.selectbox(
        "Promote a scenario to a full run (per-trade records)",
        list(by_number),
        format_func=lambda n: f"scenario {n}: rate {by_number[n].success_rate:.0%}, seed {by_number[n].seed}",
        key="promote_pick",
    )
    if may(wb, Role.ANALYST):
        _promote(wb, sweep_id, by_number[int(scenario)], sweep.batch_id)


def _promote(wb: Workbench, sweep_id: int, chosen: ScenarioResult, batch_id: int) -> None:
    """Promote asks first (it starts a full run with per-trade records), then links to the new run."""
    if st.session_state.get(PROMOTING) == (sweep_id, chosen.scenario):
        st.session_state.pop(PROMOTED, None)  # asking about a new promotion: the last one's notice goes
    if (started := st.session_state.get(PROMOTED)) is not None:
        run_id, scenario = started
        st.success(f"Run {run_id} started from scenario {scenario}.", icon=":material/play_circle:")
        st.page_link(RUN_PAGE, label=f"Watch run {run_id}", icon=":material/monitoring:",
                     query_params={"run": str(run_id)})  # fmt: skip

    def question() -> None:
        st.info(
            f"**This will run batch {batch_id}: {wb.batch(batch_id).trades:,} trades** against the simulated bank as "
            f"scenario {chosen.scenario} of sweep {sweep_id} set it (success rate {chosen.success_rate:.0%}, seed "
            f"{chosen.seed}), recording every trade. The sweep expects {chosen.succeeded:,} to succeed.",
            icon=":material/play_circle:",
        )

    ask = (f"Promote scenario {chosen.scenario} to a run…", "promote", None)
    subject = (sweep_id, chosen.scenario)
    if confirmed(PROMOTING, subject, ask, question, ("Start the run", "promote_confirm"), ("Back", "promote_back")):
        try:
            job = wb.whatif.start_promote(sweep_id, chosen.scenario)
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[PROMOTED] = (job.run_id, chosen.scenario)
        st.rerun()


_FINAL = frozenset({"COMPLETED", "PARTIAL", "FAILED", "CANCELLED"})


@st.cache_data(max_entries=16, show_spinner=False)
def _compared(_wb: Workbench, db: str, run_ids: tuple[int, ...], versions: tuple[str, ...]) -> pd.DataFrame:
    return _wb.whatif.compare(list(run_ids))


@st.cache_data(max_entries=16, show_spinner=False)
def _differing(_wb: Workbench, db: str, run_a: int, run_b: int, versions: tuple[str, ...]) -> pd.DataFrame:
    return _wb.whatif.differing_trades(run_a, run_b)


def _compare(wb: Workbench) -> None:
    st.subheader("Compare runs")
    runs = wb.runs()
    if len(runs) < 2:
        st.caption("Run a batch at least twice (or promote scenarios) to compare runs.")
        return
    chosen = st.multiselect(
        "Runs",
        [r.run_id for r in runs],
        default=[r.run_id for r in runs[:2]],
        format_func=lambda r: f"run {r}",
        key="compare_runs",
    )
    if len(chosen) < 2:
        return
    # Runs in a final status do not change: their comparison is kept for the page's reruns (a pass
    # over each run's trades: 0.3 s for two runs of a million).
    ended = {r.run_id: f"{r.status.value}:{r.finished_at}" for r in runs if r.status.value in _FINAL}
    versions = tuple(ended.get(r, "") for r in chosen)
    final = all(r in ended for r in chosen)
    try:
        table = _compared(wb, str(wb.settings.db), tuple(chosen), versions) if final else wb.whatif.compare(chosen)
    except FxBatchError as exc:
        show_error(exc)
        return
    compared = charts.comparison_chart(table)
    st.plotly_chart(compared, key="compare_chart")
    st.caption(charts.caption_of(compared))
    shown = table.assign(status=table["status"].map(run_status_label)) if "status" in table else table
    st.dataframe(shown, hide_index=True, width="stretch", column_config=labelled(table.columns, COMPARE_TABLE))
    if len(chosen) == 2:
        try:
            diff = (
                _differing(wb, str(wb.settings.db), chosen[0], chosen[1], versions) if final
                else wb.whatif.differing_trades(chosen[0], chosen[1])
            )  # fmt: skip
        except FxBatchError as exc:
            st.caption(exc.message)
            return
        total, diff = split_differing(diff)
        listed = f" (the first {len(diff):,} listed)" if total > len(diff) else ""
        st.caption(f"{total:,} trade(s) ended differently in run {chosen[0]} and run {chosen[1]}{listed}, of the trades "
                   "both runs cover: a retry run covers the failed trades of the run it retries.")  # fmt: skip
        a, b = chosen
        for column in ("status_a", "status_b"):
            if column in diff:
                diff[column] = diff[column].map(trade_status_label)
        words = {
            "amount": st.column_config.NumberColumn("Amount", format=_ZAR),
            "status_a": f"Status in run {a}", "failure_a": f"Why it failed in run {a}",
            "status_b": f"Status in run {b}", "failure_b": f"Why it failed in run {b}",
        }  # fmt: skip
        st.dataframe(diff, hide_index=True, width="stretch", column_config=labelled(diff.columns, words))


def main() -> None:
    st.title("What-if")
    st.caption("What does a bad day cost? Sweep the bank's success rate over a batch, with several seeds per point.")
    wb = get_workbench()
    if wb is None:
        return
    batches = wb.batches()
    if not batches:
        st.info("No batches yet: upload a spreadsheet or load the sample from Home first.")
        return
    names = {b.batch_id: f"{b.batch_id}: {b.name} ({b.trades:,} trades)" for b in batches}
    batch_id = st.selectbox("Batch", list(names), format_func=names.__getitem__, key="whatif_batch")
    if may(wb, Role.ANALYST):
        _sweep_form(wb, int(batch_id))
        _sweeping(wb)
    else:
        needs_role(wb, Role.ANALYST, "Running a what-if sweep")
    _others_sweeping(wb, int(batch_id))
    sweeps = wb.whatif.sweeps(int(batch_id))
    if sweeps:
        ids = [s.sweep_id for s in sweeps]
        if st.session_state.get("sweep_pick") not in ids:  # none picked yet, or another batch's
            st.session_state["sweep_pick"] = ids[0]
        labels = {s.sweep_id: f"{s.sweep_id}: {s.name} ({s.scenarios} scenarios)" for s in sweeps}
        sweep_id = st.selectbox("Sweep", ids, format_func=labels.__getitem__, key="sweep_pick")
        _show_sweep(wb, int(sweep_id))
    _compare(wb)


main()
