"""What every page shares: the workbench (one per server process) and error display."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from fxbatch import FxBatchError, Settings, Workbench
from fxbatch.access import Principal, Role, act_as, acting, current
from fxbatch.errors import ServerError, SettingsError
from fxbatch.labels import field_label
from fxbatch.login import LoginConfig, login_config
from fxbatch.masking import export_path
from fxbatch.serving import current_login, current_workbench, hosted_here
from fxbatch.settings import settings_from_secrets

T = TypeVar("T")


def workbench(login: bool | None = None) -> Workbench:
    """The process-wide workbench: the one the server hosts (``server.py``: UI and API in one
    process), else one of the app's own, created with the sample batch on first start.

    Settings come from FXBATCH_* variables over the ``[fxbatch]`` section of Streamlit secrets
    (``.streamlit/secrets.toml``), where the HTTP bank's credentials belong. ``login`` (None: as
    the ``[auth]`` section says) opens the app's own workbench with sign-in.
    """
    hosted = current_workbench()  # the server opens and closes it: never cached (and closed) here
    if hosted is not None:
        return hosted
    if hosted_here(app_settings().db):
        # This process serves the file, yet its host is gone from view (Streamlit reloaded the
        # project's modules): a second workbench here would run batches beside the API's.
        raise ServerError(
            "This fxbatch server's code was reloaded while it ran, and the app lost its database. "
            "Restart the server (make run); runs in progress stay resumable."
        )
    return _own_workbench(login=app_login() is not None if login is None else login)


# Clearing the cache closes the workbench, so the database file is let go at once rather than
# staying locked against other processes until the old object happens to be collected.
@st.cache_resource(show_spinner="Opening the database…", on_release=Workbench.close)
def _own_workbench(login: bool = False) -> Workbench:
    """The app's own workbench when no server in this process hosts one (``streamlit run app.py``, AppTest)."""
    return Workbench.open_local(settings=app_settings(), seed_sample=True, login=login)  # the file: this app serves it


def app_login() -> LoginConfig | None:
    """Sign-in of this app: the hosting server's, else from the ``[auth]`` section of Streamlit secrets
    (None: single-user). SettingsError naming the key when the section is wrong."""
    if current_workbench() is not None:
        return current_login()
    return login_config(auth_section(), app_settings())


def auth_section() -> Any:
    """The [auth] section of Streamlit's secrets (sign-in), None when there is none."""
    try:
        section = st.secrets.get("auth")
    except FileNotFoundError:  # no secrets file at all
        return None
    if section is None:
        return None
    return section.to_dict() if hasattr(section, "to_dict") else section  # not a section: login_config says so


def may(wb: Workbench, role: Role) -> bool:
    """Whether the person using the page may do what needs ``role`` (pages hide what they may not)."""
    return wb.access.may(role)


def deferred_export(write: Callable[[Path, bool], object], suffix: str, unmask: bool) -> Callable[[], bytes]:
    """A download's data, built when the analyst clicks, as the person on the page: ``write(path,
    unmask)`` is an export (``wb.export_run``, ``export_batch``, ...); the bytes come from where it
    wrote them (an unmasked file's name says so, ``masking.export_path``). A big file costs nothing
    until then, and the page holds none."""

    def build() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"export{suffix}"
            write(path, unmask)
            return export_path(path, unmask=unmask).read_bytes()

    return as_this_user(build)


