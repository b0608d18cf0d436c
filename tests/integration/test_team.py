"""A desk's team on one database with login: roles, four-eyes approval for real money, tokens.

The workbench is opened as a server with sign-in opens it (``login=True``); each action runs as a
principal (``fxbatch.access.acting``), the way a page run or an API request sets it. Real-money
runs go to the bank written from its documentation (tests/docbank.py), served in this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from fxbatch import Settings, Workbench
from fxbatch.access import Principal, Role, acting
from fxbatch.approvals import ApprovalStatus
from fxbatch.cli import main as cli_main
from fxbatch.errors import ConflictError, ForbiddenError, NotSignedInError, SettingsError
from fxbatch.models import RunConfig, RunStatus, RunSummary
from tests.docbank import DocBank, serve_docbank
from tests.integration.run_helpers import query
from tests.integration.test_docbank_run import CLIENT_SECRET, PASSWORD, load_batch, settings_for

ADMIN = "head.of.desk@desk.example"
ANALYST = "ana@desk.example"
APPROVER = "pat@desk.example"
APPROVER2 = "quinn@desk.example"
VIEWER = "vic@desk.example"
ROLES = {ANALYST: Role.ANALYST, APPROVER: Role.APPROVER, APPROVER2: Role.APPROVER, VIEWER: Role.VIEWER}


@pytest.fixture(scope="module")
def docbank() -> Iterator[DocBank]:
    with serve_docbank(client_secret=CLIENT_SECRET, password=PASSWORD) as bank:
        yield bank


@pytest.fixture
def bank(docbank: DocBank) -> DocBank:
    docbank.reset()
    return docbank


def team_settings(bank: DocBank, tmp_path: Path, **overrides: object) -> Settings:
    return settings_for(bank, tmp_path).model_copy(update={"admin_email": ADMIN, **overrides})


def as_user(wb: Workbench, email: str) -> AbstractContextManager[Principal]:
    """Act as ``email`` with the role the database gives it (what a signed-in page run does)."""
    return acting(wb.access.signed_in(email))


def grant_roles(wb: Workbench) -> None:
    """The admin gives the analyst, the approvers and the viewer their roles."""
    with as_user(wb, ADMIN):
        for email, role in ROLES.items():
            wb.access.set_role(email, role)


@pytest.fixture
def team(bank: DocBank, tmp_path: Path) -> Iterator[Workbench]:
    with Workbench.open_local(settings=team_settings(bank, tmp_path), login=True) as wb:
        grant_roles(wb)
        yield wb


@pytest.fixture
def batch(team: Workbench, tmp_path: Path) -> int:
    with as_user(team, ANALYST):
        return load_batch(team, tmp_path, n=12)


def actions(wb: Workbench) -> list[tuple[str, str, str, str]]:
    """(actor, action, object, outcome) of every audit row, oldest first."""
    rows = query(wb, "SELECT actor, action, object, outcome FROM audit_log ORDER BY seq")
    return [tuple(r) for r in rows]  # type: ignore[misc]


# ---------------------------------------------------------------- sign-in settings and roles


def test_login_needs_a_first_admin_setting(bank: DocBank, tmp_path: Path) -> None:
    settings = settings_for(bank, tmp_path)
    with pytest.raises(SettingsError, match="FXBATCH_ADMIN_EMAIL"):
        Workbench.open_local(settings=settings, login=True)
    with Workbench.open_local(settings=settings) as wb:  # the file was not left locked or half made
        assert wb.access.login is False


def test_a_new_database_with_login_gets_the_sample_batch_on_first_start(bank: DocBank, tmp_path: Path) -> None:
    settings = team_settings(bank, tmp_path, load_sample_on_create=True)
    with Workbench.open_local(settings=settings, login=True, seed_sample=True) as wb:
        assert [b.name for b in wb.batches()] == ["Sample batch"]
        loaded = [r for r in actions(wb) if r[1] == "load"]
    assert len(loaded) == 1 and loaded[0][0].endswith("(first start)") and loaded[0][3] == "ok"


def test_the_first_admin_comes_from_the_setting_and_grants_roles_on_the_record(team: Workbench) -> None:
    assert team.access.role_of(ADMIN) is Role.ADMIN
    with as_user(team, ADMIN):
        users = team.access.users()
    assert dict(zip(users["email"], users["role"], strict=True)) == {
        ADMIN: "admin",
        **{e: r.value for e, r in ROLES.items()},
    }
    rows = actions(team)
    assert rows[0] == ("setting FXBATCH_ADMIN_EMAIL", "role.grant", f"user:{ADMIN}", "ok")
    assert (ADMIN, "role.grant", f"user:{VIEWER}", "ok") in rows
    with as_user(team, ADMIN):
        assert team.verify_audit().ok


def test_the_last_admin_keeps_the_role_and_only_admins_change_roles(team: Workbench) -> None:
    with as_user(team, ADMIN), pytest.raises(ConflictError, match="only admin"):
        team.access.set_role(ADMIN, Role.VIEWER)
    with as_user(team, APPROVER), pytest.raises(ForbiddenError, match="admin role"):
        team.access.set_role(VIEWER, Role.ADMIN)
    assert team.access.role_of(VIEWER) is Role.VIEWER
    with as_user(team, ADMIN):
        team.access.set_role(APPROVER, Role.ADMIN)
        team.access.set_role(ADMIN, None)  # another admin exists now
    assert team.access.role_of(ADMIN) is None
    assert team.access.admins() == [APPROVER]


def test_with_login_nothing_runs_without_a_signed_in_user(team: Workbench, batch: int) -> None:
    with pytest.raises(NotSignedInError, match="sign in"):
        team.start_run(batch)
    with pytest.raises(NotSignedInError):
        team.delete_batch(batch)


def test_a_viewer_reads_but_cannot_load_run_export_or_unmask_and_is_told_the_role_needed(
    team: Workbench, batch: int, tmp_path: Path
) -> None:
    with as_user(team, VIEWER):
        assert len(team.trades(batch)) == 12  # reading is what a viewer does
        for attempt in (
            lambda: team.start_run(batch),
            lambda: team.load(tmp_path / "orders.csv"),
            lambda: team.export_batch(batch, tmp_path / "out.csv"),
            lambda: team.trades(batch, unmask=True),
            lambda: team.delete_batch(batch),
            lambda: team.whatif.sweep(batch, [0.9]),
            lambda: team.request_run(batch, bank_url="http://127.0.0.1:1"),
        ):
            with pytest.raises(ForbiddenError) as refused:
                attempt()
            assert "analyst role" in refused.value.message and VIEWER in refused.value.message
        with pytest.raises(ForbiddenError, match="admin role"):
            team.audit_trail()
    assert team.runs(batch) == []
    assert not (tmp_path / "out.csv").exists()


def test_a_user_with_no_role_is_refused_even_reading_the_trail(team: Workbench) -> None:
    with acting(team.access.signed_in("stranger@elsewhere.example")) as who:
        assert who.role is None
        with pytest.raises(ForbiddenError, match="no role yet"):
            team.audit_trail()


# ---------------------------------------------------------------- four eyes


def test_a_real_money_run_needs_an_approver_other_than_the_requester(
    team: Workbench, batch: int, bank: DocBank
) -> None:
    with as_user(team, ANALYST):
        with pytest.raises(ForbiddenError, match="approval"):
            team.start_run(batch, bank_url=bank.url, concurrency=4)
        request = team.request_run(batch, bank_url=bank.url, concurrency=4)
        assert request.status is ApprovalStatus.PENDING and request.requested_by == ANALYST and request.trades == 12
        with pytest.raises(ForbiddenError, match="approver role"):
            team.approve(request.approval_id)
        with pytest.raises(ConflictError, match="waiting for an approver"):
            team.start_run(batch, bank_url=bank.url, concurrency=4, approval=request.approval_id)
    with as_user(team, APPROVER):
        own = team.request_run(batch, bank_url=bank.url, concurrency=4)
        with pytest.raises(ForbiddenError, match="another approver"):
            team.approve(own.approval_id)
        approved = team.approve(request.approval_id)
    assert approved.status is ApprovalStatus.APPROVED and approved.decided_by == APPROVER
    with as_user(team, ANALYST):
        run = team.run(batch, bank_url=bank.url, concurrency=4, approval=request.approval_id)
        assert run.status is RunStatus.COMPLETED and run.counts["SUCCESS"] == 12
        with pytest.raises(ConflictError, match=f"already started run {run.run_id}"):
            team.start_run(batch, bank_url=bank.url, concurrency=4, approval=request.approval_id)
        assert team.approval(request.approval_id).run_id == run.run_id
        assert team.approval(request.approval_id).status is ApprovalStatus.USED
        team.run(batch, success_rate=1.0)  # a simulated run needs no approval
    rows = actions(team)
    assert (ANALYST, "run.request", f"approval:{request.approval_id}", "ok") in rows
    assert (APPROVER, "run.approve", f"approval:{request.approval_id}", "ok") in rows
    assert (ANALYST, "run", f"run:{run.run_id}", "ok") in rows
    refused = [(r[0], r[3].split(":")[0]) for r in rows if r[1] == "run.approve" and r[3] != "ok"]
    assert refused == [(ANALYST, "ForbiddenError"), (APPROVER, "ForbiddenError")]  # refusals are on the trail too


def test_a_rejection_says_why_and_stops_the_run(team: Workbench, batch: int, bank: DocBank) -> None:
    with as_user(team, ANALYST):
        request = team.request_run(batch, bank_url=bank.url)
    with as_user(team, APPROVER):
        with pytest.raises(SettingsError, match="reason"):
            team.reject(request.approval_id, "  ")
        rejected = team.reject(request.approval_id, "Wrong value date on the EUR trades")
        with pytest.raises(ConflictError, match="only a pending one"):
            team.approve(request.approval_id)
    assert rejected.status is ApprovalStatus.REJECTED and rejected.reason == "Wrong value date on the EUR trades"
    with as_user(team, ANALYST), pytest.raises(ConflictError, match=r"rejected by pat@desk\.example: Wrong value date"):
        team.start_run(batch, bank_url=bank.url, approval=request.approval_id)
    assert team.runs(batch) == []


def _approved(wb: Workbench, batch: int, bank: DocBank, **options: object) -> int:
    with as_user(wb, ANALYST):
        request = wb.request_run(batch, bank_url=bank.url, **options)
    with as_user(wb, APPROVER):
        wb.approve(request.approval_id)
    return request.approval_id


def test_an_approval_is_void_once_the_run_settings_or_the_batch_change(
    team: Workbench, batch: int, bank: DocBank
) -> None:
    approval = _approved(team, batch, bank, concurrency=4)
    with as_user(team, ANALYST):
        with pytest.raises(
            ConflictError, match=r"void: the run's settings differ from the approved ones \(concurrency\)"
        ):
            team.start_run(batch, bank_url=bank.url, concurrency=8, approval=approval)
        with pytest.raises(ConflictError, match="is for batch"):
            team.start_run(batch + 1, bank_url=bank.url, concurrency=4, approval=approval)
    # The batch changes behind the approval (one trade's amount): void, and shown so on the list.
    team.store.cursor().execute("UPDATE trades SET amount = amount + 1 WHERE batch_id = ? AND src_row = 3", [batch])
    assert team.approval(approval).status is ApprovalStatus.VOID
    assert team.approval(approval).void_reason == f"batch {batch} changed since the request"
    with as_user(team, ANALYST), pytest.raises(ConflictError, match=f"void: batch {batch} changed"):
        team.start_run(batch, bank_url=bank.url, concurrency=4, approval=approval)
    assert team.runs(batch) == []


def test_an_approval_is_void_when_the_servers_bank_settings_change(bank: DocBank, tmp_path: Path) -> None:
    settings = team_settings(bank, tmp_path)
    with Workbench.open_local(settings=settings, login=True) as wb:
        grant_roles(wb)
        with as_user(wb, ANALYST):
            batch = load_batch(wb, tmp_path, n=6)
        approval = _approved(wb, batch, bank)
    moved = settings.model_copy(update={"bank_user_id": "someone.else@desk.example"})
    with Workbench.open_local(settings=moved, login=True) as wb:
        found = wb.approval(approval)
        assert found.status is ApprovalStatus.VOID and "FXBATCH_BANK_USER_ID" in (found.void_reason or "")
        with as_user(wb, ANALYST), pytest.raises(ConflictError, match="bank settings changed"):
            wb.start_run(batch, bank_url=bank.url, approval=approval)


def test_an_expired_request_can_be_neither_approved_nor_used(team: Workbench, batch: int, bank: DocBank) -> None:
    approval = _approved(team, batch, bank)
    with as_user(team, ANALYST):
        pending = team.request_run(batch, bank_url=bank.url)
    past = datetime.now() - timedelta(days=3)
    team.store.cursor().execute("UPDATE approvals SET expires_at = ?", [past])
    assert {a.status for a in team.approvals()} == {ApprovalStatus.EXPIRED}
    with as_user(team, APPROVER2), pytest.raises(ConflictError, match="is expired"):
        team.approve(pending.approval_id)
    with as_user(team, ANALYST), pytest.raises(ConflictError, match="expired at"):
        team.start_run(batch, bank_url=bank.url, approval=approval)


def test_an_approval_starts_its_run_only_on_the_trading_day_it_was_requested_for(bank: DocBank, tmp_path: Path) -> None:
    """SPOT and TOM move with the day: on another, the bank would get settlement dates the approver never saw."""
    monday = team_settings(bank, tmp_path, today=date(2026, 11, 30))
    with Workbench.open_local(settings=monday, login=True) as wb:
        grant_roles(wb)
        with as_user(wb, ANALYST):
            batch = load_batch(wb, tmp_path, n=6)
        approval = _approved(wb, batch, bank)
        assert wb.approval(approval).trade_date == date(2026, 11, 30)
    with Workbench.open_local(settings=monday.model_copy(update={"today": date(2026, 12, 1)}), login=True) as wb:
        found = wb.approval(approval)
        assert found.status is ApprovalStatus.VOID
        assert "requested for trading on 2026-11-30, and today is 2026-12-01" in (found.void_reason or "")
        with as_user(wb, ANALYST), pytest.raises(ConflictError, match="requested for trading on 2026-11-30"):
            wb.start_run(batch, bank_url=bank.url, approval=approval)
    assert not bank.requests("createquote")
    with Workbench.open_local(settings=monday, login=True) as wb, as_user(wb, ANALYST):
        run = wb.run(batch, bank_url=bank.url, approval=approval)
        assert run.status is RunStatus.COMPLETED
        wb.store.cursor().execute("UPDATE runs SET status = 'INTERRUPTED' WHERE run_id = ?", [run.run_id])
    # Past midnight, its run still resumes under it: the run sends its own day's value dates, the approved ones.
    tuesday = monday.model_copy(update={"today": date(2026, 12, 1)})
    with Workbench.open_local(settings=tuesday, login=True) as wb, as_user(wb, ANALYST):
        assert wb.resume(run.run_id).status is RunStatus.COMPLETED


def _approved_run_interrupted(team: Workbench, batch: int, bank: DocBank) -> tuple[int, RunSummary]:
    """An approved run of ``batch`` at ``bank``, then marked INTERRUPTED (as a crash would leave it)."""
    approval = _approved(team, batch, bank)
    with as_user(team, ANALYST):
        run = team.run(batch, bank_url=bank.url, approval=approval)
    team.store.cursor().execute("UPDATE runs SET status = 'INTERRUPTED' WHERE run_id = ?", [run.run_id])
    return approval, run


def test_a_run_is_resumed_under_its_approval_only_until_the_approval_expires(
    team: Workbench, batch: int, bank: DocBank
) -> None:
    approval, run = _approved_run_interrupted(team, batch, bank)
    with as_user(team, ANALYST):
        team.store.cursor().execute("UPDATE approvals SET expires_at = ?", [datetime.now() - timedelta(days=30)])
        with pytest.raises(ForbiddenError, match=f"its approval {approval} no longer holds \\(it expired at "):
            team.start_resume(run.run_id)
        team.cancel(run.run_id)  # what is left: cancelled (the bank is asked first about any booking in doubt)
    assert team.run_summary(run.run_id).status is RunStatus.CANCELLED


def test_with_login_an_approval_its_requester_decided_without_sign_in_starts_nothing(
    bank: DocBank, tmp_path: Path
) -> None:
    settings = team_settings(bank, tmp_path)
    with Workbench.open_local(settings=settings) as wb:  # before the team: nobody signs in, one person
        batch = load_batch(wb, tmp_path, n=6)
        own = wb.request_run(batch, bank_url=bank.url)
        assert wb.approve(own.approval_id).status is ApprovalStatus.APPROVED
    with Workbench.open_local(settings=settings, login=True) as wb:
        grant_roles(wb)
        with (
            as_user(wb, ANALYST),
            pytest.raises(ConflictError, match=r"was decided by .*, who holds no approver role here"),
        ):
            wb.start_run(batch, bank_url=bank.url, approval=own.approval_id)
    assert not bank.requests("createquote")


def test_a_teams_database_opened_without_the_server_keeps_four_eyes_for_real_money(
    bank: DocBank, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server is stopped: the CLI and a notebook open its file directly, as the OS user."""
    settings = team_settings(bank, tmp_path)
    with Workbench.open_local(settings=settings, login=True) as wb:
        grant_roles(wb)
        with as_user(wb, ANALYST):
            batch = load_batch(wb, tmp_path, n=6)
            signed_in_request = wb.request_run(batch, bank_url=bank.url).approval_id
        approval = _approved(wb, batch, bank)
    with Workbench.open(settings=settings) as wb:
        assert isinstance(wb, Workbench) and not wb.access.login and wb.access.four_eyes
        with pytest.raises(ForbiddenError, match=r"needs a second person's approval.* team's database"):
            wb.run(batch, bank_url=bank.url)
        own = wb.request_run(batch, bank_url=bank.url)
        for request in (own.approval_id, signed_in_request):  # whoever opens the file is nobody signed in
            with pytest.raises(ForbiddenError, match="decided signed in, on its fxbatch server"):
                wb.approve(request)
        assert wb.run(batch, success_rate=1.0).status is RunStatus.COMPLETED  # simulated: no approval needed
    monkeypatch.setenv("FXBATCH_DB", str(settings.db))
    assert cli_main(["--json", "run", str(batch), "--bank", bank.url]) == 2
    assert "needs a second person's approval" in capsys.readouterr().out
    assert not bank.ledger_copy()
    with Workbench.open(settings=settings) as wb:  # an approval decided signed in is good here too
        assert wb.run(batch, bank_url=bank.url, approval=approval).status is RunStatus.COMPLETED
    assert len(bank.ledger_copy()) == 6


