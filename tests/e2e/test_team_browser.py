"""Two people sign in through a real OpenID Connect flow and move real money with four eyes.

The identity provider is oidc-provider-mock (Authlib's OpenID Connect server: discovery, the
authorization code flow, signed ID tokens), served on a thread of this process on loopback; the bank is the one written from the
bank's documentation (tests/docbank.py). The server is `streamlit run server.py` with an [auth]
section in its secrets file, so Streamlit's own st.login signs each browser in. No network.
"""

from __future__ import annotations

import re
import secrets as secrets_module
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from playwright.sync_api import Browser, Page, expect

from fxbatch import Settings, Workbench
from fxbatch.access import Principal, Role, acting
from tests.docbank import DocBank, serve_docbank
from tests.e2e.conftest import SCREENSHOTS, VIEWPORT, _serve
from tests.integration.test_docbank_run import CLIENT_SECRET, PASSWORD, load_batch

with warnings.catch_warnings():  # importing it imports the deprecated Authlib APIs (see below)
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from oidc_provider_mock import User, run_server_in_thread

# oidc-provider-mock 0.3.4 still uses Authlib APIs that Authlib 1.9 marks deprecated (authlib.jose,
# get_jwt_config); this suite turns warnings into errors, which inside the provider's token
# endpoint would fail every sign-in. Only those warnings are let through.
pytestmark = [
    pytest.mark.filterwarnings("ignore::authlib.deprecate.AuthlibDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:get_jwt_config:DeprecationWarning"),
]

ADMIN = "head.of.desk@desk.example"
ANALYST = "ana@desk.example"
APPROVER = "pat@desk.example"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """The provider's discovery URL; the analyst and the approver are its users (verified e-mails)."""
    users = [User(sub=email, claims={"email": email, "email_verified": True}) for email in (ANALYST, APPROVER)]
    with run_server_in_thread(port=0, user_claims=users) as server:
        yield f"http://localhost:{server.server_port}/.well-known/openid-configuration"


@pytest.fixture(scope="module")
def bank() -> Iterator[DocBank]:
    with serve_docbank(client_secret=CLIENT_SECRET, password=PASSWORD) as served:
        yield served


def bank_env(bank: DocBank) -> dict[str, str]:
    return {
        "FXBATCH_BANK_URL": bank.url, "FXBATCH_BANK_TOKEN_URL": bank.token_url, "FXBATCH_BANK_GRANT": "password",
        "FXBATCH_BANK_CLIENT_ID": bank.client_id, "FXBATCH_BANK_CLIENT_SECRET": CLIENT_SECRET,
        "FXBATCH_BANK_USERNAME": bank.username, "FXBATCH_BANK_PASSWORD": PASSWORD, "FXBATCH_BANK_SCOPE": bank.scope,
        "FXBATCH_BANK_USER_ID": "dealer@desk.example", "FXBATCH_ADMIN_EMAIL": ADMIN,
    }  # fmt: skip


def as_user(wb: Workbench, email: str, role: Role) -> AbstractContextManager[Principal]:
    return acting(Principal(email, role, "sign-in"))


@pytest.fixture
def team_server(tmp_path: Path, provider: str, bank: DocBank) -> Iterator[tuple[str, str, int]]:
    """A server with sign-in on a database where the admin gave the analyst and the approver their
    roles and the analyst loaded a batch; yields its URL, an admin's API token and the batch id."""
    db = tmp_path / "e2e.duckdb"
    with Workbench.open_local(settings=Settings(db=db, admin_email=ADMIN), login=True) as wb:
        with as_user(wb, ADMIN, Role.ADMIN):
            wb.access.set_role(ANALYST, Role.ANALYST)
            wb.access.set_role(APPROVER, Role.APPROVER)
            token = wb.access.create_token("e2e checks").token
        with as_user(wb, ANALYST, Role.ANALYST):
            batch = load_batch(wb, tmp_path, n=10)
    secrets = tmp_path / "secrets.toml"
    # Streamlit puts its own port in place of {port} (the server binds a free one).
    secrets.write_text(
        "[auth]\n"
        'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        f'cookie_secret = "{secrets_module.token_hex(32)}"\n'
        'client_id = "fxbatch-e2e"\n'
        f'client_secret = "{secrets_module.token_urlsafe(24)}"\n'
        f'server_metadata_url = "{provider}"\n',
        encoding="utf-8",
    )
    env = {**bank_env(bank), "FXBATCH_DB": str(db)}
    with _serve(tmp_path, load_sample=False, env_extra=env, args=("--secrets.files", str(secrets))) as url:
        yield url, token, batch