def as_this_user(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` to run later as the person using the page: Streamlit calls a deferred download's
    callable off the script thread, where nobody is acting."""
    who = current()

    def run() -> T:
        if who is None:
            return fn()
        with acting(who):
            return fn()

    return run


def needs_role(wb: Workbench, role: Role, doing: str) -> None:
    """One line in place of what the person's role does not allow: which role it takes, whom to ask."""
    who = current()
    have = f"your role is {who.role.value}" if who is not None and who.role is not None else "you have no role yet"
    admins = ", ".join(wb.access.admins())
    ask = f" Ask an admin ({admins}) if you need it." if admins else ""
    st.info(f"{doing} needs the {role.value} role; {have}.{ask}", icon=":material/lock:")


def app_settings() -> Settings:
    """FXBATCH_* variables over the ``[fxbatch]`` section of Streamlit secrets."""
    return settings_from_secrets(_secrets())


def _secrets() -> dict[str, object]:
    try:
        section = st.secrets.get("fxbatch", {})
    except FileNotFoundError:  # no secrets file: nothing to add (StreamlitSecretNotFoundError)
        return {}
    if not hasattr(section, "items"):
        raise SettingsError("The fxbatch entry of the Streamlit secrets must be a [fxbatch] section of settings.")
    return dict(section.items())


ROUTED = "fxbatch_routed"  # set by app.py: this session's pages run under its st.navigation


def _ensure_router() -> None:
    """Run app.py's st.navigation even when a fresh server's first visitor opened a page URL.

    Streamlit treats a ``pages/`` folder next to the entry script as the old multipage layout
    until the entry script has called st.navigation once: a server whose first request is, say,
    ``/run?run=3`` runs pages/run.py alone, with the folder's file names as the sidebar, and stays
    that way. Clearing the flag and rerunning hands the request to app.py (same page, same URL).
    """
    from streamlit.runtime.pages_manager import PagesManager

    if ROUTED not in st.session_state and PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def get_workbench() -> Workbench | None:
    """The workbench, or None after showing the analyst what to do when it cannot open."""
    _ensure_router()
    try:
        wb = workbench()
    except (FxBatchError, ValidationError) as exc:  # ValidationError: a bad FXBATCH_* variable
        show_error(exc)
        return None
    who = current()
    if wb.access.login and (who is None or who.via == "local"):
        # app.py says who acts before it runs a page; a page run without it (AppTest runs a switched-to
        # page alone) asks the sign-in the same way, and shows nothing to anyone without a role.
        try:
            who = signed_in_principal(wb)
        except FxBatchError as exc:  # the provider gave no usable e-mail address
            show_error(exc)
            return None
        act_as(who)
        if who is None or who.role is None:
            st.error("Sign in first: open the app's home page.", icon=":material/login:")
            return None
    return wb


def signed_in_principal(wb: Workbench) -> Principal | None:
    """Who is signed in to this browser session (None: nobody); the role is the database's."""
    info = st.user.to_dict()
    if not info.get("is_logged_in"):
        return None
    return wb.access.signed_in(str(info.get("email") or ""), info.get("email_verified"))


def show_error(exc: Exception) -> None:
    """One place that turns errors into short messages (never a traceback)."""
    if isinstance(exc, FxBatchError):
        st.error(exc.message, icon=":material/error:")
    elif isinstance(exc, ValidationError):
        bad = "; ".join(f"FXBATCH_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        st.error(f"A setting has a bad value ({bad}). Fix it and reload the page.", icon=":material/error:")
    else:
        st.error(f"Something went wrong: {exc}. Nothing was changed; try again.", icon=":material/error:")


# How batches, trades and rejections read in tables: plain labels, dates without a clock,
# money with two decimals; the fingerprint (a long hash) stays out of the way.
class TableConfig(TypedDict, total=False):
    """A table's columns as ``st.dataframe`` takes them (``**TABLE``)."""

    column_order: list[str]
    column_config: dict[str, Any]


BATCH_TABLE: TableConfig = {
    "column_order": [
        "batch_id",
        "name",
        "status",
        "trades",
        "notional_zar",
        "rejected",
        "ignored",
        "source_file",
        "layout",
        "created_at",
    ],
    "column_config": {
        "batch_id": st.column_config.NumberColumn("Batch", format="%d", width="small"),
        "name": "Name",
        "status": "Status",
        "trades": st.column_config.NumberColumn("Trades", format="%d"),
        "notional_zar": st.column_config.NumberColumn(
            "Notional (ZAR)", format="localized", help="The batch's trades in ZAR at mid"
        ),
        "rejected": st.column_config.NumberColumn("Rejected rows", format="%d"),
        "ignored": st.column_config.NumberColumn("Blank rows", format="%d"),
        "source_file": "File",
        "layout": "Layout",
        "created_at": st.column_config.DatetimeColumn("Created (UTC)", format="YYYY-MM-DD HH:mm"),
    },
}


def labelled(columns: Any, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """A column_config giving every column its plain-English header (fxbatch.labels), with
    ``config`` for the columns that need more than a label (formats, help)."""
    return {**{str(c): field_label(str(c)) for c in columns}, **(config or {})}


TRADE_TABLE: TableConfig = {
    "column_config": labelled(
        ["trade_id", "client_cif", "account_number", "currency_pair", "side", "amount_currency", "delivery",
         "reference"],
        {
            "row": st.column_config.NumberColumn("Row", format="%d", help="Row in the uploaded file", width="small"),
            "amount": st.column_config.NumberColumn("Amount", format="%,.2f", help="In the currency beside it"),
            "spread_pips": st.column_config.NumberColumn("Spread (pips)", format="%d", width="small"),
            "value_date": st.column_config.DateColumn("Value date", format="YYYY-MM-DD"),
        },
    ),
}  # fmt: skip
REJECTION_TABLE: TableConfig = {
    "column_config": {
        "row": st.column_config.NumberColumn("Row", format="%d", help="Row in the uploaded file", width="small"),
        "column": "Column",
        "value": "Value in the file",
        "code": "Code",
        "message": st.column_config.TextColumn("Why it was rejected", width="large"),
    },
}

RUN_PAGE = "pages/run.py"
# How often pages poll a run's progress while it executes (the worker thread never calls streamlit).
POLL_S = 1.0


def outcome_text(counts: dict[str, int]) -> str:
    """'149 succeeded · 51 failed' (only the outcomes that happened; 'not started' while none is final)."""
    parts = [
        f"{counts.get(key, 0):,} {label}"
        for key, label in (("SUCCESS", "succeeded"), ("FAILED", "failed"), ("CANCELLED", "cancelled"))
        if counts.get(key, 0)
    ]
    return " · ".join(parts) or "nothing finished yet"


def progress_text(snap: dict[str, object]) -> str:
    """'120 of 200 trades · 350/s · about 1 s left' for a progress snapshot."""
    text = f"Run {snap['run_id']}: {snap['done']:,} of {snap['total']:,} trades"
    rate = snap.get("trades_per_s")
    if isinstance(rate, float) and rate > 0:
        text += f" · {rate:,.0f}/s"
    eta = snap.get("eta_s")
    if isinstance(eta, float):
        text += f" · about {eta:,.0f} s left"
    return text


CANCELLING = "fxbatch_cancelling"  # the run whose Cancel this session is confirming


def confirmed(
    state: str,
    subject: object,
    ask: tuple[str, str, str | None],
    question: Callable[[], object],
    yes: tuple[str, str],
    no: tuple[str, str],
    widths: tuple[int, int] = (1, 4),
) -> bool:
    """An action that asks first: the ``ask`` button (label, key, icon) opens the question about
    ``subject`` (remembered under ``state``), ``question`` draws it, and the ``yes`` / ``no`` buttons
    (label, key) answer. True once, on the run where the person said yes."""
    if st.session_state.get(state) != subject:
        label, key, icon = ask
        if st.button(label, key=key, icon=icon):
            st.session_state[state] = subject
            st.rerun()
        return False
    question()
    c1, c2 = st.columns(list(widths))
    if c2.button(no[0], key=no[1]):
        del st.session_state[state]
        st.rerun()
    if c1.button(yes[0], type="primary", key=yes[1]):
        del st.session_state[state]
        return True
    return False


def cancel_with_confirmation(wb: Workbench, run_id: int, key: str, *, interrupted: bool = False) -> None:
    """A Cancel button that asks first, as Start and Delete do; the run stops at once when confirmed
    (an ``interrupted`` one: its unfinished trades end cancelled, and the page shows it)."""
    what = (
        "Its trades not yet executed end cancelled. Bookings it left unanswered are asked about at the bank "
        "first: those the bank booked end succeeded."
        if interrupted
        else "No further quote or booking is sent. Calls already with the bank finish and their trades end as "
        "the bank answers; every other trade ends cancelled and its quote is released."
    )
    question = partial(
        st.warning,
        f"Cancel run {run_id}? {what} A cancelled run cannot be resumed.",
        icon=":material/cancel:",
    )
    ask = (f"Cancel run {run_id}…", key, ":material/cancel:")
    if confirmed(CANCELLING, run_id, ask, question, ("Yes, cancel the run", f"{key}_confirm"),
                 ("Keep it running", f"{key}_keep")):  # fmt: skip
        try:
            wb.cancel(run_id, wait=False)  # bookings left in flight are asked about in the background
        except FxBatchError as exc:
            show_error(exc)
        else:
            st.toast(f"Run {run_id} is stopping: nothing more is sent to the bank.", icon=":material/cancel:")
            if interrupted:
                st.rerun()  # it is now CANCELLED, or RUNNING while the bank is asked


# Tables that lead somewhere are drawn with on_select="rerun" and SELECT_ROWS: clicking any cell of
# a row picks it, as does the row's checkbox.
SELECT_ROWS: list[Literal["single-row", "single-cell"]] = ["single-row", "single-cell"]


def selected_row(event: Any) -> int | None:
    """The position of the row picked in a table drawn with SELECT_ROWS (None: nothing picked)."""
    selection = event.selection
    rows = [*selection.get("rows", []), *(cell[0] for cell in selection.get("cells", []))]
    return int(rows[0]) if rows else None


def newly_selected_row(event: Any, key: str) -> int | None:
    """The row picked, only in the run where the pick changed: a dropdown beside the table that
    follows the click keeps its own choice afterwards."""
    row = selected_row(event)
    seen = f"{key}__picked"
    if st.session_state.get(seen) == row:
        return None
    st.session_state[seen] = row
    return row


# -- personal API tokens (the API tokens and Admin pages) ---------------------------------------

TOKENS_NOTICE = "tokens_notice"
TOKEN_STATUS_WORDS = {"active": "Active", "expired": "Expired", "revoked": "Revoked"}
TOKEN_TABLE: TableConfig = {
    "column_order": ["token_id", "email", "name", "status", "created_at", "expires_at", "last_used_at",
                     "revoked_at", "revoked_by"],
    "column_config": {
        "token_id": "Token",
        "email": "Owner",
        "name": "Name",
        "status": "Status",
        "created_at": st.column_config.DatetimeColumn("Made (UTC)", format="YYYY-MM-DD HH:mm"),
        "expires_at": st.column_config.DatetimeColumn("Expires (UTC)", format="YYYY-MM-DD HH:mm"),
        "last_used_at": st.column_config.DatetimeColumn("Last used (UTC)", format="YYYY-MM-DD HH:mm"),
        "revoked_at": st.column_config.DatetimeColumn("Revoked (UTC)", format="YYYY-MM-DD HH:mm"),
        "revoked_by": "Revoked by",
    },
}  # fmt: skip


def token_table(tokens: pd.DataFrame, *, owners: bool) -> None:
    """Tokens with their status in words (``owners``: with whose each is)."""
    shown = tokens.assign(status=tokens["status"].map(lambda s: TOKEN_STATUS_WORDS.get(str(s), str(s))))
    order = [c for c in TOKEN_TABLE["column_order"] if owners or c != "email"]
    st.dataframe(shown, hide_index=True, width="stretch", column_order=order,
                 column_config=TOKEN_TABLE["column_config"])  # fmt: skip


def revoke_form(wb: Workbench, tokens: pd.DataFrame, key: str) -> None:
    """Pick an active token and revoke it (asks no second time: a revoked token is replaced in a minute)."""
    active = tokens[tokens["status"] == "active"]
    if active.empty:
        return
    labels = {
        str(t): f"{t}: {n} ({e}, expires {x:%Y-%m-%d})"
        for t, n, e, x in zip(active["token_id"], active["name"], active["email"], active["expires_at"], strict=True)
    }
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    token_id = c1.selectbox("Token to revoke", list(labels), format_func=labels.__getitem__, key=f"{key}_pick")
    if c2.button("Revoke", key=f"{key}_revoke", icon=":material/key_off:"):
        try:
            wb.access.revoke_token(str(token_id))
        except FxBatchError as exc:
            show_error(exc)
            return
        st.session_state[TOKENS_NOTICE] = f"Token {token_id} is revoked: it no longer signs anything in."
        st.rerun()
