"""Approvals: real-money runs (against an HTTP bank) wait here for a second person's approval."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Role, current
from fxbatch.approvals import Approval, ApprovalStatus
from pages.common import RUN_PAGE, SELECT_ROWS, TableConfig, get_workbench, may, newly_selected_row, show_error

NOTICE = "approvals_notice"
PICK = "approval_pick"
STATUS_WORDS = {
    ApprovalStatus.PENDING: "Waiting for approval",
    ApprovalStatus.APPROVED: "Approved",
    ApprovalStatus.REJECTED: "Rejected",
    ApprovalStatus.EXPIRED: "Expired",
    ApprovalStatus.USED: "Run started",
    ApprovalStatus.VOID: "Void (something changed)",
}
TABLE: TableConfig = {
    "column_order": ["approval_id", "batch_id", "bank_url", "trades", "requested_by", "requested_at", "status",
                     "decided_by", "reason", "run_id"],
    "column_config": {
        "approval_id": st.column_config.NumberColumn("Request", format="%d", width="small"),
        "batch_id": st.column_config.NumberColumn("Batch", format="%d", width="small"),
        "bank_url": "Bank",
        "trades": st.column_config.NumberColumn("Trades", format="%d"),
        "requested_by": "Requested by",
        "requested_at": st.column_config.DatetimeColumn("Requested (UTC)", format="YYYY-MM-DD HH:mm"),
        "status": "Status",
        "decided_by": "Decided by",
        "reason": st.column_config.TextColumn("Reason", width="medium"),
        "run_id": st.column_config.NumberColumn("Run", format="%d", width="small"),
    },
}  # fmt: skip


def _table(found: list[Approval]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "approval_id": [a.approval_id for a in found],
            "batch_id": [a.batch_id for a in found],
            "bank_url": [a.bank_url or "" for a in found],
            "trades": [a.trades for a in found],
            "requested_by": [a.requested_by for a in found],
            "requested_at": pd.to_datetime([a.requested_at for a in found]),
            "status": [STATUS_WORDS.get(a.status, str(a.status)) for a in found],
            "decided_by": [a.decided_by or "" for a in found],
            "reason": [a.reason or a.void_reason or "" for a in found],
            "run_id": pd.array([a.run_id for a in found], dtype="Int64"),
        }
    )


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC" if value is not None else "-"


def _detail(wb: Workbench, found: Approval) -> None:
    cfg = found.config
    st.subheader(f"Request {found.approval_id}: batch {found.batch_id} · {STATUS_WORDS.get(found.status, '')}")
    st.write(
        f"Run batch {found.batch_id} ({found.trades:,} trades) against the HTTP bank at {found.bank_url}, "
        f"{cfg.concurrency} calls at once, up to {cfg.max_attempts} attempts per trade."
    )
    lines = [
        f"Requested by {found.requested_by} on {_when(found.requested_at)}; the request expires on "
        f"{_when(found.expires_at)}."
    ]
    if found.decided_by:
        verb = "Rejected" if found.status is ApprovalStatus.REJECTED else "Approved"
        lines.append(f"{verb} by {found.decided_by} on {_when(found.decided_at)}.")
    st.caption(" ".join(lines))
    if found.status is ApprovalStatus.REJECTED and found.reason:
        st.warning(f"Why it was rejected: {found.reason}", icon=":material/block:")
    if found.status is ApprovalStatus.VOID:
        st.warning(
            f"This request no longer holds: {found.void_reason or 'the batch or the settings changed'}. "
            "Request the run again from the Batches page.",
            icon=":material/report:",
        )
    if found.status is ApprovalStatus.EXPIRED:
        st.info("This request expired before its run started. Request the run again from the Batches page.")
    if found.status is ApprovalStatus.USED and found.run_id is not None:
        st.page_link(RUN_PAGE, label=f"Open run {found.run_id}", icon=":material/monitoring:",
                     query_params={"run": str(found.run_id)})  # fmt: skip
    if found.status is ApprovalStatus.PENDING:
        _decide(wb, found)
    if found.status is ApprovalStatus.APPROVED:
        _start(wb, found)


def _decide(wb: Workbench, found: Approval) -> None:
    if not may(wb, Role.APPROVER):
        st.info("An approver other than the requester decides on this request.", icon=":material/hourglass_top:")
        return
    me = current()
    if wb.access.four_eyes and me is not None and me.name == found.requested_by:
        st.info(
            "You requested this run yourself: another approver must approve or reject it (four eyes).",
            icon=":material/group:",
        )
        return
    c1, c2 = st.columns([1, 3])
    if c1.button("Approve", type="primary", key="approve", icon=":material/check:"):
        try:
            wb.approve(found.approval_id)
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[NOTICE] = f"Request {found.approval_id} is approved: an analyst may now start the run."
        st.rerun()
    # Keyed by request: a reason typed for one would otherwise reject the next one opened.
    reason = c2.text_input(
        "Reason for rejecting", key=f"reject_reason_{found.approval_id}", placeholder="Required to reject"
    )
    if c2.button("Reject", key="reject", icon=":material/close:"):
        if not reason.strip():
            st.error("Say why you reject the request: the requester reads it.", icon=":material/error:")
            return
        try:
            wb.reject(found.approval_id, reason.strip())
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[NOTICE] = f"Request {found.approval_id} is rejected."
        st.rerun()


def _start(wb: Workbench, found: Approval) -> None:
    if not may(wb, Role.ANALYST):
        return
    st.success(
        f"Approved by {found.decided_by}: the run can start once, with exactly these settings.",
        icon=":material/verified:",
    )
    if st.button("Start the approved run", type="primary", key="start_approved", icon=":material/play_arrow:"):
        try:
            job = wb.start_approved(found.approval_id)
        except FxBatchError as exc:
            show_error(exc)
            return
        st.switch_page(RUN_PAGE, query_params={"run": str(job.run_id)})


def _awaiting_settlements(wb: Workbench) -> None:
    """Settlements of bookings in doubt proposed by hand and waiting for an approver: decided on the
    run's page, where its bookings in doubt are shown."""
    waiting = wb.awaiting_settlements()
    if not waiting:
        return
    with st.container(border=True):
        st.markdown(f"**Settlements of bookings in doubt waiting for a decision ({len(waiting):,})**")
        for s in waiting:
            st.markdown(
                f"#{s.settlement_id}, run {s.run_id}: {s.rows_text()}; proposed by {s.proposed_by} at "
                f"{s.proposed_at:%Y-%m-%d %H:%M} UTC (*{s.note}*)"
            )
            st.page_link(RUN_PAGE, label=f"Open run {s.run_id} to confirm or reject it", icon=":material/gavel:",
                         query_params={"run": str(s.run_id)})  # fmt: skip


