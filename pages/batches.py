"""Batches: every batch with its last run, live progress of running ones, and the actions on a batch."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Role
from fxbatch.errors import invalid_values
from fxbatch.labels import batch_status_label, field_label
from fxbatch.masking import export_name
from fxbatch.models import DEFAULT_FAILURE_MIX, FailureCode, RunConfig, RunSummary
from fxbatch.workbench import make_config, retry_seed
from pages.common import (
    BATCH_TABLE,
    POLL_S,
    REJECTION_TABLE,
    RUN_PAGE,
    SELECT_ROWS,
    TRADE_TABLE,
    TableConfig,
    cancel_with_confirmation,
    confirmed,
    deferred_export,
    get_workbench,
    may,
    needs_role,
    newly_selected_row,
    outcome_text,
    progress_text,
    show_error,
)

PAGE_ROWS = 500
APPROVALS_PAGE = "pages/approvals.py"
REQUESTED = "batches_requested"  # the approval request this session just made: (batch_id, approval_id)
PENDING_RUN = "batches_pending_run"  # the run the analyst is asked to confirm: (batch_id, config json)
DELETING = "batches_deleting"  # the batch the analyst is asked to confirm deleting
NOTICE = "batches_notice"
SORTS = {
    "Newest first": ("batch_id", False),
    "Oldest first": ("batch_id", True),
    "Name": ("name", True),
    "Most trades": ("trades", False),
}
TABLE: TableConfig = {
    "column_order": [
        "batch_id",
        "name",
        "status",
        "trades",
        "notional_zar",
        "last_run",
        "outcome",
        "success",
        "rejected",
        "source_file",
        "created_at",
    ],
    "column_config": {
        **BATCH_TABLE["column_config"],  # the shared batch columns, plus the last run's
        "last_run": st.column_config.NumberColumn("Last run", format="%d", width="small"),
        "outcome": "Last run's outcome",
        "success": st.column_config.ProgressColumn("Succeeded", format="percent", min_value=0, max_value=1),
    },
}


def _open_run(run_id: int) -> None:
    st.switch_page(RUN_PAGE, query_params={"run": str(run_id)})


def _overview(wb: Workbench) -> tuple[pd.DataFrame, dict[int, RunSummary]]:
    """Batches with their status (that of the latest run) and the latest run per batch."""
    df = wb.batches_df()
    latest: dict[int, RunSummary] = {}
    for run in wb.runs():  # newest first
        latest.setdefault(run.batch_id, run)
    running = {r.batch_id for r in wb.active_runs()}
    status, last_run, outcome, success = [], [], [], []
    for batch_id in df["batch_id"]:
        last = latest.get(int(batch_id))
        status.append(batch_status_label("RUNNING" if batch_id in running else (last.status if last else "LOADED")))
        last_run.append(last.run_id if last else None)
        outcome.append(outcome_text(last.counts) if last else "never run")
        success.append(last.counts.get("SUCCESS", 0) / last.trades if last and last.trades else None)
    df["status"], df["last_run"], df["outcome"], df["success"] = status, last_run, outcome, success
    return df, latest


def _filters(df: pd.DataFrame) -> pd.DataFrame:
    c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
    statuses = c1.multiselect("Status", sorted(set(df["status"])), key="b_status")
    dates = c2.date_input("Created between (UTC)", value=[], key="b_dates")
    text = c3.text_input("Search name or file", key="b_text")
    sort = c4.selectbox("Sort", list(SORTS), key="b_sort")
    keep = pd.Series(True, index=df.index)
    if statuses:
        keep &= df["status"].isin(statuses)
    if isinstance(dates, tuple) and len(dates) == 2 and all(isinstance(d, date) for d in dates):
        created = df["created_at"].dt.date
        keep &= (created >= dates[0]) & (created <= dates[1])
    if text.strip():
        needle = text.strip().lower()
        keep &= df["name"].str.lower().str.contains(needle, regex=False) | df["source_file"].str.lower().str.contains(
            needle, regex=False
        )
    column, ascending = SORTS[sort]
    return df[keep].sort_values(column, ascending=ascending, kind="stable")


def _running_now(wb: Workbench) -> None:
    """Progress bars of the running batches (polled); the page is redrawn once when one ends."""
    active = wb.active_runs()
    ids = sorted(r.run_id for r in active)
    seen = st.session_state.get("batches_seen_running", [])
    st.session_state["batches_seen_running"] = ids
    if set(seen) - set(ids):
        st.rerun()  # a run ended: statuses and outcomes in the table changed
    for snap in active:
        st.progress(min(snap.fraction, 1.0), text=progress_text(snap.model_dump()))


# -- actions on one batch -------------------------------------------------------------------------


def _mix_editor() -> dict[FailureCode, float]:
    # The reasons the simulated bank draws; client and account checks come from a client registry instead.
    mix = pd.DataFrame({"reason": [c.value for c in DEFAULT_FAILURE_MIX], "weight": list(DEFAULT_FAILURE_MIX.values())})
    edited = st.data_editor(
        mix,
        hide_index=True,
        disabled=["reason"],
        key="mix",
        column_config={
            "reason": "Failure reason",
            "weight": st.column_config.NumberColumn("Weight", min_value=0.0, max_value=100.0, step=0.01),
        },
    )
    return {FailureCode(r): float(w) for r, w in zip(edited["reason"], edited["weight"], strict=True) if w and w > 0}


# The run form's bank choice -> whether it is the HTTP bank.
BANKS = {"Simulated": False, "HTTP": True}


def _start_form(wb: Workbench, batch_id: int, trades: int) -> None:
    with st.form("start_run"):
        c1, c2, c3 = st.columns(3)
        rate = c1.slider("Bank success rate", 0.0, 1.0, 0.95, step=0.01, key="rate")
        seed = c1.number_input(
            "Seed", min_value=0, value=42, step=1, key="seed",
            help="Starts the simulated bank's random draws: the same seed and settings give the same outcome for "
            "every trade, so a run can be repeated exactly. Change it to see another day with the same odds.",
        )  # fmt: skip
        latency = c2.number_input("Latency per bank call (ms)", min_value=0.0, max_value=5000.0, value=0.0,
                                  step=5.0, key="latency")  # fmt: skip
        concurrency = c2.number_input(
            "Concurrency", min_value=1, max_value=1024, value=16, step=1, key="concurrency",
            help="How many trades are with the bank at the same time. More finishes sooner if the bank keeps up; "
            "a real bank may limit how many calls it takes at once.",
        )  # fmt: skip
        attempts = c3.number_input("Max attempts", min_value=1, max_value=20, value=3, step=1, key="attempts")
        kind = c3.radio("Bank", list(BANKS), key="bank_kind", horizontal=True)
        url = c3.text_input(
            "HTTP bank URL",
            value=wb.settings.bank_url or "",
            placeholder="http://127.0.0.1:8600",
            key="bank_url",
            help="Used when the bank is HTTP: the trading API's base URL. Credentials come from the settings "
            "(FXBATCH_BANK_* or the [fxbatch] Streamlit secrets).",
        )
        st.caption(
            "Failure mix: relative weights of the reasons among failing trades. Success rate, failure mix and "
            "latency shape the simulated bank; an HTTP bank decides for itself."
        )
        mix = _mix_editor()
        submitted = st.form_submit_button("Review the run…", type="primary")
    if submitted:
        bank_url = url if BANKS[kind] else None
        if not mix and rate < 1 and bank_url is None:
            st.error(
                "Give at least one failure reason a weight above 0: the failure mix says why the trades that fail "
                "fail.",
                icon=":material/error:",
            )
            return
        if bank_url is not None and not bank_url.strip():
            st.error("Enter the HTTP bank's base URL, for example http://127.0.0.1:8600.", icon=":material/error:")
            return
        try:
            config = make_config(
                RunConfig(), success_rate=rate, seed=int(seed), latency_ms=float(latency),
                concurrency=int(concurrency), max_attempts=int(attempts), failure_mix=mix, bank_url=bank_url,
            )  # fmt: skip
        except ValidationError as exc:  # a value out of range, a bank URL that is no address
            st.error(f"These settings cannot run: {'; '.join(invalid_values(exc))}.", icon=":material/error:")
            return
        st.session_state[PENDING_RUN] = (batch_id, config.model_dump_json())
    pending = st.session_state.get(PENDING_RUN)
    if not pending or pending[0] != batch_id:
        return
    config = RunConfig.model_validate_json(pending[1])
    bank = config.bank
    mix_text = ", ".join(f"{c.value} {w:.0%}" for c, w in sorted(bank.normalised_mix().items(), key=lambda x: -x[1]))
    if config.bank_url:
        against = (
            f"against the HTTP bank at {config.bank_url} (client id {wb.settings.bank_client_id}, "
            f"{wb.settings.bank_grant.replace('_', ' ')} grant, dealer {wb.settings.bank_user_id}), "
            f"{config.concurrency} calls at once, up to {config.max_attempts} attempts per trade. "
            "The bank decides each outcome."
        )
    else:
        against = (
            f"against the simulated bank with a success rate of {bank.success_rate:.0%}, seed {config.seed}, "
            f"{bank.latency_ms:g} ms per bank call, {config.concurrency} calls at once, up to "
            f"{config.max_attempts} attempts per trade. Failures: {mix_text}."
        )
    # With sign-in, real money waits for a second person: the button asks for approval instead of starting.
    four_eyes = bool(config.bank_url) and wb.access.four_eyes
    if four_eyes:
        st.info(
            f"**Batch {batch_id}: {trades:,} trades** would run {against} A run against an HTTP bank moves real "
            "money: an approver other than you must approve it before it can start.",
            icon=":material/verified_user:",
        )
    else:
        st.info(f"**This will run batch {batch_id}: {trades:,} trades** {against}", icon=":material/play_circle:")
    c1, c2 = st.columns([1, 5])
    if c2.button("Change settings", key="run_back"):
        del st.session_state[PENDING_RUN]
        st.rerun()
    if four_eyes and c1.button("Request approval", type="primary", key="run_confirm"):
        del st.session_state[PENDING_RUN]
        try:
            request = wb.request_run(batch_id, config)
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[REQUESTED] = (batch_id, request.approval_id)
        st.rerun()
    if not four_eyes and c1.button("Start the run", type="primary", key="run_confirm"):
        del st.session_state[PENDING_RUN]
        try:
            job = wb.start_run(batch_id, config)
        except FxBatchError as exc:
            show_error(exc)
            return
        _open_run(job.run_id)


def _requested(batch_id: int) -> None:
    """The approval request just made for this batch, with the way to the Approvals page."""
    made = st.session_state.get(REQUESTED)
    if not made or made[0] != batch_id:
        return
    st.success(
        f"Approval request {made[1]} is waiting for an approver. The run starts from the Approvals page once "
        "another person has approved it.",
        icon=":material/verified_user:",
    )
    st.page_link(APPROVALS_PAGE, label=f"Open approval request {made[1]}", icon=":material/verified_user:",
                 query_params={"approval": str(made[1])})  # fmt: skip


def _actions(wb: Workbench, batch_id: int, trades: int, latest: RunSummary | None) -> None:
    running = [r for r in wb.active_runs() if r.batch_id == batch_id]
    analyst = may(wb, Role.ANALYST)
    if running:
        run_id = running[0].run_id
        st.info(f"Run {run_id} of this batch is executing.", icon=":material/directions_run:")
        if st.button("Watch it", key="watch"):
            _open_run(run_id)
        if analyst:
            cancel_with_confirmation(wb, run_id, "cancel")
    elif analyst:
        _requested(batch_id)
        _start_form(wb, batch_id, trades)
    else:
        needs_role(wb, Role.ANALYST, "Running a batch")
    if not analyst:
        return
    failed = latest.counts.get("FAILED", 0) if latest else 0
    if latest is None or not failed or running:
        return
    if latest.config.bank_url and wb.access.four_eyes:  # a retry against the HTTP bank is real money too
        if st.button(f"Request approval to retry the {failed:,} failed trades of run {latest.run_id}", key="retry"):
            try:
                request = wb.request_run(batch_id, retry_of_run=latest.run_id)
            except FxBatchError as exc:
                show_error(exc)
                return
            st.session_state[REQUESTED] = (batch_id, request.approval_id)
            st.rerun()
        return
    again = (
        "" if latest.config.bank_url else f"; the simulated bank answers afresh (seed {retry_seed(latest.config.seed)})"
    )
    if st.button(f"Retry the {failed:,} failed trades of run {latest.run_id}", key="retry",
                 help=f"With run {latest.run_id}'s settings{again}."):  # fmt: skip
        try:
            job = wb.start_run(batch_id, retry_of_run=latest.run_id)
        except FxBatchError as exc:
            show_error(exc)
        else:
            _open_run(job.run_id)


def _delete(wb: Workbench, batch_id: int, name: str) -> None:
    def question() -> None:
        runs = len(wb.runs(batch_id))
        st.warning(
            f"Delete batch {batch_id} '{name}' with its trades, rejections and {runs} run(s)? This cannot be undone.",
            icon=":material/delete_forever:",
        )

    ask = ("Delete this batch…", "delete", ":material/delete:")
    if confirmed(DELETING, batch_id, ask, question, ("Yes, delete", "delete_confirm"), ("Keep it", "delete_cancel"),
                 widths=(1, 5)):  # fmt: skip
        try:
            wb.delete_batch(batch_id)
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[NOTICE] = f"Batch {batch_id} '{name}' was deleted."
        st.rerun()


def _rows(wb: Workbench, batch_id: int) -> None:
    analyst = may(wb, Role.ANALYST)  # full account numbers and exports: analysts and above
    unmask = analyst and st.toggle(
        "Unmask accounts", key="batch_unmask", help="Account numbers show their last 4 digits unless on."
    )
    try:
        trades = wb.trades(batch_id, limit=PAGE_ROWS, unmask=unmask)
        rejections = wb.rejections(batch_id, limit=PAGE_ROWS + 1, unmask=unmask)  # one more: are there more?
        corrections = wb.corrections(batch_id, limit=PAGE_ROWS + 1, unmask=unmask)  # one more: are there more?
        info = wb.batch(batch_id)
        total = info.trades
    except FxBatchError as exc:
        show_error(exc)
        return
    labels = [f"Trades ({total:,})", f"Rejections ({info.rejected:,} rows)"]
    if not corrections.empty:
        labels.append(f"Corrected cells ({len(corrections):,})" if len(corrections) <= PAGE_ROWS
                      else f"Corrected cells (over {PAGE_ROWS:,})")  # fmt: skip
    tab1, tab2, *tab3 = st.tabs(labels)
    for tab in tab3:
        with tab:
            st.caption("Cells corrected on the Upload page (or with load --fixes) before the batch was created.")
            if len(corrections) > PAGE_ROWS:
                st.caption(f"Showing the first {PAGE_ROWS} corrected cells.")
            st.dataframe(
                corrections.head(PAGE_ROWS).assign(field=corrections["field"].map(field_label)),  # 'Side', not 'side'
                hide_index=True,
                width="stretch",
                column_config={
                    "row": st.column_config.NumberColumn("Row", format="%d", help="Row in the uploaded file"),
                    "field": "Field",
                    "original": "In the file",
                    "corrected": "Corrected to",
                },
            )
    with tab1:
        st.dataframe(trades, hide_index=True, width="stretch", key="batch_trades", **TRADE_TABLE)
        if total > PAGE_ROWS:
            st.caption(f"Showing the first {PAGE_ROWS} of {total:,} trades.")
        name = export_name(f"batch_{batch_id}_trades.csv", unmask=unmask)  # an unmasked file says so
        if analyst:
            st.download_button(
                f"Download {name} ({total:,} trades)",
                deferred_export(lambda path, full: wb.export_batch(batch_id, path, unmask=full), ".csv", unmask),
                file_name=name,
                mime="text/csv",
                on_click="ignore",
                key="download_trades",
            )
    with tab2:
        if rejections.empty:
            st.caption("Every data row of this batch's file was accepted.")
        else:
            st.dataframe(rejections.head(PAGE_ROWS), hide_index=True, width="stretch", **REJECTION_TABLE)
            if len(rejections) > PAGE_ROWS:
                st.caption(f"Showing the first {PAGE_ROWS} problems; the download has every one.")
            name = export_name(f"batch_{batch_id}_rejections.csv", unmask=unmask)
            if analyst:
                st.download_button(
                    "Download all rejections (CSV, UNMASKED)" if unmask else "Download all rejections (CSV)",
                    # Built when clicked (an export: on the audit trail), masked unless unmasked.
                    deferred_export(
                        lambda path, full: wb.export_rejections(batch_id, path, unmask=full), ".csv", unmask
                    ),
                    file_name=name,
                    mime="text/csv",
                    on_click="ignore",
                    key="download_rejections",
                )


def main() -> None:
    st.title("Batches")
    wb = get_workbench()
    if wb is None:
        return
    if notice := st.session_state.pop(NOTICE, None):
        st.success(notice, icon=":material/check_circle:")
    try:
        df, latest = _overview(wb)
    except FxBatchError as exc:
        show_error(exc)
        return
    if df.empty:
        st.info("No batches yet: upload a spreadsheet first.")
        st.page_link("pages/upload.py", label="Upload a spreadsheet", icon=":material/upload_file:")
        return
    st.fragment(run_every=POLL_S if wb.active_runs() else None)(_running_now)(wb)
    shown = _filters(df)
    event = st.dataframe(
        shown, hide_index=True, width="stretch", key="batches_table", on_select="rerun", selection_mode=SELECT_ROWS,
        **TABLE,
    )  # fmt: skip
    if shown.empty:
        st.caption("No batch matches these filters.")
        return
    names = dict(zip(shown["batch_id"], shown["name"], strict=True))
    trades = dict(zip(shown["batch_id"], shown["trades"], strict=True))
    clicked = newly_selected_row(event, "batches_table")
    if clicked is not None and clicked < len(shown):
        st.session_state["batch"] = int(shown["batch_id"].iloc[clicked])  # the dropdown follows the click
    choice = int(
        st.selectbox(
            "Batch", list(names), format_func=lambda b: f"{b}: {names[b]}", key="batch",
            help="Click a row of the table above, or choose here.",
        )
    )  # fmt: skip
    st.subheader(f"Batch {choice}: {names[choice]}")
    _actions(wb, choice, int(trades[choice]), latest.get(choice))
    if latest.get(choice) is not None:
        st.page_link(RUN_PAGE, label=f"Review run {latest[choice].run_id}", icon=":material/monitoring:",
                     query_params={"run": str(latest[choice].run_id)})  # fmt: skip
    _rows(wb, choice)
    if may(wb, Role.ANALYST):
        _delete(wb, choice, str(names[choice]))


main()
