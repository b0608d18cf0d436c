"""fxbatch Streamlit app: the router. Settings -> sign-in -> services -> navigation; pages do the rest.

Without sign-in (no ``[auth]`` section) the OS user may do everything, as always. With it, a
visitor who is not signed in sees only a sign-in page; a signed-in user without a role sees whom
to ask; everyone else acts as themselves (``fxbatch.access.act_as``) and sees the pages their role uses.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from pydantic import ValidationError

from fxbatch import FxBatchError, Workbench
from fxbatch.access import Principal, Role, act_as
from fxbatch.login import LoginConfig
from pages.common import ROUTED, app_login, show_error, signed_in_principal, workbench

SIGNED_IN = "fxbatch_signed_in"  # the e-mail whose sign-in this browser session has recorded


def _pages(login: bool, role: Role) -> list[Any]:
    pages = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/upload.py", title="Upload", icon=":material/upload_file:"),
        st.Page("pages/batches.py", title="Batches", icon=":material/table_view:"),
        st.Page("pages/run.py", title="Run detail", icon=":material/monitoring:"),
        st.Page("pages/whatif.py", title="What-if", icon=":material/insights:"),
    ]
    if login:  # without sign-in no run waits for a second person
        pages.append(st.Page("pages/approvals.py", title="Approvals", icon=":material/verified_user:"))
        pages.append(st.Page("pages/tokens.py", title="API tokens", icon=":material/key:"))
    if role.allows(Role.ADMIN):
        if login:
            pages.append(st.Page("pages/admin.py", title="Admin", icon=":material/manage_accounts:"))
        pages.append(st.Page("pages/audit.py", title="Audit", icon=":material/policy:"))
    return pages


def _only(page: Any, title: str) -> None:
    """Show one page and nothing else (navigation hidden, so no other page's URL opens)."""
    st.navigation([st.Page(page, title=title, default=True)], position="hidden").run()


def _sign_in_page(login: LoginConfig) -> None:
    def page() -> None:
        st.title("fxbatch")
        st.write("Sign in with your desk account to see and run FX batches.")
        if st.button("Sign in", type="primary", icon=":material/login:", key="sign_in"):
            if login.provider:
                st.login(login.provider)
            else:
                st.login()

    _only(page, "Sign in")


def _no_role_page(wb: Workbench, principal: Principal) -> None:
    def page() -> None:
        st.title("fxbatch")
        admins = ", ".join(wb.access.admins()) or "the admin named in the server's settings"
        st.warning(
            f"You have no role on this fxbatch server yet. Ask an admin: {admins}. (Signed in as {principal.name}.)",
            icon=":material/lock:",
        )
        if st.button("Sign out", key="sign_out"):
            st.logout()

    _only(page, "No role yet")


def _signed_in(wb: Workbench, login: LoginConfig) -> Principal | None:
    """The signed-in principal (None: only the sign-in or no-role page was shown)."""
    try:
        principal = signed_in_principal(wb)
    except FxBatchError as exc:  # the provider gave no usable e-mail address
        show_error(exc)
        if st.button("Sign out", key="sign_out"):
            st.logout()
        return None
    if principal is None:
        act_as(None)
        _sign_in_page(login)
        return None
    act_as(principal)
    if st.session_state.get(SIGNED_IN) != principal.name:
        st.session_state[SIGNED_IN] = principal.name
        wb.access.record_sign_in(principal)
    if principal.role is None:
        _no_role_page(wb, principal)
        return None
    with st.sidebar:
        st.caption(f"Signed in as {principal.name} · {principal.role.value}")
        if st.button("Sign out", key="sign_out", icon=":material/logout:"):
            st.logout()
    return principal


def run() -> None:
    st.set_page_config(page_title="fxbatch", page_icon=":material/currency_exchange:", layout="wide")
    st.session_state[ROUTED] = True  # pages.common.ROUTED: see _ensure_router there
    try:
        login = app_login()
    except (FxBatchError, ValidationError) as exc:  # a wrong [auth] section or setting: said, and nothing else
        act_as(None)
        show_error(exc)
        st.stop()
    if login is None:
        act_as(None)  # the OS user, who may do everything
        st.navigation(_pages(False, Role.ADMIN)).run()
        return
    if not st.user.to_dict().get("is_logged_in"):  # no data, not even the database opened, before sign-in
        act_as(None)
        _sign_in_page(login)
        return
    try:
        wb = workbench(login=True)
    except (FxBatchError, ValidationError) as exc:
        act_as(None)
        show_error(exc)
        st.stop()
    principal = _signed_in(wb, login)
    if principal is None or principal.role is None:
        return
    st.navigation(_pages(True, principal.role)).run()


if __name__ == "__main__":
    run()