def test_an_approved_run_resumes_only_against_the_bank_it_was_approved_for(
    team: Workbench, batch: int, bank: DocBank
) -> None:
    _, run = _approved_run_interrupted(team, batch, bank)
    with as_user(team, ANALYST):
        with pytest.raises(ForbiddenError, match="no approval covers"):
            team.start_resume(run.run_id, bank_url="http://127.0.0.1:9")
        # Its own bank: the approval that started it covers it (nothing is left to book).
        team.resume(run.run_id)
        # Never on at the simulated bank: its bookings would show as deals the bank never made.
        team.store.cursor().execute("UPDATE runs SET status = 'INTERRUPTED' WHERE run_id = ?", [run.run_id])
        with pytest.raises(ConflictError, match="cannot go on at the simulated bank"):
            team.start_resume(run.run_id, bank_url="")
        assert team.run_summary(run.run_id).config.bank_url == bank.url
        team.resume(run.run_id, bank_url=bank.url)  # at the approved bank: covered
    simulated = None
    with as_user(team, ANALYST):
        simulated = team.run(batch, success_rate=0.5)
        team.store.cursor().execute("UPDATE runs SET status = 'INTERRUPTED' WHERE run_id = ?", [simulated.run_id])
        with pytest.raises(ConflictError, match="runs on the simulated bank: it cannot go on at the HTTP bank"):
            team.start_resume(simulated.run_id, bank_url=bank.url)


