"""Admin: who has which role on this server, and everyone's API tokens."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError, Workbench
from fxbatch.access import ROLE_DOES, Role
from pages.common import (
    TOKENS_NOTICE,
    TableConfig,
    get_workbench,
    may,
    needs_role,
    revoke_form,
    show_error,
    token_table,
)

NOTICE = "admin_notice"
REMOVING = "admin_removing"  # the e-mail whose role this session is asked to confirm removing
USER_TABLE: TableConfig = {
    "column_config": {
        "email": "E-mail",
        "role": "Role",
        "granted_by": "Granted by",
        "granted_at": st.column_config.DatetimeColumn("Granted (UTC)", format="YYYY-MM-DD HH:mm"),
    },
}


def _role_words(role: Role) -> str:
    return f"{role.value.capitalize()}: {ROLE_DOES[role]}"


def _grant(wb: Workbench) -> None:
    st.subheader("Give a role")
    with st.form("grant_role", clear_on_submit=True):
        email = st.text_input("E-mail address", placeholder="name@desk.example", key="grant_email")
        role = st.radio("Role", list(Role), index=0, format_func=_role_words, key="grant_role")
        granted = st.form_submit_button("Give the role", type="primary")
    if not granted or role is None:  # (a radio with an index always has a choice)
        return
    try:
        wb.access.set_role(email, role)
    except FxBatchError as exc:
        show_error(exc)
        return
    st.session_state[NOTICE] = f"{email.strip().lower()} is now {role.value}."
    st.rerun()


def _remove(wb: Workbench, emails: list[str]) -> None:
    st.subheader("Take a role away")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    email = c1.selectbox("User", emails, key="remove_email", help="They can still sign in, and see whom to ask.")
    if st.session_state.get(REMOVING) != email:
        if c2.button("Remove the role…", key="remove", icon=":material/person_remove:"):
            st.session_state[REMOVING] = email
            st.rerun()
        return
    st.warning(f"Take {email}'s role away? They will see nothing until an admin gives them a role again.")
    b1, b2 = st.columns([1, 4])
    if b2.button("Keep it", key="remove_cancel"):
        del st.session_state[REMOVING]
        st.rerun()
    if b1.button("Yes, remove", type="primary", key="remove_confirm"):
        del st.session_state[REMOVING]
        try:
            wb.access.set_role(str(email), None)
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[NOTICE] = f"{email} has no role any more."
        st.rerun()


def main() -> None:
    st.title("Admin")
    wb = get_workbench()
    if wb is None:
        return
    if not may(wb, Role.ADMIN):
        needs_role(wb, Role.ADMIN, "Managing roles and tokens")
        return
    for key in (NOTICE, TOKENS_NOTICE):
        if notice := st.session_state.pop(key, None):
            st.success(notice, icon=":material/check_circle:")
    try:
        users = wb.access.users()
        tokens = wb.access.tokens(everyone=True)
    except FxBatchError as exc:
        show_error(exc)
        return
    st.subheader("Users and roles")
    st.caption(" · ".join(_role_words(r) for r in Role))
    st.dataframe(users, hide_index=True, width="stretch", key="users_table", **USER_TABLE)
    _grant(wb)
    if not users.empty:
        _remove(wb, [str(e) for e in users["email"]])
    st.subheader("Everyone's API tokens")
    if tokens.empty:
        st.caption("Nobody has made a token yet.")
        return
    token_table(tokens, owners=True)
    revoke_form(wb, tokens, "all_tokens")


main()
