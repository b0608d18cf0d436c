"""The app in a real browser: home with the sample batch, an upload through the file input, the new batch listed,
runs started from the app and through the HTTP API served by the same process."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import FilePayload, Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

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
    checked = re.compile(rf"^{re.escape(name)} (is checked|cannot be loaded)")
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=checked)).to_be_visible()
    settle(page)


def number_input(page: Page, label: str) -> Locator:
    """A number input by its label (one with a help icon is not found by get_by_label)."""
    return page.get_by_test_id("stNumberInput").filter(has_text=label).locator("input")


_OPEN_EDITOR = """old => {
    document.querySelectorAll('[data-fx-editor]').forEach(e => e.removeAttribute('data-fx-editor'));
    const found = [...document.querySelectorAll('#portal textarea, #portal input')].find(e => e.value === old);
    if (found) found.setAttribute('data-fx-editor', '1');
    return Boolean(found);
}"""


def edit_cell(page: Page, grid: Locator, *, row: int, column: int, old: str, new: str) -> None:
    """Type a new value into a data editor's cell. The grid is a canvas: select the row's first cell
    (rows are 35 px under a 35 px header), move right with the keyboard, and Enter opens the cell's
    editor, a real text box: the one in the overlay that holds the cell's value (the overlay may
    hold other inputs). A grid still settling after a rerun may miss the first try."""
    seen: list[list[str]] = []
    for _ in range(5):
        settle(page)
        grid.scroll_into_view_if_needed()
        # A try that moved right scrolled the grid sideways: the click below must land on the first
        # column again, not on whichever one the scroll left there.
        grid.evaluate("el => el.querySelectorAll('.dvn-scroller').forEach(s => { s.scrollLeft = 0; })")
        box = grid.bounding_box()
        assert box is not None
        page.mouse.click(box["x"] + 30, box["y"] + 35 + row * 35 + 17)
        try:
            # The keys go where the focus is: to the grid only once the click has given it the focus
            # (a grid still drawing after a rerun takes the arrows elsewhere, and Enter opens column 0).
            page.wait_for_function("el => el.contains(document.activeElement)", arg=grid.element_handle(),
                                   timeout=10_000)  # fmt: skip
        except PlaywrightTimeoutError:
            seen.append([])
            continue
        for _ in range(column):
            page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        try:
            # Generous: on a machine running two suites at once the grid can take seconds to open it.
            page.wait_for_function(_OPEN_EDITOR, arg=old, timeout=10_000)
        except PlaywrightTimeoutError:
            seen.append(page.locator("#portal textarea, #portal input").evaluate_all("els => els.map(e => e.value)"))
            page.keyboard.press("Escape")
            continue
        editor = page.locator("[data-fx-editor]")
        editor.fill(new)
        editor.press("Enter")
        return
    raise AssertionError(
        f"could not open the editor of cell ({row}, {column}); the overlay's inputs held, try by try: {seen}"
    )


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
    expect(metrics).to_have_count(4)
    expect(metrics.nth(0)).to_contain_text("Batches1")
    expect(metrics.nth(1)).to_contain_text("Trades loaded200")
    expect(metrics.nth(2)).to_contain_text(re.compile(r"Notional loadedR [\d.]+m"))
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("1-home")

    open_from_nav(page, "Upload", "Upload trades")
    expect(page).to_have_url(re.compile(r"/upload$"))
    screenshot("2-upload-empty")
    choose_file(page, str(DATA / "sample_trades.csv"), "sample_trades.csv")
    # The page checks the file at once; nothing is stored until the analyst creates the batch.
    expect(page.get_by_test_id("stMetric").filter(has_text=re.compile(r"^Accepted"))).to_contain_text("200")
    page.get_by_role("button", name="Create batch with 200 trade(s)").click()
    success = page.get_by_test_id("stAlertContentSuccess")
    expect(success).to_contain_text("Batch 2 'sample_trades")
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text=re.compile(r"^Accepted"))).to_contain_text("200")
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
    choose_file(page, str(DATA / "sample_with_errors.csv"), "sample_with_errors.csv")
    expect(page.get_by_role("tab", name="Rejections (10 rows)")).to_be_visible()
    page.get_by_role("tab", name="Correct rejected rows").click()
    grid = page.get_by_test_id("stDataFrame").last
    expect(grid).to_be_visible()
    screenshot("5a-upload-checked")
    # Correct row 9 (side HOLD, the grid's third row) the way an analyst does: select its Row cell,
    # move right to the side column (row, problems, trade_id, client_cif, account_number,
    # currency_pair, side), type over the value and press Enter. The grid is a canvas.
    edit_cell(page, grid, row=2, column=6, old="HOLD", new="SELL")
    revalidate = page.get_by_role("button", name="Re-validate")
    expect(revalidate).to_be_enabled()
    revalidate.click()
    expect(page.get_by_test_id("stAlertContentInfo")).to_contain_text("1 corrected row(s) now pass")
    settle(page)
    screenshot("5b-upload-corrected")
    page.get_by_role("button", name="Create batch with 4 trade(s)").click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("'sample_with_errors' created")
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Rejected")).to_contain_text("9")
    expect(page.get_by_role("heading", name="Rejected rows")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_be_visible()
    screenshot("5-upload-rejections")

    header_only = b"trade_id,client_cif,account_number,currency_pair,side,amount\n"
    choose_file(page, [{"name": "morning.csv", "mimeType": "text/csv", "buffer": header_only}], "morning.csv")
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_contain_text("morning.csv has a header row")
    settle(page)
    expect(page.get_by_test_id("stAlertContentSuccess")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("6-upload-unusable")

    open_from_nav(page, "Batches", "Batches")
    page.get_by_role("combobox", name="Batch").click()
    page.get_by_role("option", name=re.compile(r": sample_with_errors$")).click()
    rejections_tab = page.get_by_role("tab", name="Rejections (9 rows)")
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
    assert len(lines) == 1 + 9  # row 9 was corrected and loaded


def test_an_analyst_starts_a_run_watches_it_from_two_tabs_and_reviews_the_charts(
    app_url: str, page: Page, screenshot: Callable[[str], Path]
) -> None:
    # From the root: the first request of a fresh server for a page URL is served before the app's
    # st.navigation has run once, and shows the pages/ folder instead (a streamlit quirk).
    page.goto(app_url)
    expect(page.get_by_role("heading", name="fxbatch")).to_be_visible()
    open_from_nav(page, "Batches", "Batches")
    page.get_by_role("combobox", name="Batch", exact=True).click()
    page.get_by_role("option", name="1: Sample batch").click()
    expect(page.get_by_role("heading", name="Batch 1: Sample batch")).to_be_visible()
    settle(page)
    # Slow enough (one bank call of 20 ms at a time, two calls per trade) to be watched while it runs.
    number_input(page, "Latency per bank call (ms)").fill("20")
    number_input(page, "Concurrency").fill("1")
    page.get_by_role("button", name="Review the run…").click()
    confirm = page.get_by_test_id("stAlertContentInfo").filter(has_text="This will run batch 1")
    expect(confirm).to_contain_text("200 trades")
    expect(confirm).to_contain_text("20 ms per bank call")
    settle(page)
    screenshot("8-batches-confirm-run")
    page.get_by_role("button", name="Start the run").click()

    expect(page.get_by_role("heading", name="Run detail")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/run\?run=\d+$"))
    run_id = page.url.rsplit("=", 1)[1]
    bar = page.get_by_test_id("stProgress")
    expect(bar.first).to_contain_text(f"Run {run_id}:")
    expect(page.get_by_role("button", name=re.compile(r"Cancel run \d+"))).to_be_visible()
    screenshot("9-run-in-progress")

    # Another tab (a new session) finds the same run by its URL, with its progress.
    other = page.context.new_page()
    other.goto(f"{app_url}/run?run={run_id}")
    expect(other.get_by_role("heading", name="Run detail")).to_be_visible()
    plots = other.locator(".js-plotly-plot")
    expect(other.get_by_test_id("stProgress").first).to_contain_text(f"Run {run_id}")

    # Both tabs reach the end on their own (the fragment polls; the page redraws once with the charts).
    # The toast first: it shows for 10 s, and drawing nine plotly charts in two tabs on a busy machine can take longer.
    expect(page.get_by_test_id("stToast")).to_contain_text(f"Run {run_id} finished", timeout=90_000)
    expect(page.locator(".js-plotly-plot")).to_have_count(9, timeout=60_000)
    expect(plots).to_have_count(9, timeout=90_000)
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Not started")).to_contain_text("0")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile(r"Cancel run \d+"))).to_have_count(0)
    for name in ("Outcome of every trade", "Why trades failed (Pareto)", "Throughput"):
        expect(page.locator(".js-plotly-plot").filter(has_text=name)).to_have_count(1)
    screenshot("10-run-finished")
    other.close()

    # A reload keeps the run (the URL names it) and the trade filters work in the browser too.
    page.reload()
    expect(page.locator(".js-plotly-plot")).to_have_count(9, timeout=60_000)
    settle(page)
    expect(page.get_by_role("combobox", name="Run", exact=True)).to_have_value(re.compile(rf"^Run {run_id} "))
    page.get_by_text("Unmask accounts", exact=True).click()
    settle(page)
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="of 200 matching")).to_be_visible()
    hint = page.get_by_test_id("stCaptionContainer").filter(has_text="Click a row")
    expect(hint).to_be_visible()
    # Click the second row's selection cell (the grid is a canvas: rows are 35 px under a 35 px header).
    grid = page.get_by_test_id("stDataFrame").filter(has=page.locator("canvas")).first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 35 + 17)
    expect(hint).to_have_count(0)
    settle(page)
    page.get_by_test_id("stMain").get_by_text("Trade detail").scroll_into_view_if_needed()
    screenshot("11-run-trades")

    open_from_nav(page, "Home", "fxbatch")
    expect(page.get_by_role("heading", name="Latest runs")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot("12-home-with-runs")


def test_a_bookmarked_run_opens_with_the_apps_navigation_on_a_freshly_started_server(
    serve: Callable[..., AbstractContextManager[str]], page: Page, screenshot: Callable[[str], Path]
) -> None:
    with serve() as url:
        # Nobody has opened this server yet: the first request is a page URL with a run id.
        page.goto(f"{url}/run?run=7")
        expect(page.get_by_role("heading", name="Run detail")).to_be_visible()
        settle(page)
        nav = page.get_by_test_id("stSidebarNav")
        expect(nav.get_by_role("link", name="Run detail")).to_be_visible()
        expect(nav.get_by_role("link", name="common")).to_have_count(0)  # not the pages/ folder's files
        expect(page.get_by_test_id("stAlertContentInfo")).to_contain_text("No runs yet")
        screenshot("13-fresh-server-deep-link")
        open_from_nav(page, "Batches", "Batches")
        expect(page.get_by_role("combobox", name="Batch", exact=True)).to_have_value("1: Sample batch")


def api_json(response: httpx.Response, status: int) -> Any:
    """The answer's JSON, once it is the API's (an unknown path is answered 200 with the app's HTML)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]
    return response.json()


def shown_count(bar: Locator, run_id: int) -> int:
    """The trades done that a progress bar's text shows: 'Run 7: 64 of 200 trades · …'."""
    found = re.search(rf"Run {run_id}: ([\d,]+) of ", bar.inner_text())
    assert found is not None, bar.inner_text()
    return int(found.group(1).replace(",", ""))


def test_a_run_started_through_the_api_shows_live_progress_in_the_app(
    serve: Callable[..., AbstractContextManager[str]], page: Page, screenshot: Callable[[str], Path]
) -> None:
    with serve() as url, httpx.Client(base_url=f"{url}/api/v1", timeout=30) as api:
        batches = api_json(api.get("/batches"), 200)
        assert [(b["batch_id"], b["trades"]) for b in batches] == [(1, 200)]
        # Long by construction, however fast the machine: with latency the engine works in waves of
        # 64 x concurrency trades, each quoted then booked one bank call of 250 ms at a time, so the
        # 200 trades take four waves (about 100 s) and the trades done grow every 16-32 s.
        started = api_json(api.post("/batches/1/runs", json={"latency_ms": 250, "concurrency": 1}), 202)
        run_id = int(started["run_id"])
        assert started["url"] == f"/api/v1/runs/{run_id}"
        run = api_json(api.get(f"/runs/{run_id}"), 200)
        assert run["status"] == "RUNNING"
        assert run["progress"]["total"] == 200

        # Home lists the run among those running now, with its progress, and leads to it.
        page.goto(url)
        expect(page.get_by_role("heading", name="fxbatch")).to_be_visible()
        expect(page.get_by_role("heading", name="Running now")).to_be_visible()
        running = page.get_by_test_id("stProgress").filter(has_text=f"Run {run_id}: ")
        expect(running).to_contain_text(" of 200 trades")
        expect(page.get_by_test_id("stException")).to_have_count(0)
        screenshot("14-home-running-now")
        page.get_by_test_id("stMain").get_by_role("link", name="Watch").click()

        # The run's page follows it live: the trades done grow while the page is open (the fragment polls).
        expect(page.get_by_role("heading", name="Run detail")).to_be_visible()
        expect(page).to_have_url(re.compile(rf"/run\?run={run_id}$"))
        bar = page.get_by_test_id("stProgress").filter(has_text=f"Run {run_id}: ")
        expect(bar).to_contain_text(" of 200 trades")
        expect(page.get_by_role("button", name=re.compile(r"Cancel run \d+"))).to_be_visible()
        before = shown_count(bar, run_id)
        # Trades done only grow, so another number than the one seen is a larger one.
        expect(bar).to_have_text(re.compile(rf"Run {run_id}: (?!{before:,} of)[\d,]+ of 200 trades"), timeout=60_000)
        after = shown_count(bar, run_id)
        assert before < after < 200
        assert api_json(api.get(f"/runs/{run_id}"), 200)["status"] == "RUNNING"
        screenshot("15-api-run-in-progress")

        # Cancelled through the API: the page comes to show the run's end on its own, as the API does.
        cancelled = api_json(api.post(f"/runs/{run_id}/cancel"), 200)
        assert cancelled["status"] in ("RUNNING", "CANCELLED")  # the wave in hand finishes first
        ended = page.get_by_test_id("stProgress").filter(has_text=f"Run {run_id}: Cancelled")
        expect(ended).to_be_visible(timeout=60_000)
        expect(page.get_by_role("button", name=re.compile(r"Cancel run \d+"))).to_have_count(0)
        cancelled_metric = page.get_by_test_id("stMetric").filter(has_text="Cancelled")
        expect(cancelled_metric.get_by_test_id("stMetricValue")).not_to_have_text("0")
        expect(page.get_by_test_id("stException")).to_have_count(0)
        run = api_json(api.get(f"/runs/{run_id}"), 200)
        assert run["status"] == "CANCELLED"
        assert run["progress"] is None
        assert run["counts"]["CANCELLED"] > 0
        assert sum(run["counts"][s] for s in ("SUCCESS", "FAILED", "CANCELLED")) == 200
        settle(page)
        screenshot("16-api-run-cancelled")


# The accounts of data/sample_with_errors.csv: none may show in full while "Unmask accounts" is off.
ACCOUNTS = ("0012345678", "0022345678", "0032345678", "0042345678")


def assert_no_full_account(page: Page) -> None:
    """Neither the page's text nor its HTML (the grids' accessible cells included) holds a full account."""
    html = page.content()
    shown = [a for a in ACCOUNTS if a in html]
    assert not shown, f"unmasked account(s) {shown} on {page.url}"


def click_grid_row(page: Page, grid: Locator, row: int) -> None:
    """Click a cell in the middle of a data grid's row (not its checkbox): rows are 35 px under a 35 px header."""
    settle(page)
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + min(250, box["width"] / 2), box["y"] + 35 + row * 35 + 17)
    settle(page)