# ---------------------------------------------------------------- personal API tokens


def test_a_token_is_shown_once_stored_hashed_and_stops_working_when_revoked_or_expired(team: Workbench) -> None:
    with as_user(team, VIEWER):
        made = team.access.create_token("laptop notebook", days=30)
        other = team.access.create_token("script")
    assert made.token.startswith("fxb_") and made.email == VIEWER
    assert team.access.authenticate(made.token) == Principal(VIEWER, Role.VIEWER, "token")
    stored = json.dumps(query(team, "SELECT * FROM api_tokens"), default=str)
    # fxb_<12 hex id>_<43-char secret>; the secret itself may hold "_", so it is cut by position
    secrets = [token.token[len("fxb_") + 13 :] for token in (made, other)]
    assert all(len(secret) == 43 for secret in secrets)
    assert not any(secret in stored for secret in secrets)
    assert made.token not in json.dumps(query(team, "SELECT * FROM audit_log"), default=str)
    with as_user(team, VIEWER):
        team.access.revoke_token(made.token_id)
        listed = team.access.tokens()
    assert dict(zip(listed["token_id"], listed["status"], strict=True)) == {
        made.token_id: "revoked",
        other.token_id: "active",
    }
    with pytest.raises(NotSignedInError, match="revoked"):
        team.access.authenticate(made.token)
    team.store.cursor().execute(
        "UPDATE api_tokens SET expires_at = ? WHERE token_id = ?", [datetime.now() - timedelta(days=1), other.token_id]
    )
    with pytest.raises(NotSignedInError, match="expired"):
        team.access.authenticate(other.token)
    for bad in ("fxb_000000000000_" + "A" * 43, "Bearer nothing", made.token[:-1] + "x"):
        with pytest.raises(NotSignedInError):
            team.access.authenticate(bad)


