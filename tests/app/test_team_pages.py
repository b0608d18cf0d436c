"""A desk's team on one server: sign-in, roles on the pages, four-eyes approval, tokens and the audit trail.

The app signs users in with ``st.login`` (OpenID Connect); AppTest stands in for the provider with
``at.user`` (what ``st.user`` reads) and an ``[auth]`` section in ``at.secrets``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from fxbatch import Workbench
from fxbatch.access import Principal, Role, acting
from fxbatch.approvals import ApprovalStatus
from pages.common import _own_workbench
from tests.app.conftest import APP, TIMEOUT
from tests.app.test_words import assert_words
from tests.conftest import DATA

BOSS = "boss@desk.example"
VIEWER = "vic@desk.example"
ANALYST = "ana@desk.example"
APPROVER = "pat@desk.example"
BANK = "http://127.0.0.1:8600"
AUTH = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-long-random-cookie-secret-for-the-tests-only",
    "client_id": "fxbatch",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def as_user(email: str, role: Role) -> Principal:
    return Principal(email, role, "sign-in")


@pytest.fixture
def team(empty_db: Path, monkeypatch: pytest.MonkeyPatch) -> Workbench:
    """The app's own workbench with login: a viewer, an analyst and an approver, and the sample batch
    loaded by the analyst."""
    monkeypatch.setenv("FXBATCH_ADMIN_EMAIL", BOSS)
    monkeypatch.setenv("FXBATCH_BANK_UNREACHABLE_WINDOW_S", "0.5")  # a run against BANK (nobody there) stops soon
    wb = _own_workbench(login=True)
    with acting(as_user(BOSS, Role.ADMIN)):
        for email, role in ((VIEWER, Role.VIEWER), (ANALYST, Role.ANALYST), (APPROVER, Role.APPROVER)):
            wb.access.set_role(email, role)
    with acting(as_user(ANALYST, Role.ANALYST)):
        wb.load(wb.settings.sample_file, name="Sample batch")
    return wb


def signed_in(email: str | None, page: str = "pages/home.py") -> AppTest:
    """The app as ``email`` sees it (None: nobody signed in), on ``page``."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["auth"] = AUTH
    at.user = {"is_logged_in": False} if email is None else {"is_logged_in": True, "email": email, "name": email}
    at.run()
    if page != "pages/home.py":
        at.switch_page(page).run()
    return at


def texts(at: AppTest) -> str:
    return " ".join(
        str(e.value) for kind in ("info", "warning", "success", "caption", "markdown") for e in at.get(kind)
    )


def test_a_visitor_who_is_not_signed_in_sees_only_the_sign_in_button(team: Workbench) -> None:
    at = ok(signed_in(None))
    assert [t.value for t in at.title] == ["fxbatch"]
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.dataframe and not at.metric  # no data before sign-in


def test_a_user_without_a_role_is_told_which_admin_to_ask(team: Workbench) -> None:
    at = ok(signed_in("newcomer@desk.example"))
    assert f"You have no role on this fxbatch server yet. Ask an admin: {BOSS}" in at.warning[0].value
    assert [b.label for b in at.button] == ["Sign out"]
    assert not at.dataframe and not at.metric
    with acting(as_user(BOSS, Role.ADMIN)):
        signs = team.audit_trail(action="sign-in")
    assert "newcomer@desk.example" in set(signs["actor"])


def test_a_wrong_auth_section_is_named_and_nothing_else_is_shown(team: Workbench) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["auth"] = {**AUTH, "cookie_secret": "short"}
    at.run()
    assert "cookie_secret" in at.error[0].value
    assert not at.dataframe and not at.button


