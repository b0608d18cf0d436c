"""Real-browser fixtures: the fxbatch server (`streamlit run server.py`: the app and the HTTP API in one
process, as `make run` starts it) on a port of its own with its own database, and Debian's Chromium.

The browser is /usr/bin/chromium (`make browser` installs it); Playwright never downloads one here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from fxbatch.serving import ServerRecord, read_record

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in a container
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENS_FOR_HUMANS = Path("/tmp/fxbatch-screens")
# Where the screenshots go for review: `make test` names the folder (SCREENSHOT_DIR), else test-results/.
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR") or ROOT / "test-results")
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
STARTUP_TIMEOUT_S = 60


def _exited(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"the server exited with {proc.returncode} before it was healthy:\n{log.read_text()}")


def _wait_recorded(db: Path, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> ServerRecord:
    """The server's record beside its database: written once the database is open, it names the
    port the server bound (started with --server.port 0, so no other process can take it first)."""
    while time.monotonic() < deadline:
        _exited(proc, log)
        record = read_record(db)
        if record is not None and record.pid == proc.pid:
            return record
        time.sleep(0.2)
    raise RuntimeError(f"the server recorded no URL beside {db} after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        _exited(proc, log)
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not healthy after {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and anything it started (it leads its own process group); runs in progress stop."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def _serve(
    tmp: Path, *, load_sample: bool = True, env_extra: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[str]:
    """`streamlit run server.py` on a free port with a database of its own in ``tmp``; yields its URL
    (the app at /, the API under /api/v1). ``env_extra`` and ``args`` add settings and options
    (``--secrets.files FILE`` for sign-in)."""
    db = tmp / "e2e.duckdb"
    env = {
        **{
            k: v for k, v in os.environ.items() if not k.startswith("FXBATCH_") or k == "FXBATCH_TODAY"
        },  # the developer's own settings stay out
        "FXBATCH_DB": str(db),
        "FXBATCH_LOAD_SAMPLE_ON_CREATE": "true" if load_sample else "false",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        **(env_extra or {}),
    }
    log = tmp / "streamlit.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "server.py",
        "--server.headless",
        "true",
        "--server.port",
        "0",  # the server binds a free port and records it beside the database
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        # Others edit the tree while tests run: a watched file change would pop up "Rerun?" mid-test.
        "--server.fileWatcherType",
        "none",
        *args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        url = _wait_recorded(db, proc, log, deadline).url
        _wait_healthy(url, proc, log, deadline)
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running server on a free port, with a database of its own (created with the sample batch)."""
    with _serve(tmp_path_factory.mktemp("e2e-app")) as url:
        yield url


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., contextlib.AbstractContextManager[str]]]:
    """Start a fresh server of one's own (``with serve() as url``), e.g. one nobody has visited yet."""

    def _start(load_sample: bool = True) -> contextlib.AbstractContextManager[str]:
        folder = tmp_path / f"app{len(list(tmp_path.glob('app*')))}"
        folder.mkdir()
        return _serve(folder, load_sample=load_sample)

    yield _start


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    expect.set_options(timeout=15_000)  # assertions too: the machine is shared and often busy
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, page: Page) -> Callable[[str], Path]:
    """Save a screenshot (1400 px wide, the page's full height) to SCREENSHOTS/<test>/NAME.png and copy it to
    /tmp/fxbatch-screens/."""
    folder = SCREENSHOTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)

    def _shot(name: str) -> Path:
        path = folder / f"{name}.png"
        # Streamlit scrolls inside its main container, so full_page alone stops at the window:
        # grow the window to the content for the shot, then put it back.
        size = page.viewport_size or VIEWPORT
        content = page.get_by_test_id("stMain").evaluate("el => el.scrollHeight")
        page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(content))})
        try:
            page.screenshot(path=str(path), full_page=True)
        finally:
            page.set_viewport_size(size)
        SCREENS_FOR_HUMANS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, SCREENS_FOR_HUMANS / path.name)
        return path

    return _shot
