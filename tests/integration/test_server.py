"""The server: the host's lifespan in process, then `streamlit run server.py` for real (UI + API in
one process, its record beside the database, the loopback rule, a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fxbatch import serving
from fxbatch.errors import DatabaseLockedError, ServerError, SettingsError
from fxbatch.models import RunStatus
from fxbatch.serving import Binding, Host, current_workbench, read_record, record_path
from fxbatch.settings import Settings
from fxbatch.workbench import Workbench

ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:8501"
STARTUP_S = 120.0  # a cold, busy machine: Streamlit, FastAPI and DuckDB all start here
STOP_S = 60.0


# ---------------------------------------------------------------- the host, in process


@pytest.fixture
def no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """This test process hosts nothing before the test, and nothing after it (the host is process-wide)."""
    monkeypatch.setattr(serving, "_current", None)


def host_for(settings: Settings, address: str | None = "127.0.0.1") -> Host:
    return Host(settings=lambda: settings, binding=lambda: Binding(address=address, url=URL))


async def _serve_briefly(host: Host) -> None:
    async with host.lifespan():
        pass


@pytest.mark.usefixtures("no_host")
def test_the_host_opens_the_database_records_the_server_and_lets_both_go_at_shutdown(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "desk.duckdb", load_sample_on_create=True)
    host = host_for(settings)
    assert current_workbench() is None  # no server in this process: pages open their own

    async def serve() -> None:
        async with host.lifespan():
            wb = host.workbench()
            assert current_workbench() is wb
            assert [b.name for b in wb.batches()] == ["Sample batch"]
            record = read_record(settings.db)
            assert record is not None and record.url == URL and record.pid == os.getpid()

    asyncio.run(serve())
    assert not record_path(settings.db).exists()
    with pytest.raises(ServerError, match="stopping"):
        host.workbench()
    with pytest.raises(ServerError):  # pages of a stopping server must not open the file it let go
        current_workbench()
    with Workbench.open_local(settings=settings) as again:  # closed: the file is free
        assert len(again.batches()) == 1


@pytest.mark.usefixtures("no_host")
def test_a_server_start_records_its_settings_in_the_audit_trail_when_they_changed(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "desk.duckdb", load_sample_on_create=False, bank_client_secret="s3cr3t-v4lue")
    asyncio.run(_serve_briefly(host_for(settings)))
    asyncio.run(_serve_briefly(host_for(settings)))  # the same settings: nothing new to record
    moved = settings.model_copy(update={"bank_user_id": "desk2@desk.example", "approval_hours": 4.0})
    asyncio.run(_serve_briefly(host_for(moved)))
    with Workbench.open_local(settings=settings) as wb:
        rows = wb.audit_trail(action="settings")
        assert wb.verify_audit().ok
    assert len(rows) == 2
    newest = json.loads(rows["params"].iloc[0])
    assert newest["changed"] == ["approval_hours", "bank_user_id"]
    assert newest["settings"]["bank_user_id"] == "desk2@desk.example"
    assert newest["settings"]["bank_client_secret"] == "***" and "s3cr3t" not in rows.to_json(date_format="iso")


@pytest.mark.usefixtures("no_host")
def test_pages_use_the_hosted_workbench_and_never_close_it(tmp_path: Path) -> None:
    import streamlit as st

    from pages.common import workbench

    settings = Settings(db=tmp_path / "desk.duckdb", load_sample_on_create=True)
    host = host_for(settings)

    async def serve() -> None:
        async with host.lifespan():
            assert workbench() is host.workbench()
            st.cache_resource.clear()  # what a cache reset does in the app: the server's workbench stays open
            assert len(host.workbench().batches()) == 1

    asyncio.run(serve())


@pytest.mark.usefixtures("no_host")
def test_the_recorded_url_is_the_server_url_setting_when_set(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "desk.duckdb", load_sample_on_create=False, server_url="https://fx.example.com")
    seen: list[str] = []

    async def serve() -> None:
        async with host_for(settings).lifespan():
            record = read_record(settings.db)
            assert record is not None
            seen.append(record.url)

    asyncio.run(serve())
    assert seen == ["https://fx.example.com"]


@pytest.mark.usefixtures("no_host")
def test_the_host_refuses_a_network_address_before_it_touches_the_database(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "desk.duckdb", load_sample_on_create=False)
    with pytest.raises(SettingsError, match="FXBATCH_ALLOW_UNAUTHENTICATED"):
        asyncio.run(_serve_briefly(host_for(settings, address="0.0.0.0")))
    assert not settings.db.exists() and not record_path(settings.db).exists()
    assert current_workbench() is None
    # Under another ASGI server the address is not known at startup: the middleware checks each request.
    asyncio.run(_serve_briefly(host_for(settings, address=None)))
    allowed = settings.model_copy(update={"allow_unauthenticated": True})
    asyncio.run(_serve_briefly(host_for(allowed, address="0.0.0.0")))


@pytest.mark.usefixtures("no_host")
def test_a_host_whose_database_another_server_holds_names_that_server(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "desk.duckdb", load_sample_on_create=False)
    other = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(settings.db), "http://127.0.0.1:8999"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "holding"
        with pytest.raises(DatabaseLockedError, match=r"the fxbatch server at http://127\.0\.0\.1:8999"):
            asyncio.run(_serve_briefly(host_for(settings)))
    finally:
        other.kill()
        other.wait(timeout=STOP_S)
        if other.stdout is not None:
            other.stdout.close()


# Another server, as far as the file and the record go: holds the database and records itself.
HOLDER = """
import sys, time
from fxbatch.serving import write_record
from fxbatch.settings import Settings
from fxbatch.workbench import Workbench
wb = Workbench.open_local(settings=Settings(db=sys.argv[1], load_sample_on_create=False))
write_record(sys.argv[1], sys.argv[2])
print("holding", flush=True)
time.sleep(600)
"""


# ---------------------------------------------------------------- streamlit run server.py


@dataclass
class Server:
    db: Path
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    url: str = ""  # known once the server has recorded it

    def logs(self) -> str:
        return f"stdout:\n{self.out.read_text(errors='replace')}\nstderr:\n{self.err.read_text(errors='replace')}"

    def wait_exit(self, timeout: float = STARTUP_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {timeout} s:\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM (as a service manager stops it), then wait; SIGKILL only if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_S)
                pytest.fail(f"the server did not stop on SIGTERM within {STOP_S} s:\n{self.logs()}")
        return self.proc.returncode


def launch(
    folder: Path, db: Path, *, address: str = "127.0.0.1", env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Server:
    """`streamlit run server.py` with the database ``db``, on a port the system picks (its record says
    which: no free-port race between two copies of the suite); logs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FXBATCH_", "STREAMLIT_")) or k == "FXBATCH_TODAY"},
        "FXBATCH_DB": str(db),
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
        **(env or {}),
    }
    cmd = [
        sys.executable, "-m", "streamlit", "run", "server.py",
        "--server.port", "0", "--server.address", address, "--server.headless", "true",
        # Others edit the tree while tests run: no reruns on their changes.
        "--server.fileWatcherType", "none", *args,
    ]  # fmt: skip
    out, err = folder / "stdout.log", folder / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=stdout, stderr=stderr, start_new_session=True)
    return Server(db, proc, out, err)


