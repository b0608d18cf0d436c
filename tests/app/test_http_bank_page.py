"""The app against an HTTP bank: chosen in the run form, credentials from Streamlit secrets, a
bank that cannot be reached leaves the run INTERRUPTED, and the run page resumes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import APP, TIMEOUT
from tests.app.test_run_pages import app_workbench, metrics, ok
from tests.integration.banksim_helpers import CLIENT, SECRET, Service, free_port
from tests.integration.test_http_bank import assert_one_deal_per_success


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[Service]:
    """A bank simulator on a reserved port, not started yet."""
    svc = Service(tmp_path, port=free_port())
    try:
        yield svc
    finally:
        svc.kill()


def app_with_secrets(**secrets: object) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["fxbatch"] = secrets
    return ok(at.run())


def review(at: AppTest, url: str) -> AppTest:
    ok(at.switch_page("pages/batches.py").run())
    at.radio(key="bank_kind").set_value("HTTP")
    at.text_input(key="bank_url").set_value(url)
    return at.form_submit_button[0].click().run()


def test_an_http_bank_url_that_is_not_an_address_is_refused(db_path: Path) -> None:
    at = review(app_with_secrets(), "bank.example.com")
    assert "is not a web address" in at.error[0].value
    assert not app_workbench().runs()


def test_a_secret_that_is_not_a_setting_is_named(db_path: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.secrets["fxbatch"] = {"bank_secret": "x"}
    at.run()
    assert "Secret fxbatch.bank_secret is not an fxbatch setting" in at.error[0].value


def test_a_run_against_an_unreachable_http_bank_is_interrupted_then_resumed_from_the_run_page(
    db_path: Path, bank: Service, tmp_path: Path
) -> None:
    at = app_with_secrets(bank_client_id=CLIENT, bank_client_secret=SECRET, bank_unreachable_window_s=1.0)
    ok(review(at, bank.url))
    confirm = at.info[0].value
    assert f"against the HTTP bank at {bank.url} (client id {CLIENT}, client credentials grant" in confirm
    assert SECRET not in confirm
    ok(at.button(key="run_confirm").click().run())
    [run] = app_workbench().runs()
    assert run.config.bank_url == bank.url

    deadline = time.monotonic() + 60
    while app_workbench().run_summary(run.run_id).status.value != "INTERRUPTED":
        assert time.monotonic() < deadline, "the run did not stop while the bank was unreachable"
        time.sleep(0.2)
    summary = app_workbench().run_summary(run.run_id)
    assert summary.counts.get("FAILED", 0) == 0  # an unreachable bank fails no trade

    at.switch_page("pages/run.py").run()
    ok(at)
    assert any("stopped early" in w.value for w in at.warning)
    assert at.text_input(key=f"resume_url_{run.run_id}").value == bank.url
    assert all(SECRET not in m.value for m in at.markdown)

    bank.start()
    ok(at.button(key="resume").click().run())
    deadline = time.monotonic() + 120
    while app_workbench().run_summary(run.run_id).status.value in ("INTERRUPTED", "RUNNING", "PENDING"):
        assert time.monotonic() < deadline, "the resumed run did not finish"
        time.sleep(0.3)
    summary = app_workbench().run_summary(run.run_id)
    assert summary.status.value in ("COMPLETED", "PARTIAL")
    assert summary.counts["SUCCESS"] + summary.counts["FAILED"] == summary.trades == 200
    ok(at.run())
    assert metrics(at)["Succeeded"] == f"{summary.counts['SUCCESS']:,}"
    bank.stop()
    assert_one_deal_per_success(app_workbench(), run.run_id, bank.ledger(tmp_path))