def test_an_analyst_walks_from_upload_to_export_with_accounts_masked_throughout(
    serve: Callable[..., AbstractContextManager[str]], page: Page, screenshot: Callable[[str], Path]
) -> None:
    """Issue 16: upload -> correct -> create -> run -> click a trade -> export, by clicks on rows, with no
    account number unmasked anywhere (page or file) until the analyst unmasks."""
    with serve() as url:
        page.goto(url)
        expect(page.get_by_role("heading", name="fxbatch")).to_be_visible()
        open_from_nav(page, "Upload", "Upload trades")
        choose_file(page, str(DATA / "sample_with_errors.csv"), "sample_with_errors.csv")
        expect(page.get_by_role("tab", name="Rejections (10 rows)")).to_be_visible()
        assert_no_full_account(page)
        screenshot("walk-1-upload-checked")
        page.get_by_role("tab", name="Correct rejected rows").click()
        grid = page.get_by_test_id("stDataFrame").last
        expect(grid).to_be_visible()
        edit_cell(page, grid, row=2, column=6, old="HOLD", new="SELL")
        page.get_by_role("button", name="Re-validate").click()
        expect(page.get_by_test_id("stAlertContentInfo")).to_contain_text("1 corrected row(s) now pass")
        settle(page)
        assert_no_full_account(page)
        screenshot("walk-2-upload-corrected")
        page.get_by_role("button", name="Create batch with 4 trade(s)").click()
        expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Batch 2 'sample_with_errors' created")
        settle(page)
        assert_no_full_account(page)
        screenshot("walk-3-upload-created")

        # Batches: a click on a row (not its checkbox) picks the batch; newest first.
        open_from_nav(page, "Batches", "Batches")
        table = page.get_by_test_id("stDataFrame").first
        click_grid_row(page, table, 1)
        expect(page.get_by_role("heading", name="Batch 1: Sample batch")).to_be_visible()
        click_grid_row(page, table, 0)
        expect(page.get_by_role("heading", name="Batch 2: sample_with_errors")).to_be_visible()
        expect(page.get_by_role("combobox", name="Batch", exact=True)).to_have_value("2: sample_with_errors")
        settle(page)
        assert_no_full_account(page)
        screenshot("walk-4-batches")
        page.get_by_role("button", name="Review the run…").click()
        expect(page.get_by_test_id("stAlertContentInfo").filter(has_text="This will run batch 2")).to_contain_text(
            "4 trades"
        )
        settle(page)
        page.get_by_role("button", name="Start the run").click()

        # The run: its page ends with every trade done; a click on the second trade's row shows its story.
        expect(page.get_by_role("heading", name="Run detail")).to_be_visible()
        expect(page.get_by_test_id("stMetric").filter(has_text="Not started")).to_contain_text("0", timeout=60_000)
        expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=60_000)
        settle(page)
        hint = page.get_by_test_id("stCaptionContainer").filter(has_text="Click a row")
        expect(hint).to_be_visible()
        detail = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(r"\(row \d+\)"))
        first = detail.first.inner_text()
        trades = page.get_by_test_id("stDataFrame").filter(has=page.locator("canvas")).first
        click_grid_row(page, trades, 1)
        expect(hint).to_have_count(0)
        expect(detail.first).not_to_have_text(first)
        expect(detail.first).to_contain_text("account ••••••")
        assert_no_full_account(page)
        page.get_by_test_id("stMain").get_by_text("Trade detail").scroll_into_view_if_needed()
        screenshot("walk-5-run-trade-detail")

        # Export, masked: the file holds the last 4 digits only, and its name does not say UNMASKED.
        with page.expect_download() as download:
            page.get_by_role("button", name=re.compile(r"Download run_\d+\.csv \(4 trades\)")).click()
        assert "UNMASKED" not in download.value.suggested_filename
        text = Path(download.value.path()).read_text(encoding="utf-8")
        assert "••••••5678" in text
        assert not [a for a in ACCOUNTS if a in text]
        settle(page)
        screenshot("walk-6-export")

        # Unmasked on purpose: the page shows the full numbers, and the export says so in its name.
        page.get_by_text("Unmask accounts", exact=True).click()
        settle(page)
        expect(detail.first).to_contain_text(re.compile(r"account 00\d{8}"))
        with page.expect_download() as download:
            page.get_by_role("button", name=re.compile(r"Download run_\d+-UNMASKED\.csv")).click()
        assert download.value.suggested_filename.endswith("-UNMASKED.csv")
        assert "0012345678" in Path(download.value.path()).read_text(encoding="utf-8")
        expect(page.get_by_test_id("stException")).to_have_count(0)