@pytest.fixture
def screenshot_dir(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """SCREENSHOTS/<test>/NAME.png, for review (``make test SCREENSHOT_DIR=...``)."""
    folder = SCREENSHOTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return lambda name: folder / f"{name}.png"


def sign_in(browser: Browser, url: str, email: str) -> Page:
    """A fresh browser (its own cookies) signed in as ``email`` through the provider's form."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    expect.set_options(timeout=15_000)
    page.goto(url)
    expect(page.get_by_text("Sign in with your desk account")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)  # nothing but the sign-in page
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name=email, exact=True).click()  # the provider's form: sign in as this user
    expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    return page


def settle(page: Page) -> None:
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)


def wait_run_final(url: str, token: str, run_id: int) -> dict[str, object]:
    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        deadline = time.monotonic() + WAIT_S
        while True:
            run = api.get(f"/runs/{run_id}").json()
            if run["status"] not in ("RUNNING", "PENDING"):
                return dict(run)
            assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
            time.sleep(0.2)


def test_two_people_sign_in_request_approve_and_run_with_both_on_the_audit_trail(
    browser: Browser, team_server: tuple[str, str, int], screenshot_dir: Callable[[str], Path]
) -> None:
    url, admin_token, _batch = team_server
    analyst = sign_in(browser, url, ANALYST)
    # The analyst asks for a run against the HTTP bank: the form asks for approval, not a start.
    analyst.goto(f"{url}/batches")
    expect(analyst.get_by_role("heading", name="Batches")).to_be_visible()
    analyst.get_by_text("HTTP", exact=True).click()
    analyst.get_by_role("button", name="Review the run…").click()
    expect(analyst.get_by_text("an approver other than you must approve it")).to_be_visible()
    analyst.get_by_role("button", name="Request approval").click()
    expect(analyst.get_by_text("Approval request 1 is waiting for an approver")).to_be_visible()
    analyst.screenshot(path=str(screenshot_dir("1-requested")))
    analyst.get_by_role("link", name="Open approval request 1").click()
    expect(analyst.get_by_role("heading", name="Approvals")).to_be_visible()
    expect(analyst.get_by_text("An approver other than the requester decides on this request.")).to_be_visible()
    expect(analyst.get_by_role("button", name="Approve")).to_have_count(0)  # cannot approve: not an approver

    # The approver, in another browser, approves it.
    approver = sign_in(browser, url, APPROVER)
    approver.goto(f"{url}/approvals?approval=1")
    expect(approver.get_by_role("heading", name="Approvals")).to_be_visible()
    approver.get_by_role("button", name="Approve").click()
    settle(approver)
    expect(approver.get_by_text(re.compile("approved", re.IGNORECASE)).first).to_be_visible()
    approver.screenshot(path=str(screenshot_dir("2-approved")))

    # The analyst starts the approved run; it executes against the bank and ends.
    analyst.goto(f"{url}/approvals?approval=1")
    analyst.get_by_role("button", name="Start the approved run").click()
    expect(analyst).to_have_url(re.compile(r"/run\?run=1"))
    run = wait_run_final(url, admin_token, 1)
    assert run["status"] == "COMPLETED" and run["counts"]["SUCCESS"] == 10  # type: ignore[index]
    analyst.screenshot(path=str(screenshot_dir("3-run")))

    # Both people's actions are on the audit trail with their e-mail addresses.
    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {admin_token}"}) as api:
        trail = api.get("/audit", params={"limit": 500}).json()
        assert api.get("/audit/verify").json()["ok"] is True
    seen = {(row["actor"], row["action"], row["object"]) for row in trail}
    assert (ANALYST, "sign-in", f"user:{ANALYST}") in seen and (APPROVER, "sign-in", f"user:{APPROVER}") in seen
    assert (ANALYST, "run.request", "approval:1") in seen
    assert (APPROVER, "run.approve", "approval:1") in seen
    assert (ANALYST, "run", "run:1") in seen