def test_taking_a_role_away_revokes_the_users_tokens_so_a_later_role_revives_none(team: Workbench) -> None:
    with as_user(team, APPROVER):
        made = team.access.create_token("laptop")
    with as_user(team, ADMIN):
        team.access.set_role(APPROVER, None)  # pat left the desk
        listed = team.access.tokens(everyone=True)
        assert listed.loc[listed["token_id"] == made.token_id, "status"].tolist() == ["revoked"]
        team.access.set_role(APPROVER, Role.VIEWER)  # the address given a role again, later
    with pytest.raises(NotSignedInError, match="was revoked"):
        team.access.authenticate(made.token)
    assert (ADMIN, "role.revoke", f"user:{APPROVER}", "ok") in actions(team)
    revoked = query(team, "SELECT params FROM audit_log WHERE action = 'role.revoke'")
    assert json.loads(revoked[-1][0])["revoked"] == [made.token_id]


def test_a_backup_and_a_refused_look_at_full_accounts_are_on_the_trail(
    team: Workbench, batch: int, tmp_path: Path
) -> None:
    with as_user(team, ADMIN):
        copy = team.backup(tmp_path / "copy.duckdb")
    with as_user(team, VIEWER), pytest.raises(ForbiddenError):
        team.trades(batch, unmask=True)
    rows = actions(team)
    assert (ADMIN, "backup", f"file:{tmp_path / 'copy.duckdb'}", "ok") in rows
    [(who, action, obj, outcome)] = [r for r in rows if r[0] == VIEWER]
    assert (who, action, obj) == (VIEWER, "unmask", f"batch:{batch}") and outcome.startswith("ForbiddenError: ")
    with Workbench.open_local(settings=team.settings.model_copy(update={"db": copy})) as restored:
        assert restored.verify_audit().ok, "the copy's trail ends just before its backup row, and checks"


