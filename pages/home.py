"""Home: what is in the database and where to start."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Role
from fxbatch.labels import batch_status_label, run_status_label
from fxbatch.money import zar_compact
from pages.common import (
    BATCH_TABLE,
    POLL_S,
    RUN_PAGE,
    TableConfig,
    get_workbench,
    may,
    outcome_text,
    progress_text,
    show_error,
)

NOTICE = "home_notice"
SEEN = "home_seen_running"
RUNS_TABLE: dict[str, Any] = {
    "run_id": st.column_config.NumberColumn("Run", format="%d", width="small"),
    "batch_id": st.column_config.NumberColumn("Batch", format="%d", width="small"),
    "status": "Status",
    "trades": st.column_config.NumberColumn("Trades", format="%d"),
    "outcome": "Outcome",
    "success": st.column_config.ProgressColumn("Succeeded", format="percent", min_value=0, max_value=1),
    "income": st.column_config.NumberColumn(
        "Spread income (ZAR)",
        format="%,.2f",
        help="The desk's income on the run's succeeded trades (empty: not recorded)",
    ),
    "finished_at": st.column_config.DatetimeColumn("Finished (UTC)", format="YYYY-MM-DD HH:mm:ss"),
}


def _running_now(wb: Workbench) -> None:
    """Runs executing now, with progress (polled while any runs); the page is redrawn once when one ends."""
    active = wb.active_runs()
    ids = sorted(r.run_id for r in active)
    seen = st.session_state.get(SEEN, [])
    st.session_state[SEEN] = ids
    if set(seen) - set(ids):
        st.rerun()
    if not active:
        return
    st.subheader("Running now")
    for snap in active:
        c1, c2 = st.columns([5, 1])
        c1.progress(min(snap.fraction, 1.0), text=progress_text(snap.model_dump()))
        c2.page_link(RUN_PAGE, label="Watch", icon=":material/monitoring:", query_params={"run": str(snap.run_id)})


def _latest_runs(wb: Workbench, n: int = 10) -> None:
    runs = wb.runs()[:n]
    if not runs:
        st.caption("No runs yet: choose a batch on the Batches page and start one.")
        return
    st.subheader("Latest runs")
    df = pd.DataFrame(
        {
            "run_id": [r.run_id for r in runs],
            "batch_id": [r.batch_id for r in runs],
            "status": [run_status_label(r.status) for r in runs],
            "trades": [r.trades for r in runs],
            "outcome": [outcome_text(r.counts) for r in runs],
            "success": [r.counts.get("SUCCESS", 0) / r.trades if r.trades else None for r in runs],
            "income": pd.array([r.spread_income_zar for r in runs], dtype="Float64"),
            "finished_at": [r.finished_at for r in runs],
        }
    )
    st.dataframe(df, hide_index=True, width="stretch", column_config=RUNS_TABLE, key="latest_runs")
    st.page_link(RUN_PAGE, label=f"Review the latest run ({runs[0].run_id})", icon=":material/monitoring:",
                 query_params={"run": str(runs[0].run_id)})  # fmt: skip


def main() -> None:
    st.title("fxbatch")
    st.caption("Load client FX orders from spreadsheets, check them, and execute them as batches.")
    wb = get_workbench()
    if wb is None:
        return
    if notice := st.session_state.pop(NOTICE, None):
        st.success(notice, icon=":material/check_circle:")
    batches = wb.batches()
    col1, col2, col3, col4 = st.columns(4)
    col1.metric("Batches", len(batches))
    col2.metric("Trades loaded", f"{sum(b.trades for b in batches):,}")
    notional = sum(b.notional_zar or 0.0 for b in batches)
    col3.metric("Notional loaded", zar_compact(notional), help=f"R {notional:,.2f}: every batch's trades in ZAR at mid")
    col4.metric("Rows rejected", f"{sum(b.rejected for b in batches):,}")
    if not batches:
        st.info("No batches yet. Upload a trade spreadsheet, or load the bundled sample.")
        if may(wb, Role.ANALYST) and st.button("Load the sample batch", type="primary"):
            try:
                result = wb.load(wb.settings.sample_file, name="Sample batch")
            except FxBatchError as exc:
                show_error(exc)
                return
            # Shown by the rerun, which draws the page with the new batch in it.
            st.session_state[NOTICE] = f"Batch {result.batch_id} created with {result.accepted} trades."
            st.rerun()
        return
    st.fragment(run_every=POLL_S if wb.active_runs() else None)(_running_now)(wb)
    _latest_runs(wb)
    st.subheader("Latest batches")
    latest: TableConfig = {
        **BATCH_TABLE,
        "column_order": ["batch_id", "name", "status", "trades", "notional_zar", "rejected", "created_at"],
    }
    df = wb.batches_df().head(10)
    # A batch's status is that of its latest run (RUNNING while one executes).
    last: dict[int, str] = {}
    for run in wb.runs():  # newest first
        last.setdefault(run.batch_id, run.status.value)
    running = {r.batch_id for r in wb.active_runs()}
    df["status"] = [
        batch_status_label("RUNNING" if b in running else last.get(int(b), s))
        for b, s in zip(df["batch_id"], df["status"], strict=True)
    ]
    st.dataframe(df, hide_index=True, width="stretch", **latest)
    st.page_link("pages/upload.py", label="Upload a new spreadsheet", icon=":material/upload_file:")


main()