def test_a_viewer_sees_batches_but_no_uploader_and_no_run_form(team: Workbench) -> None:
    at = ok(signed_in(VIEWER))
    assert f"Signed in as {VIEWER} · viewer" in [c.value for c in at.sidebar.caption]
    assert at.metric  # the home page reads as usual
    ok(at.switch_page("pages/upload.py").run())
    assert not at.get("file_uploader")
    assert "Loading a spreadsheet needs the analyst role; your role is viewer." in texts(at)
    ok(at.switch_page("pages/batches.py").run())
    assert at.dataframe  # the batches table
    assert not at.get("form") and not at.toggle  # no run form, no unmasking
    assert "Running a batch needs the analyst role" in texts(at)
    assert not [b for b in at.button if b.key in ("delete", "retry")]
    with acting(as_user(ANALYST, Role.ANALYST)):
        run = team.run(team.batches()[0].batch_id, success_rate=0.5, seed=1)
    at.query_params["run"] = str(run.run_id)
    ok(at.switch_page("pages/run.py").run())
    assert at.dataframe and not at.toggle  # the run's trades, masked
    assert not [b for b in at.button if b.key in ("export", "resume", "cancel_run")]
    ok(at.switch_page("pages/whatif.py").run())
    assert not at.get("form") and "Running a what-if sweep needs the analyst role" in texts(at)


def test_an_analyst_starts_the_approved_run_from_the_approvals_page(team: Workbench) -> None:
    approval_id = request_run(team, ANALYST, Role.ANALYST)
    with acting(as_user(APPROVER, Role.APPROVER)):
        team.approve(approval_id)
    at = ok(signed_in(ANALYST, "pages/approvals.py"))
    ok(at.button(key="start_approved").click().run())
    [run] = team.runs()
    assert run.config.bank_url == BANK
    used = team.approval(approval_id)
    assert used.status is ApprovalStatus.USED and used.run_id == run.run_id
    assert [t.value for t in at.title] == ["Run detail"]  # the page switched to the new run
    deadline = time.monotonic() + 60
    while team.run_summary(run.run_id).status.value in ("PENDING", "RUNNING"):  # nobody answers at BANK
        assert time.monotonic() < deadline, "the run against an unreachable bank did not stop"
        time.sleep(0.2)


def test_an_analysts_run_against_an_http_bank_asks_for_approval_instead_of_starting(team: Workbench) -> None:
    at = ok(signed_in(ANALYST, "pages/batches.py"))
    at.radio(key="bank_kind").set_value("HTTP")
    at.text_input(key="bank_url").set_value(BANK)
    ok(at.form_submit_button[0].click().run())
    assert at.button(key="run_confirm").label == "Request approval"
    assert "an approver other than you must approve it" in texts(at)
    ok(at.button(key="run_confirm").click().run())
    [request] = team.approvals()
    assert request.status is ApprovalStatus.PENDING and request.requested_by == ANALYST
    assert request.bank_url == BANK and request.trades == 200
    assert team.runs() == []  # nothing ran
    assert f"Approval request {request.approval_id} is waiting for an approver" in texts(at)
    assert [link.label for link in at.get("page_link")] == [f"Open approval request {request.approval_id}"]


def test_without_an_http_bank_an_analyst_starts_a_simulated_run_at_once(team: Workbench) -> None:
    at = ok(signed_in(ANALYST, "pages/batches.py"))
    ok(at.form_submit_button[0].click().run())
    assert at.button(key="run_confirm").label == "Start the run"


def request_run(wb: Workbench, email: str, role: Role) -> int:
    with acting(as_user(email, role)):
        batch_id = wb.batches()[0].batch_id
        return wb.request_run(batch_id, bank_url=BANK).approval_id


def test_an_approver_approves_another_analysts_request(team: Workbench) -> None:
    approval_id = request_run(team, ANALYST, Role.ANALYST)
    at = ok(signed_in(APPROVER, "pages/approvals.py"))
    [table] = at.dataframe
    assert list(table.value["approval_id"]) == [approval_id]
    assert list(table.value["requested_by"]) == [ANALYST]
    ok(at.button(key="approve").click().run())
    assert f"Request {approval_id} is approved" in texts(at)
    approved = team.approval(approval_id)
    assert approved.status is ApprovalStatus.APPROVED and approved.decided_by == APPROVER
    # The approver is an analyst too: the approved run may now be started from here.
    assert at.button(key="start_approved").label == "Start the approved run"