def test_only_the_owner_or_an_admin_revokes_a_token_and_lives_are_bounded(team: Workbench) -> None:
    with as_user(team, ANALYST):
        made = team.access.create_token("cli")
        with pytest.raises(SettingsError, match="FXBATCH_TOKEN_DAYS"):
            team.access.create_token("forever", days=10_000)
    with as_user(team, VIEWER), pytest.raises(Exception, match="no token"):
        team.access.revoke_token(made.token_id)
    with as_user(team, ADMIN):
        assert made.token_id in set(team.access.tokens(everyone=True)["token_id"])
        team.access.revoke_token(made.token_id)
    with pytest.raises(NotSignedInError, match="revoked"):
        team.access.authenticate(made.token)


def test_without_login_the_os_user_does_everything_and_needs_no_approval(bank: DocBank, tmp_path: Path) -> None:
    with Workbench.open_local(settings=settings_for(bank, tmp_path)) as wb:
        batch = load_batch(wb, tmp_path, n=6)
        run = wb.run(batch, bank_url=bank.url)
        assert run.status is RunStatus.COMPLETED
        assert wb.access.principal().role is Role.ADMIN and wb.access.principal().via == "local"


def test_an_unmasked_view_is_recorded_once_per_person_not_once_per_screen_refresh(team: Workbench, batch: int) -> None:
    with as_user(team, ANALYST):
        for offset in (0, 0, 5):  # a rerun, then the next page of the same view
            team.trades(batch, limit=5, offset=offset, unmask=True)
        team.corrections(batch, unmask=True)  # another view
    with as_user(team, APPROVER):
        team.trades(batch, unmask=True)
    unmasked = [(r[0], r[2]) for r in actions(team) if r[1] == "unmask"]
    assert unmasked == [(ANALYST, f"batch:{batch}"), (ANALYST, f"batch:{batch}"), (APPROVER, f"batch:{batch}")]
    views = query(team, "SELECT params FROM audit_log WHERE action = 'unmask' ORDER BY seq")
    assert [json.loads(v[0])["view"] for v in views] == ["trades", "corrections", "trades"]


