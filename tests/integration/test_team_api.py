"""The HTTP API and the CLI on a server with login: personal tokens, 401/403, four-eyes over HTTP.

The server is the API served over real HTTP in this process (as in test_cli_server); the CLI runs
in other processes with FXBATCH_TOKEN, exactly as an analyst's terminal would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from fxbatch import Settings, Workbench
from fxbatch.access import Role
from fxbatch.client import Client
from fxbatch.serving import remove_record, write_record
from tests.docbank import DocBank
from tests.integration.api_helpers import WAIT, assert_problem, serve_api
from tests.integration.test_cli_server import _env
from tests.integration.test_docbank_run import load_batch
from tests.integration.test_team import (
    ADMIN,
    ANALYST,
    APPROVER,
    ROLES,
    VIEWER,
    as_user,
    bank,
    docbank,
    grant_roles,
    team_settings,
)

__all__ = ["bank", "docbank"]  # fixtures used here


@pytest.fixture
def server(bank: DocBank, tmp_path: Path) -> Iterator[tuple[Workbench, str, dict[str, str], int]]:
    """A server with login: its workbench, URL, one token per user, and a loaded batch."""
    with Workbench.open_local(settings=team_settings(bank, tmp_path), login=True) as wb:
        grant_roles(wb)
        tokens = {}
        for email in (ADMIN, *ROLES):
            with as_user(wb, email):
                tokens[email] = wb.access.create_token("tests").token
        with as_user(wb, ANALYST):
            batch = load_batch(wb, tmp_path, n=8)
        with serve_api(wb) as url:
            write_record(wb.settings.db, url)
            try:
                yield wb, url, tokens, batch
            finally:
                remove_record(wb.settings.db)


def client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=WAIT)


def test_every_call_needs_a_valid_token_and_says_how_to_get_one(
    server: tuple[Workbench, str, dict[str, str], int],
) -> None:
    wb, url, tokens, batch = server
    with client(url, None) as anonymous:
        resp = anonymous.get("/batches")
        body = assert_problem(resp, 401, "NOT_SIGNED_IN")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer") and "Tokens page" in body["detail"]
        assert_problem(anonymous.get("/health"), 401, "NOT_SIGNED_IN")
    with client(url, "fxb_nonsense") as bad:
        assert_problem(bad.get("/batches"), 401, "NOT_SIGNED_IN")
    with client(url, tokens[VIEWER]) as viewer:
        assert viewer.get("/batches").status_code == 200
        assert viewer.get("/me").json() == {
            "name": VIEWER,
            "role": "viewer",
            "via": "token",
            "login": True,
            "four_eyes": True,
        }
        token_id = tokens[VIEWER].split("_")[1]
        assert viewer.delete(f"/tokens/{token_id}").status_code == 204
        revoked = assert_problem(viewer.get("/batches"), 401, "NOT_SIGNED_IN")
        assert "revoked" in revoked["detail"]
    past = datetime.now() - timedelta(minutes=1)
    token_id = tokens[ANALYST].split("_")[1]
    wb.store.cursor().execute("UPDATE api_tokens SET expires_at = ? WHERE token_id = ?", [past, token_id])
    with client(url, tokens[ANALYST]) as analyst:
        expired = assert_problem(analyst.post(f"/batches/{batch}/runs", json={}), 401, "NOT_SIGNED_IN")
        assert "expired" in expired["detail"] and tokens[ANALYST] not in expired["detail"]
    assert wb.runs(batch) == []


def test_a_viewer_cannot_start_a_run_over_http_and_is_told_the_role_needed(
    server: tuple[Workbench, str, dict[str, str], int],
) -> None:
    wb, url, tokens, batch = server
    with client(url, tokens[VIEWER]) as viewer:
        body = assert_problem(viewer.post(f"/batches/{batch}/runs", json={"success_rate": 1.0}), 403, "FORBIDDEN")
        assert "analyst role" in body["detail"] and VIEWER in body["detail"]
        # A retry of a run that does not exist: the role first (the run is not looked up).
        assert_problem(viewer.post(f"/batches/{batch}/runs", json={"retry_of_run": 999}), 403, "FORBIDDEN")
        assert_problem(viewer.get("/audit"), 403, "FORBIDDEN")
        assert_problem(viewer.put(f"/users/{VIEWER}", json={"role": "admin"}), 403, "FORBIDDEN")
    assert wb.runs(batch) == [] and wb.access.role_of(VIEWER) is Role.VIEWER
    with client(url, tokens[ANALYST]) as analyst:
        assert analyst.post(f"/batches/{batch}/runs", json={"success_rate": 1.0}).status_code == 202


def test_a_viewer_naming_a_client_registry_is_refused_for_the_role_whether_or_not_the_file_is_there(
    server: tuple[Workbench, str, dict[str, str], int],
) -> None:
    """Only those who may run learn which registry files the server has."""
    wb, url, tokens, batch = server
    folder = wb.settings.registry_folder()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "clients.csv").write_text("client_cif,account_number\n0123456789,0012345678\n")
    with client(url, tokens[VIEWER]) as viewer:
        for name in ("clients.csv", "missing.csv", "../etc/passwd"):
            for path, body in ((f"/batches/{batch}/runs", {"registry_file": name}),
                               ("/runs:request", {"batch_id": batch, "registry_file": name, "bank_url": "http://b"})):  # fmt: skip
                problem = assert_problem(viewer.post(path, json=body), 403, "FORBIDDEN")
                assert "role" in problem["detail"] and "registry" not in problem["detail"], (path, name)
    assert wb.runs(batch) == []
    with as_user(wb, ADMIN):
        trail = wb.audit_trail(actor=VIEWER)
    refused = trail[trail["outcome"].str.startswith("ForbiddenError")]
    assert sorted(refused["action"].value_counts().items()) == [("run", 3), ("run.request", 3)]  # on the trail


def test_four_eyes_over_http_request_approve_run_and_the_trail(
    server: tuple[Workbench, str, dict[str, str], int], bank: DocBank
) -> None:
    wb, url, tokens, batch = server
    with client(url, tokens[ANALYST]) as analyst, client(url, tokens[APPROVER]) as approver:
        refused = assert_problem(analyst.post(f"/batches/{batch}/runs", json={"bank_url": bank.url}), 403, "FORBIDDEN")
        assert "approval" in refused["detail"]
        made = analyst.post("/runs:request", json={"batch_id": batch, "bank_url": bank.url, "concurrency": 4})
        assert made.status_code == 201, made.text
        approval_id = made.json()["approval_id"]
        assert made.headers["Location"].endswith(f"/api/v1/approvals/{approval_id}")
        assert_problem(analyst.post(f"/approvals/{approval_id}:approve"), 403, "FORBIDDEN")
        assert_problem(approver.post(f"/approvals/{approval_id}:reject", json={}), 422)
        decided = approver.post(f"/approvals/{approval_id}:approve")
        assert decided.status_code == 200 and decided.json()["status"] == "approved"
        started = analyst.post(f"/approvals/{approval_id}:run")
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        assert [a["status"] for a in approver.get("/approvals").json()] == ["used"]
    with client(url, tokens[ADMIN]) as admin:
        trail = admin.get("/audit", params={"limit": 100}).json()
        assert admin.get("/audit/verify").json()["ok"] is True
    seen = {(row["actor"], row["action"], row["object"]) for row in trail}
    assert (ANALYST, "run.request", f"approval:{approval_id}") in seen
    assert (APPROVER, "run.approve", f"approval:{approval_id}") in seen
    assert (ANALYST, "run", f"run:{run_id}") in seen
    wb.engine.job(run_id).wait()  # type: ignore[union-attr]


def _cli(db: Path, token: str | None, *args: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    env = _env(db)
    if token:
        env["FXBATCH_TOKEN"] = token
    done = subprocess.run([sys.executable, "-m", "fxbatch", *args], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=WAIT * 2)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


def test_the_cli_through_a_server_with_login_uses_fxbatch_token(
    server: tuple[Workbench, str, dict[str, str], int], bank: DocBank
) -> None:
    wb, _url, tokens, batch = server
    db = wb.settings.db
    code, _out, err = _cli(db, None, "batches")
    assert code == 2 and "FXBATCH_TOKEN" in err
    code, _out, err = _cli(db, tokens[VIEWER], "run", str(batch), "--success-rate", "1")
    assert code == 2 and "analyst role" in err, err
    code, out, err = _cli(db, tokens[ANALYST], "request-run", str(batch), "--bank", bank.url)
    assert code == 0, err
    assert "An approver other than you approves it" in out
    approval_id = int(out.split()[1].rstrip(":"))
    code, _out, err = _cli(db, tokens[ANALYST], "approve", str(approval_id))
    assert code == 2 and "approver role" in err
    code, out, err = _cli(db, tokens[APPROVER], "approve", str(approval_id))
    assert code == 0 and "approved" in out, err
    code, out, err = _cli(db, tokens[ANALYST], "run", "--approval", str(approval_id))
    assert code == 0, err
    assert "COMPLETED" in out
    code, out, err = _cli(db, tokens[ADMIN], "audit", "verify")
    assert code == 0 and "intact" in out, err
    code, _out, err = _cli(db, tokens[ANALYST], "audit", "list")
    assert code == 2 and "admin role" in err


def test_a_what_if_sweep_over_http_runs_as_the_caller_and_a_viewer_is_refused_at_once(
    server: tuple[Workbench, str, dict[str, str], int],
) -> None:
    _wb, url, tokens, batch = server
    body = {"batch_id": batch, "success_rates": [0.8, 0.9], "seeds": 1}
    with client(url, tokens[VIEWER]) as viewer:
        assert_problem(viewer.post("/whatif", json=body), 403, "FORBIDDEN")
    with client(url, tokens[ANALYST]) as analyst:
        started = analyst.post("/whatif", json=body)
        assert started.status_code == 202, started.text
        sweep_id = started.json()["sweep_id"]
        deadline = time.monotonic() + WAIT
        while (answer := analyst.get(f"/whatif/{sweep_id}")).json().get("status") == "RUNNING":
            assert time.monotonic() < deadline, "the sweep did not end"
            time.sleep(0.05)
        assert answer.status_code == 200 and len(answer.json()["scenarios"]) == 2, answer.text
    with client(url, tokens[VIEWER]) as viewer:
        refused = assert_problem(viewer.post(f"/whatif/{sweep_id}/cancel"), 403, "FORBIDDEN")
        assert "cancel a what-if sweep" in refused["detail"]


def test_the_token_setting_is_what_the_cli_and_notebooks_send(
    server: tuple[Workbench, str, dict[str, str], int], tmp_path: Path
) -> None:
    _wb, url, tokens, _batch = server
    settings = Settings(db=tmp_path / "elsewhere.duckdb", token=SecretStr(tokens[APPROVER]))
    remote = Workbench.open(settings=settings, server=url)
    try:
        assert isinstance(remote, Client) and remote.me()["name"] == APPROVER
    finally:
        remote.close()
