"""The app in a real browser: home with the sample batch, an upload through the file input, the new batch listed."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import FilePayload, Page, expect

from tests.conftest import DATA
from tests.e2e.conftest import CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing; `make browser` installs Debian's chromium"
    ),
]


def settle(page: Page) -> None:
    """Wait until the current script run has finished (never a fixed sleep)."""
    page.locator("[data-test-script-state='notRunning']").wait_for()


def choose_file(page: Page, files: str | list[FilePayload], name: str) -> None:
    """Choose a file and wait until the server has it (the page names it), so a click cannot outrun the upload."""
    page.locator("input[type=file]").set_input_files(files)
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"{name} (")).to_contain_text("is ready")
    settle(page)


def open_from_nav(page: Page, label: str, heading: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=label).click()
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    settle(page)


def test_an_analyst_uploads_a_spreadsheet_and_finds_the_new_batch(
    app_url: str, page: Page, screenshot: Callable[[str], Path]
) -> None:
    page.goto(app_url)
    expect(page.get_by_role("heading", name="fxbatch")).to_be_visible()
    settle(page)
    metrics = page.get_by_test_id("stMetric")
    expect(metrics).to_have_count(3)
    expect(metrics.nth(0)).to_contain_text("Batches1")
    expect(metrics.nth(1)).to_contain_text("Trades loaded200")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("1-home")

    open_from_nav(page, "Upload", "Upload trades")
    expect(page).to_have_url(re.compile(r"/upload$"))
    screenshot("2-upload-empty")
    choose_file(page, str(DATA / "sample_trades.csv"), "sample_trades.csv")
    page.get_by_role("button", name="Validate and create batch").click()
    success = page.get_by_test_id("stAlertContentSuccess")
    expect(success).to_contain_text("Batch 2 'sample_trades")
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Accepted")).to_contain_text("200")
    # The sample batch came from the same file: the analyst is told, and both batches are kept.
    expect(page.get_by_test_id("stAlertContentWarning")).to_contain_text("loaded before as batch 1")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("3-upload-done")

    open_from_nav(page, "Batches", "Batches")
    expect(page).to_have_url(re.compile(r"/batches$"))
    expect(page.get_by_role("combobox", name="Batch")).to_have_value("2: sample_trades")
    expect(page.get_by_role("tab", name="Trades (200)")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("4-batches")


def test_an_analyst_sees_why_rows_were_rejected_and_why_a_file_was_refused(
    app_url: str, page: Page, screenshot: Callable[[str], Path]
) -> None:
    page.goto(f"{app_url}/upload")
    expect(page.get_by_role("heading", name="Upload trades")).to_be_visible()
    settle(page)
    create = page.get_by_role("button", name="Validate and create batch")

    choose_file(page, str(DATA / "sample_with_errors.csv"), "sample_with_errors.csv")
    create.click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("'sample_with_errors' created")
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Rejected")).to_contain_text("10")
    expect(page.get_by_role("heading", name="Rejected rows")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    screenshot("5-upload-rejections")

    header_only = b"trade_id,client_cif,account_number,currency_pair,side,amount\n"
    choose_file(page, [{"name": "morning.csv", "mimeType": "text/csv", "buffer": header_only}], "morning.csv")
    create.click()
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_contain_text("morning.csv has a header row")
    settle(page)
    expect(page.get_by_test_id("stAlertContentSuccess")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("6-upload-unusable")

    open_from_nav(page, "Batches", "Batches")
    page.get_by_role("combobox", name="Batch").click()
    page.get_by_role("option", name=re.compile(r": sample_with_errors$")).click()
    rejections_tab = page.get_by_role("tab", name="Rejections (10)")
    expect(rejections_tab).to_be_visible()
    settle(page)
    rejections_tab.click()
    expect(page.get_by_role("tabpanel").get_by_test_id("stDataFrame")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("7-batches-rejections")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download all rejections (CSV)").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row,column,value,code,message"
    assert len(lines) == 1 + 10