def test_a_sweep_naming_an_http_bank_is_refused_so_no_promoted_scenario_sends_orders(
    team: Workbench, batch: int, bank: DocBank
) -> None:
    # Its scenarios are simulated: a run at the bank is a run of its own, approved like any.
    with as_user(team, ANALYST), pytest.raises(SettingsError, match="bank_url"):
        team.whatif.sweep(batch, [0.9], base=RunConfig(bank_url=bank.url))
    assert team.runs(batch) == [] and bank.ledger_copy() == {} and team.whatif.sweeps(batch) == []


def test_the_first_admin_setting_does_not_bring_back_an_admin_the_others_removed(bank: DocBank, tmp_path: Path) -> None:
    settings = team_settings(bank, tmp_path)
    with Workbench.open_local(settings=settings, login=True) as wb, as_user(wb, ADMIN):
        wb.access.set_role(APPROVER, Role.ADMIN)
        wb.access.set_role(ADMIN, None)  # the head of desk left
    with Workbench.open_local(settings=settings, login=True) as wb:
        assert wb.access.role_of(ADMIN) is None and wb.access.admins() == [APPROVER]


def test_an_address_the_provider_has_not_verified_gets_no_role(team: Workbench) -> None:
    for unverified in (False, "false", 0, "0", {}, "", "no"):
        with pytest.raises(NotSignedInError, match="not verified"):
            team.access.signed_in(ADMIN, unverified)
    assert team.access.signed_in(ADMIN, True).role is Role.ADMIN
    assert team.access.signed_in(ADMIN, "True").role is Role.ADMIN
    assert team.access.signed_in(ADMIN).role is Role.ADMIN  # a provider that does not say


def test_an_approved_run_does_not_resume_once_the_servers_bank_settings_changed(bank: DocBank, tmp_path: Path) -> None:
    settings = team_settings(bank, tmp_path)
    with Workbench.open_local(settings=settings, login=True) as wb:
        grant_roles(wb)
        with as_user(wb, ANALYST):
            batch = load_batch(wb, tmp_path, n=6)
        approval = _approved(wb, batch, bank)
        with as_user(wb, ANALYST):
            run = wb.run(batch, bank_url=bank.url, approval=approval)
        wb.store.cursor().execute("UPDATE runs SET status = 'INTERRUPTED' WHERE run_id = ?", [run.run_id])
    moved = settings.model_copy(update={"bank_client_id": "another-client"})
    with Workbench.open_local(settings=moved, login=True) as wb, as_user(wb, ANALYST):
        with pytest.raises(ForbiddenError, match=f"approval {approval} no longer holds"):
            wb.start_resume(run.run_id)
        refused = [r for r in actions(wb) if r[1] == "resume"]
        assert refused and refused[-1][0] == ANALYST and refused[-1][3].startswith("ForbiddenError")