def main() -> None:
    st.title("Approvals")
    st.caption(
        "A run against an HTTP bank moves real money: an analyst requests it on the Batches page, and an approver "
        "other than the requester approves or rejects it here. An approved request starts one run. Settlements "
        "of bookings in doubt proposed by hand on such runs are listed here too, and decided on the run's page."
    )
    wb = get_workbench()
    if wb is None:
        return
    if notice := st.session_state.pop(NOTICE, None):
        st.success(notice, icon=":material/check_circle:")
    try:
        _awaiting_settlements(wb)
        found = wb.approvals()
    except FxBatchError as exc:
        show_error(exc)
        return
    if not found:
        st.info("No requests yet. Request a run against an HTTP bank from the Batches page.")
        return
    df = _table(found)
    event = st.dataframe(
        df, hide_index=True, width="stretch", key="approvals_table", on_select="rerun", selection_mode=SELECT_ROWS,
        **TABLE,
    )  # fmt: skip
    by_id = {a.approval_id: a for a in found}
    asked = st.query_params.get("approval")
    if PICK not in st.session_state and asked and asked.isdigit() and int(asked) in by_id:
        st.session_state[PICK] = int(asked)  # the link from the Batches page
    clicked = newly_selected_row(event, "approvals_table")
    if clicked is not None and clicked < len(df):
        st.session_state[PICK] = int(df["approval_id"].iloc[clicked])
    if st.session_state.get(PICK) not in by_id:
        st.session_state.pop(PICK, None)
    choice = st.selectbox(
        "Request",
        list(by_id),
        format_func=lambda i: f"{i}: batch {by_id[i].batch_id}, requested by {by_id[i].requested_by}",
        key=PICK,
        help="Click a row of the table above, or choose here.",
    )
    _detail(wb, by_id[int(choice)])


main()
