"""Audit: who did what and when (loads, runs, approvals, exports, roles, tokens, sign-ins), and whether the
trail's hash chain is intact."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import streamlit as st

from fxbatch import FxBatchError, Workbench, audit
from fxbatch.access import Role
from fxbatch.export import csv_bytes
from pages.common import TableConfig, as_this_user, get_workbench, may, needs_role, show_error

ALL = "Everyone"
ANY = "Any action"
SHOWN = 1_000  # entries sent to the browser at most
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


def _filters(known: audit.Overview) -> tuple[str | None, str | None, datetime | None, datetime | None]:
    c1, c2, c3 = st.columns([2, 2, 2])
    actor = c1.selectbox("Who", [ALL, *known.actors], key="audit_actor")
    action = c2.selectbox("Action", [ANY, *known.actions], key="audit_action")
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
        known = wb.audit_overview()
    except FxBatchError as exc:
        show_error(exc)
        return
    _check(wb)
    if not known.entries:
        st.info("Nothing has been recorded yet.")
        return
    actor, action, since, until = _filters(known)
    try:
        # The newest entries only go to the browser; the download has every one that matches.
        rows = wb.audit_trail(actor=actor, action=action, since=since, until=until, limit=SHOWN)
        matching = (
            known.entries if actor is None and action is None and since is None
            else wb.audit_count(actor=actor, action=action, since=since, until=until)
        )  # fmt: skip
    except FxBatchError as exc:
        show_error(exc)
        return
    shown = f"the newest {len(rows):,} of " if matching > len(rows) else ""
    st.caption(f"Showing {shown}{matching:,} matching of {known.entries:,} entries, newest first.")
    st.dataframe(rows, hide_index=True, width="stretch", key="audit_table", **TABLE)
    st.download_button(
        f"Download these {matching:,} entries (CSV)",
        as_this_user(lambda: csv_bytes(wb.audit_trail(actor=actor, action=action, since=since, until=until))),
        file_name="audit-trail.csv",
        mime="text/csv",
        on_click="ignore",
        key="download_audit",
    )


main()
