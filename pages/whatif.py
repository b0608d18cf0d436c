"""What-if: sweep the bank's success rate over a batch, see the fan chart, compare runs."""

from __future__ import annotations

from typing import Any

import streamlit as st

from fxbatch import FxBatchError, Workbench
from fxbatch.whatif import charts
from pages.common import get_workbench, show_error

_ZAR = "%,.2f"
_INCOME_HELP = "The desk's spread income on the succeeded trades, in ZAR at mid"
_LOST_HELP = "The spread income the failed trades would have earned"
SCENARIOS_TABLE: dict[str, Any] = {
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
SUMMARY_TABLE: dict[str, Any] = {
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
        seeds = st.slider("Seeds per rate (replications)", 1, 20, 5, key="seeds")
        first_seed = st.number_input("First seed", min_value=0, value=42, step=1, key="first_seed")
        name = st.text_input("Sweep name", placeholder="e.g. bad Monday", key="sweep_name")
        submitted = st.form_submit_button("Run sweep", type="primary")
    if not submitted:
        return
    rates = []
    rate = low
    while rate <= high + 1e-9:
        rates.append(round(rate, 4))
        rate += step
    bar = st.progress(0.0, text="Running scenarios…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"{done} of {total} scenarios")

    try:
        result = wb.whatif.sweep(
            batch_id, rates, seeds=int(seeds), seed=int(first_seed), name=name or None, on_progress=progress
        )
    except FxBatchError as exc:
        show_error(exc)
        return
    bar.empty()
    st.session_state["sweep_id"] = result.sweep_id
    st.toast(f"Sweep {result.sweep_id}: {len(result.scenarios)} scenarios", icon=":material/insights:")


def _show_sweep(wb: Workbench, sweep_id: int) -> None:
    try:
        sweep = wb.whatif.get(sweep_id)
    except FxBatchError as exc:
        show_error(exc)
        return
    st.subheader(f"{sweep.name} · {len(sweep.scenarios)} scenarios over batch {sweep.batch_id}")
    summary = sweep.summary_df()
    scenarios = sweep.scenarios_df()
    st.plotly_chart(charts.fan_chart(summary), key="fan")
    st.plotly_chart(charts.income_chart(summary), key="income")
    st.plotly_chart(charts.failure_reasons_chart(scenarios), key="reasons")
    st.markdown("**Per success rate** (across seeds: mean, 5th and 95th percentiles)")
    st.dataframe(summary, hide_index=True, width="stretch", **SUMMARY_TABLE)
    with st.expander("Scenarios"):
        if not scenarios.empty:  # a sentence per scenario reads better than a nested column
            scenarios["failure_reasons"] = [
                " · ".join(f"{code} {n:,}" for code, n in reasons.items()) for reasons in scenarios["failure_reasons"]
            ]
        st.dataframe(scenarios, hide_index=True, width="stretch", **SCENARIOS_TABLE)
    by_number = {s.scenario: s for s in sweep.scenarios}
    scenario = st.selectbox(
        "Promote a scenario to a full run (per-trade records)",
        list(by_number),
        format_func=lambda n: f"scenario {n}: rate {by_number[n].success_rate:.0%}, seed {by_number[n].seed}",
        key="promote_pick",
    )
    if st.button("Promote to run", key="promote"):
        try:
            job = wb.whatif.start_promote(sweep_id, int(scenario))
        except FxBatchError as exc:
            show_error(exc)
        else:
            st.success(f"Run {job.run_id} started from scenario {scenario}.")


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
    try:
        table = wb.whatif.compare(chosen)
    except FxBatchError as exc:
        show_error(exc)
        return
    st.plotly_chart(charts.comparison_chart(table), key="compare_chart")
    st.dataframe(table, hide_index=True, width="stretch")
    if len(chosen) == 2:
        try:
            diff = wb.whatif.differing_trades(chosen[0], chosen[1])
        except FxBatchError as exc:
            st.caption(exc.message)
            return
        st.caption(f"{len(diff)} trade(s) ended differently in run {chosen[0]} and run {chosen[1]}.")
        st.dataframe(diff, hide_index=True, width="stretch")


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
    _sweep_form(wb, int(batch_id))
    sweeps = wb.whatif.sweeps(int(batch_id))
    if sweeps:
        ids = [s.sweep_id for s in sweeps]
        current = st.session_state.get("sweep_id")
        index = ids.index(current) if current in ids else 0
        labels = {s.sweep_id: f"{s.sweep_id}: {s.name} ({s.scenarios} scenarios)" for s in sweeps}
        sweep_id = st.selectbox("Sweep", ids, index=index, format_func=labels.__getitem__, key="sweep_pick")
        _show_sweep(wb, int(sweep_id))
    _compare(wb)


main()
