"""API tokens: personal tokens for the CLI, notebooks and scripts on a server with sign-in."""

from __future__ import annotations

import streamlit as st

from fxbatch import FxBatchError, Workbench
from pages.common import TOKENS_NOTICE as NOTICE
from pages.common import get_workbench, revoke_form, show_error, token_table

NEW_TOKEN = "tokens_new"  # the token just made: shown in this run only, never again


def _make(wb: Workbench) -> None:
    most = wb.access.token_days
    with st.form("new_token", clear_on_submit=True):
        c1, c2 = st.columns([3, 1])
        name = c1.text_input("What is it for?", placeholder="e.g. laptop notebook", key="token_name", max_chars=100)
        days = c2.number_input("Valid for (days)", min_value=1, max_value=most, value=min(30, most), step=1,
                               key="token_days")  # fmt: skip
        made = st.form_submit_button("Make a token", type="primary")
    if not made:
        return
    try:
        new = wb.access.create_token(name, int(days))
    except FxBatchError as exc:
        show_error(exc)
        return
    st.session_state[NEW_TOKEN] = (new.token_id, new.token, new.name, f"{new.expires_at:%Y-%m-%d %H:%M}")
    st.rerun()


def main() -> None:
    st.title("API tokens")
    st.caption(
        "A personal token lets the command line, a notebook or a script act as you on this server, with your role. "
        "Keep it secret; revoke it when you no longer need it."
    )
    wb = get_workbench()
    if wb is None:
        return
    if notice := st.session_state.pop(NOTICE, None):
        st.success(notice, icon=":material/check_circle:")
    if (new := st.session_state.pop(NEW_TOKEN, None)) is not None:
        token_id, token, name, expires = new
        st.success(f"Token {token_id} '{name}' is made; it expires on {expires} UTC.", icon=":material/key:")
        st.code(token, language=None)
        st.warning("Copy it now: it is not shown again. Use it as FXBATCH_TOKEN.", icon=":material/content_copy:")
    _make(wb)
    try:
        tokens = wb.access.tokens()
    except FxBatchError as exc:
        show_error(exc)
        return
    st.subheader("Your tokens")
    if tokens.empty:
        st.caption("You have no tokens yet.")
        return
    token_table(tokens, owners=False)
    revoke_form(wb, tokens, "own_tokens")


main()