def test_a_rejection_needs_a_reason(team: Workbench) -> None:
    approval_id = request_run(team, ANALYST, Role.ANALYST)
    at = ok(signed_in(APPROVER, "pages/approvals.py"))
    at.button(key="reject").click().run()
    assert "Say why you reject the request" in at.error[0].value
    assert team.approval(approval_id).status is ApprovalStatus.PENDING
    at.text_input(key=f"reject_reason_{approval_id}").set_value("Wrong value date")
    ok(at.button(key="reject").click().run())
    rejected = team.approval(approval_id)
    assert rejected.status is ApprovalStatus.REJECTED and rejected.reason == "Wrong value date"


def test_a_reason_typed_for_one_request_stays_with_it(team: Workbench) -> None:
    first = request_run(team, ANALYST, Role.ANALYST)
    with acting(as_user(ANALYST, Role.ANALYST)):
        batch = team.load(DATA / "sample_trades.csv", name="Second").batch_id
        second = team.request_run(batch, bank_url=BANK).approval_id
    at = ok(signed_in(APPROVER, "pages/approvals.py"))
    at.selectbox(key="approval_pick").select(first).run()
    at.text_input(key=f"reject_reason_{first}").set_value("Wrong value date on the first").run()
    at.selectbox(key="approval_pick").select(second).run()
    assert at.text_input(key=f"reject_reason_{second}").value == ""
    at.button(key="reject").click().run()
    assert "Say why you reject the request" in at.error[0].value
    assert team.approval(second).status is ApprovalStatus.PENDING


def test_the_requester_cannot_approve_their_own_request(team: Workbench) -> None:
    approval_id = request_run(team, APPROVER, Role.APPROVER)
    at = ok(signed_in(APPROVER, "pages/approvals.py"))
    assert not [b for b in at.button if b.key in ("approve", "reject")]
    assert "You requested this run yourself: another approver must approve or reject it" in texts(at)
    assert team.approval(approval_id).status is ApprovalStatus.PENDING


def test_an_analyst_sees_a_request_but_cannot_decide_it(team: Workbench) -> None:
    request_run(team, APPROVER, Role.APPROVER)
    at = ok(signed_in(ANALYST, "pages/approvals.py"))
    assert at.dataframe
    assert not [b for b in at.button if b.key in ("approve", "reject")]


def test_a_token_is_shown_once_and_can_be_revoked(team: Workbench) -> None:
    at = ok(signed_in(ANALYST, "pages/tokens.py"))
    at.text_input(key="token_name").set_value("laptop notebook")
    ok(at.form_submit_button[0].click().run())
    [code] = at.code
    assert code.value.startswith("fxb_")
    assert "Copy it now: it is not shown again. Use it as FXBATCH_TOKEN" in texts(at)
    assert team.access.authenticate(code.value).name == ANALYST
    ok(at.run())
    assert not at.code  # never shown again
    ok(at.button(key="own_tokens_revoke").click().run())
    with acting(as_user(ANALYST, Role.ANALYST)):
        assert list(team.access.tokens()["status"]) == ["revoked"]


def test_an_admin_gives_a_role_on_the_admin_page(team: Workbench) -> None:
    at = ok(signed_in(BOSS, "pages/admin.py"))
    users = at.dataframe[0].value
    assert set(users["email"]) == {BOSS, VIEWER, ANALYST, APPROVER}
    at.text_input(key="grant_email").set_value("Newcomer@Desk.example")
    at.radio(key="grant_role").set_value(Role.ANALYST)
    ok(at.form_submit_button[0].click().run())
    assert "newcomer@desk.example is now analyst" in texts(at)
    assert team.access.role_of("newcomer@desk.example") is Role.ANALYST


