"""The server's record file beside the database, the loopback rule and its middleware."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fxbatch import serving
from fxbatch.errors import SettingsError
from fxbatch.serving import (
    LoopbackOnly,
    check_binding,
    read_record,
    record_path,
    remove_record,
    write_record,
)
from fxbatch.settings import Settings, load_settings

URL = "http://127.0.0.1:8501"


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def write_raw(db: Path, **fields: Any) -> None:
    record = {"url": URL, "pid": os.getpid(), "db": str(db), "started_at": "2026-12-01T08:00:00Z"} | fields
    record_path(db).write_text(json.dumps(record), encoding="utf-8")


# ---------------------------------------------------------------- the record file


def test_the_record_sits_beside_the_database_file(tmp_path: Path) -> None:
    assert record_path(tmp_path / "desk.duckdb") == tmp_path / "desk.duckdb.server.json"


def test_a_written_record_reads_back_with_this_process_and_the_resolved_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = datetime.now(UTC)
    written = write_record("desk.duckdb", URL)
    record = read_record(tmp_path / "desk.duckdb")
    assert record == written
    assert record.url == URL and record.pid == os.getpid() and record.db == str((tmp_path / "desk.duckdb").resolve())
    assert before - timedelta(seconds=1) <= record.started_at <= datetime.now(UTC)
    on_disk = json.loads(record_path(tmp_path / "desk.duckdb").read_text(encoding="utf-8"))
    assert set(on_disk) == {"url", "pid", "db", "started_at"}


def test_there_is_no_record_when_the_file_is_missing_or_not_a_record(tmp_path: Path) -> None:
    db = tmp_path / "desk.duckdb"
    assert read_record(db) is None
    for text in ("", "{not json", "[]", json.dumps({"url": URL}), json.dumps({"url": URL, "pid": "me"})):
        record_path(db).write_text(text, encoding="utf-8")
        assert read_record(db) is None, text
    record_path(db).unlink()
    record_path(db).mkdir()  # a path that cannot be read as a file
    assert read_record(db) is None


def test_a_record_whose_process_has_died_is_ignored(tmp_path: Path) -> None:
    db = tmp_path / "desk.duckdb"
    write_raw(db, pid=dead_pid())
    assert read_record(db) is None
    write_raw(db, pid=0)  # never a process id (os.kill(0, ...) would mean our own process group)
    assert read_record(db) is None
    write_raw(db, pid=os.getppid())  # alive
    assert read_record(db) is not None


def test_hosted_here_only_when_the_record_and_the_environment_name_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "desk.duckdb"
    assert not serving.hosted_here(db)  # no record
    write_raw(db, pid=os.getppid())  # another live process serves it
    assert not serving.hosted_here(db)
    write_raw(db)  # names this process: a server killed before it removed its record, our id reused
    assert not serving.hosted_here(db)
    monkeypatch.setenv("FXBATCH_HOSTING", f"{os.getpid()} {db.resolve()}")  # as a server's lifespan marks it
    assert serving.hosted_here(db)
    monkeypatch.setenv("FXBATCH_HOSTING", f"{os.getpid()} {(tmp_path / 'other.duckdb').resolve()}")
    assert not serving.hosted_here(db)


def test_writing_replaces_the_record_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    db = tmp_path / "desk.duckdb"
    write_record(db, URL)
    write_record(db, "http://127.0.0.1:9000")
    record = read_record(db)
    assert record is not None and record.url == "http://127.0.0.1:9000"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desk.duckdb.server.json"]


def test_a_write_that_fails_keeps_the_old_record_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "desk.duckdb"
    write_record(db, URL)

    def no_rename(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(serving.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        write_record(db, "http://127.0.0.1:9000")
    monkeypatch.undo()
    record = read_record(db)
    assert record is not None and record.url == URL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["desk.duckdb.server.json"]


def test_a_server_removes_only_its_own_record(tmp_path: Path) -> None:
    db = tmp_path / "desk.duckdb"
    assert remove_record(db) is False  # none
    write_raw(db, pid=os.getppid())  # another live server's
    assert remove_record(db) is False
    assert record_path(db).exists()
    write_record(db, URL)
    assert remove_record(db) is True
    assert not record_path(db).exists()


# ---------------------------------------------------------------- the binding rule


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1", " 127.0.0.1 "]
)
def test_loopback_addresses_are_served(address: str) -> None:
    check_binding(address, allow_unauthenticated=False)


@pytest.mark.parametrize(
    "address", ["0.0.0.0", "::", "", "192.168.1.5", "10.0.0.1", "::ffff:10.0.0.1", "fe80::1", "desk-pc.example.com"]
)
def test_other_addresses_are_refused_saying_why_unless_allowed(address: str) -> None:
    with pytest.raises(SettingsError) as refused:
        check_binding(address, allow_unauthenticated=False)
    message = refused.value.message
    assert "sign-in is not configured" in message and "[auth]" in message
    assert "FXBATCH_ALLOW_UNAUTHENTICATED=1" in message and "127.0.0.1" in message
    if not address:
        assert "every network interface" in message
    check_binding(address, allow_unauthenticated=True)
    check_binding(address, allow_unauthenticated=False, login=True)  # sign-in: every page and call needs a user


def test_the_allow_and_url_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXBATCH_ALLOW_UNAUTHENTICATED", raising=False)
    monkeypatch.delenv("FXBATCH_SERVER_URL", raising=False)
    assert Settings().allow_unauthenticated is False and Settings().server_url is None
    monkeypatch.setenv("FXBATCH_ALLOW_UNAUTHENTICATED", "1")
    monkeypatch.setenv("FXBATCH_SERVER_URL", "https://fx.example.com/desk/ ")
    settings = load_settings()
    assert settings.allow_unauthenticated is True and settings.server_url == "https://fx.example.com/desk"
    monkeypatch.setenv("FXBATCH_SERVER_URL", "fx.example.com")
    with pytest.raises(SettingsError, match="FXBATCH_SERVER_URL"):
        load_settings()


# ---------------------------------------------------------------- the middleware


class Recorder:
    """An ASGI app that notes it was called, and the messages sent through the middleware."""

    def __init__(self) -> None:
        self.called = False
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def call(scope: dict[str, Any], allow: bool = False) -> Recorder:
    recorder = Recorder()
    asyncio.run(LoopbackOnly(recorder.app, allow=lambda: allow)(scope, _receive, recorder.send))
    return recorder


def scope(kind: str = "http", server: Any = ("127.0.0.1", 8501)) -> dict[str, Any]:
    return {"type": kind, "path": "/api/v1/health", "server": server, "client": ("192.168.1.9", 50000)}


def test_the_middleware_passes_requests_that_arrived_on_loopback_or_a_unix_socket() -> None:
    for server in [("127.0.0.1", 8501), ("::1", 8501), ("/run/fxbatch.sock", None)]:
        recorder = call(scope(server=server))
        assert recorder.called and not recorder.sent, server


def test_the_middleware_refuses_http_that_arrived_on_a_network_address_with_403_text() -> None:
    for server in [("192.168.1.5", 8501), ("10.0.0.1", 80), None]:
        recorder = call(scope(server=server))
        assert not recorder.called, server
        start, body = recorder.sent
        assert start["status"] == 403
        assert dict(start["headers"])[b"content-type"].startswith(b"text/plain")
        assert b"FXBATCH_ALLOW_UNAUTHENTICATED=1" in body["body"]
        assert int(dict(start["headers"])[b"content-length"]) == len(body["body"])


def test_the_middleware_closes_a_websocket_from_a_network_address_before_it_opens() -> None:
    recorder = call(scope("websocket", ("192.168.1.5", 8501)))
    assert not recorder.called
    assert [m["type"] for m in recorder.sent] == ["websocket.close"]


def test_the_middleware_serves_other_machines_when_allowed_and_never_stands_in_the_lifespan() -> None:
    assert call(scope(server=("192.168.1.5", 8501)), allow=True).called
    assert call(scope("websocket", ("192.168.1.5", 8501)), allow=True).called
    assert call({"type": "lifespan"}).called


def test_a_stop_signal_is_noted_then_handed_to_the_servers_own_handler() -> None:
    import os
    import signal

    from fxbatch import serving

    got: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda sig, frame: got.append(sig))
    try:
        restore = serving._note_stop_signals()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert serving.STOPPING.is_set() and got == [signal.SIGTERM]
        finally:
            restore()
            serving.STOPPING.clear()
        os.kill(os.getpid(), signal.SIGTERM)  # the server's handler is back in place
        assert got == [signal.SIGTERM, signal.SIGTERM] and not serving.STOPPING.is_set()
    finally:
        signal.signal(signal.SIGTERM, before)
