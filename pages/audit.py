"""Audit: who did what and when (loads, runs, approvals, exports, roles, tokens, sign-ins), and whether the
trail's hash chain is intact."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Role
from fxbatch.export import csv_bytes
from pages.common import TableConfig, get_workbench, may, needs_role, show_error

ALL = "Everyone"
ANY = "Any action"
TABLE: TableConfig = {
    "column_order": ["seq", "logged_at", "actor", "action", "object", "params", "outcome"],
    "column_config": {
        "seq": st.column_config.NumberColumn("Entry", format="%d", width="small"),
        "logged_at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
        "actor": "Who",
        "action": "Action",
        "object": "On",
        "params": st.column_config.TextColumn("Details", width="large"),
        "outcome": "Outcome",
    },
}


def _filters(everything: pd.DataFrame) -> tuple[str | None, str | None, datetime | None, datetime | None]:
    c1, c2, c3 = st.columns([2, 2, 2])
    actors = sorted(str(a) for a in everything["actor"].dropna().unique())
    actions = sorted(str(a) for a in everything["action"].dropna().unique())
    actor = c1.selectbox("Who", [ALL, *actors], key="audit_actor")
    action = c2.selectbox("Action", [ANY, *actions], key="audit_action")
    dates = c3.date_input("Between (UTC)", value=[], key="audit_dates")
    since = until = None
    if isinstance(dates, tuple) and len(dates) == 2 and all(isinstance(d, date) for d in dates):
        since = datetime.combine(dates[0], time.min)
        until = datetime.combine(dates[1], time.min) + timedelta(days=1)  # the whole last day
    return (None if actor == ALL else actor), (None if action == ANY else action), since, until


def _check(wb: Workbench) -> None:
    if not st.button("Check the chain", key="verify_audit", icon=":material/link:",
                     help="Recompute every entry's hash: a changed, removed or inserted entry breaks the chain."):  # fmt: skip
        return
    try:
        check = wb.verify_audit()
    except FxBatchError as exc:
        show_error(exc)
        return
    if check.ok:
        st.success(check.message.capitalize() + ".", icon=":material/verified:")
    else:
        st.error(check.message.capitalize() + ".", icon=":material/gpp_bad:")


def main() -> None:
    st.title("Audit")
    st.caption(
        "Every action on this database, one entry each: loads, runs, approvals, exports, unmasked reads, roles, "
        "tokens and sign-ins. Entries are chained by hashes, so a changed or removed entry shows."
    )
    wb = get_workbench()
    if wb is None:
        return
    if not may(wb, Role.ADMIN):
        needs_role(wb, Role.ADMIN, "Reading the audit trail")
        return
    try:
        everything = wb.audit_trail()
    except FxBatchError as exc:
        show_error(exc)
        return
    _check(wb)
    if everything.empty:
        st.info("Nothing has been recorded yet.")
        return
    actor, action, since, until = _filters(everything)
    try:
        rows = (
            everything
            if actor is None and action is None and since is None
            else wb.audit_trail(actor=actor, action=action, since=since, until=until)
        )
    except FxBatchError as exc:
        show_error(exc)
        return
    st.caption(f"{len(rows):,} of {len(everything):,} entries, newest first.")
    st.dataframe(rows, hide_index=True, width="stretch", key="audit_table", **TABLE)
    st.download_button(
        f"Download these {len(rows):,} entries (CSV)",
        csv_bytes(rows),
        file_name="audit-trail.csv",
        mime="text/csv",
        on_click="ignore",
        key="download_audit",
    )


main()