def test_the_admin_reads_the_audit_trail_of_the_team(team: Workbench) -> None:
    request_run(team, ANALYST, Role.ANALYST)
    at = ok(signed_in(BOSS, "pages/audit.py"))
    rows = at.dataframe[0].value
    assert {"run.request", "role.grant", "load"} <= set(rows["action"])
    ok(at.button(key="verify_audit").click().run())
    assert at.success[0].value.startswith("Audit trail intact")


def test_an_analyst_cannot_open_the_audit_or_admin_pages(team: Workbench) -> None:
    at = ok(signed_in(ANALYST))
    for page in ("pages/audit.py", "pages/admin.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)


# -- without sign-in: one local user, as before ---------------------------------------------------


def test_without_login_the_audit_page_lists_the_actions_and_the_chain_is_intact(
    db_path: Path, open_page: Callable[[str], AppTest]
) -> None:
    at = ok(open_page("pages/audit.py"))
    rows = at.dataframe[0].value
    assert "load" in set(rows["action"])  # the sample batch, loaded on first start
    assert list(rows["seq"]) == sorted(rows["seq"], reverse=True)  # newest first
    assert at.get("download_button")[0].proto.label.startswith(f"Download these {len(rows):,} entries")
    ok(at.button(key="verify_audit").click().run())
    assert at.success[0].value == f"Audit trail intact: {len(rows)} rows."


def test_the_audit_page_sends_the_newest_entries_only_and_the_download_has_every_one(
    db_path: Path, open_page: Callable[[str], AppTest]
) -> None:
    from fxbatch import audit

    at = ok(open_page("pages/audit.py"))
    wb = _own_workbench()
    for n in range(1_000):
        audit.record(wb.store, "ana@desk.example", "export", f"run:{n}")
    ok(at.run())
    total = len(wb.audit_trail())
    assert len(at.dataframe[0].value) == 1_000 and total > 1_000
    assert f"Showing the newest 1,000 of {total:,} matching of {total:,} entries" in at.caption[-1].value
    [button] = at.get("download_button")
    assert button.proto.label == f"Download these {total:,} entries (CSV)" and button.proto.deferred_file_id
    ok(at.selectbox(key="audit_action").select("load").run())
    loads = len(wb.audit_trail(action="load"))
    assert at.caption[-1].value == f"Showing {loads:,} matching of {total:,} entries, newest first."


def test_without_login_there_are_no_approvals_tokens_or_admin_pages(
    db_path: Path, open_page: Callable[[str], AppTest]
) -> None:
    assert ok(open_page("pages/batches.py")).get("form")  # the run form, as always
    at = ok(open_page("pages/home.py"))
    assert not at.sidebar.caption and not [b for b in at.button if b.key == "sign_out"]
    for page in ("pages/approvals.py", "pages/tokens.py", "pages/admin.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(page)


def test_the_team_pages_speak_plain_english(team: Workbench) -> None:
    request_run(team, ANALYST, Role.ANALYST)
    with acting(as_user(BOSS, Role.ADMIN)):
        team.access.create_token("laptop notebook")
    for page in ("pages/approvals.py", "pages/admin.py", "pages/audit.py", "pages/tokens.py"):
        at = ok(signed_in(BOSS, page))
        assert_words(at, page)


def test_a_deferred_download_runs_as_the_person_on_the_page_though_streamlit_calls_it_elsewhere() -> None:
    import threading

    from fxbatch.access import current
    from pages.common import as_this_user

    seen: list[Principal | None] = []
    with acting(Principal(ANALYST, Role.ANALYST, "sign-in")):
        deferred = as_this_user(current)
    thread = threading.Thread(target=lambda: seen.extend([current(), deferred(), current()]))
    thread.start()
    thread.join()
    assert seen == [None, Principal(ANALYST, Role.ANALYST, "sign-in"), None]