def wait_healthy(server: Server) -> None:
    """Wait for the server's record (its URL), then for Streamlit's health check there."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"the server exited with {server.proc.returncode} before it was healthy:\n{server.logs()}")
        record = read_record(server.db)
        if record is None or record.pid != server.proc.pid:
            time.sleep(0.2)
            continue
        server.url = record.url
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{server.url}/_stcore/health", timeout=5)
            if answer.status_code == 200 and answer.text.strip() == "ok":
                return
        time.sleep(0.2)
    pytest.fail(f"the server was not healthy after {STARTUP_S} s:\n{server.logs()}")


@contextlib.contextmanager
def running(folder: Path, db: Path) -> Iterator[Server]:
    server = launch(folder, db)
    try:
        wait_healthy(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("server")
    with running(folder, folder / "desk.duckdb") as started:
        yield started


def test_the_api_answers_json_under_api_v1_beside_the_app(server: Server) -> None:
    answer = httpx.get(f"{server.url}/api/v1/health", timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")  # unknown paths get 200 HTML
    body = answer.json()
    assert body["status"] == "ok" and body["db"] == str(server.db.resolve())


def test_the_server_records_its_url_and_pid_beside_the_database(server: Server) -> None:
    record = read_record(server.db)
    assert record is not None
    assert record.pid == server.proc.pid and record.db == str(server.db.resolve())
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", record.url)  # the port the system gave, not 0
    assert f"URL: {record.url}" in server.out.read_text(errors="replace")  # the one Streamlit announced
    assert set(json.loads(record_path(server.db).read_text(encoding="utf-8"))) == {"url", "pid", "db", "started_at"}


def test_the_api_docs_and_schema_are_served_under_api(server: Server) -> None:
    docs = httpx.get(f"{server.url}/api/docs", timeout=30)
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/api/openapi.json" in docs.text
    schema = httpx.get(f"{server.url}/api/openapi.json", timeout=30)
    assert schema.headers["content-type"].startswith("application/json")
    assert "/v1/health" in schema.json()["paths"]


def test_the_streamlit_app_answers_beside_the_api(server: Server) -> None:
    page = httpx.get(server.url, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<div id="root">' in page.text
    sample = httpx.get(f"{server.url}/api/v1/batches", timeout=30).json()  # the app created the database
    assert [b["name"] for b in sample] == ["Sample batch"]


def test_a_second_server_on_the_same_database_exits_naming_the_first(server: Server, tmp_path: Path) -> None:
    second = launch(tmp_path, server.db)
    try:
        assert second.wait_exit() != 0
        stderr = second.err.read_text(errors="replace")
        assert "fxbatch: the server did not start" in stderr and f"the fxbatch server at {server.url}" in stderr
    finally:
        second.stop()
    record = read_record(server.db)
    assert record is not None and record.pid == server.proc.pid  # the first server's record stays


def test_a_network_address_is_refused_without_the_allow_setting(tmp_path: Path) -> None:
    db = tmp_path / "desk.duckdb"
    refused = launch(tmp_path, db, address="0.0.0.0")
    try:
        assert refused.wait_exit() != 0
    finally:
        refused.stop()
    stderr = refused.err.read_text(errors="replace")
    assert "fxbatch: the server did not start" in stderr
    assert "'0.0.0.0'" in stderr and "sign-in is not configured" in stderr and "[auth]" in stderr
    assert "FXBATCH_ALLOW_UNAUTHENTICATED=1" in stderr
    assert not db.exists() and not record_path(db).exists()  # refused before the database was touched


@pytest.mark.parametrize(
    ("secrets", "env", "named"),
    [
        (
            '[auth]\nredirect_uri = "http://127.0.0.1:8501/oauth2callback"\ncookie_secret = "' + "c" * 40 + '"\n'
            'client_id = "fxbatch"\nserver_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"\n',
            {"FXBATCH_ADMIN_EMAIL": "head@desk.example"},
            "client_secret is missing from the [auth] section",
        ),
        ("[fxbatch]\n", {"FXBATCH_LOGIN": "1"}, "FXBATCH_LOGIN asks for sign-in"),
    ],
    ids=["a key missing", "login asked for without [auth]"],
)
def test_a_missing_or_wrong_auth_section_stops_the_server_naming_the_setting(
    tmp_path: Path, secrets: str, env: dict[str, str], named: str
) -> None:
    db = tmp_path / "desk.duckdb"
    file = tmp_path / "secrets.toml"
    file.write_text(secrets, encoding="utf-8")
    refused = launch(tmp_path, db, env=env, args=("--secrets.files", str(file)))
    try:
        assert refused.wait_exit() != 0
    finally:
        refused.stop()
    stderr = refused.err.read_text(errors="replace")
    assert "fxbatch: the server did not start" in stderr and named in stderr, stderr[-2000:]
    assert not db.exists()  # refused before the database was touched


def test_a_stopped_server_removes_its_record_and_leaves_its_run_resumable(tmp_path: Path) -> None:
    db = tmp_path / "desk.duckdb"
    with running(tmp_path, db) as live:
        # 187 trades, two bank calls each, one call in flight at 100 ms: over 37 s of work, so it is
        # running when stopped. (A run stops between waves of 64 x concurrency trades: ~13 s here.)
        options = {"latency_ms": 100, "concurrency": 1}
        started = httpx.post(f"{live.url}/api/v1/batches/1/runs", json=options, timeout=30)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        view = httpx.get(f"{live.url}/api/v1/runs/{run_id}", timeout=30).json()
        assert view["status"] == "RUNNING" and view["progress"] is not None
        assert live.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
        stderr = live.err.read_text(errors="replace")
        assert "Traceback" not in stderr, live.logs()
    assert not record_path(db).exists()
    with Workbench.open_local(db) as wb:
        assert wb.run_summary(run_id).status is RunStatus.INTERRUPTED


def test_the_cli_works_through_a_running_server_on_the_database_it_holds(server: Server) -> None:
    """`make run` holds the file; a CLI command on the same database goes through the server's API."""
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FXBATCH_") or k == "FXBATCH_TODAY"},
        "FXBATCH_DB": str(server.db),
    }
    done = subprocess.run(
        [sys.executable, "-m", "fxbatch", "--json", "batches"], cwd=ROOT, env=environ, capture_output=True,
        text=True, timeout=STARTUP_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    served = httpx.get(f"{server.url}/api/v1/batches", timeout=30).json()
    assert [b["batch_id"] for b in listed] == [b["batch_id"] for b in served] and listed  # the sample batch
