"""AppTest fixtures: the real app.py on a temporary database, with no workbench shared between tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"
PAGES = ("pages/home.py", "pages/upload.py", "pages/batches.py", "pages/run.py")
# Opening the database (and loading the 200-trade sample into a new one) takes longer than
# AppTest's default 3 s on a cold, busy machine.
TIMEOUT = 30


@pytest.fixture(autouse=True)
def fresh_workbench() -> Iterator[None]:
    """The workbench is a process-wide st.cache_resource: clearing it closes the database file."""
    st.cache_resource.clear()
    yield
    st.cache_resource.clear()


@pytest.fixture
def db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app's database (created by the app on first start, with the sample batch)."""
    for name in [
        n for n in os.environ if n.startswith("FXBATCH_") and n != "FXBATCH_TODAY"
    ]:  # the developer's own settings stay out
        monkeypatch.delenv(name)
    path = tmp_path / "app.duckdb"
    monkeypatch.setenv("FXBATCH_DB", str(path))
    return path


@pytest.fixture
def empty_db(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database the app creates without loading the sample batch."""
    monkeypatch.setenv("FXBATCH_LOAD_SAMPLE_ON_CREATE", "false")
    return db_path


@pytest.fixture
def open_page() -> Callable[[str], AppTest]:
    """Run app.py (the router), then switch to ``page`` and run it, as a user clicking the nav does."""

    def _open(page: str = "pages/home.py") -> AppTest:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        if page != "pages/home.py":
            at.switch_page(page).run()
        return at

    return _open


@pytest.fixture
def lock_database() -> Iterator[Callable[[Path], subprocess.Popen[str]]]:
    """Hold a database file open read-write in another process, as a second app or CLI would."""
    procs: list[subprocess.Popen[str]] = []
    holder = "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(120)"

    def _lock(path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield _lock
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
