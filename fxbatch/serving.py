"""The server's side of "one process owns the database": the record file, the binding rule, the host.

A server (``server.py``: the Streamlit UI and the HTTP API in one process) opens the one
Workbench in its ASGI lifespan and writes ``<db>.server.json`` beside the database, so a CLI
command or a notebook on the same machine finds the server instead of failing on DuckDB's lock::

    {"url": "http://127.0.0.1:8501", "pid": 4242, "db": "/abs/path/fxbatch.duckdb", "started_at": "..."}

The record is written after the database is open (DuckDB's lock makes its writer the only
server of that file) and removed before the database is closed, so it never names a server
that lets another process take the file. A record left by a server that died is ignored
(its pid is not alive) and overwritten by the next server.

Without sign-in (no ``[auth]`` section: ``fxbatch.login``) the server listens on loopback
addresses only, unless ``FXBATCH_ALLOW_UNAUTHENTICATED=1`` says to serve other machines without
authentication; with sign-in it may listen anywhere, and every page and API call needs a user.
Nothing here imports Streamlit: ``server.py`` hands in what it reads from Streamlit's config.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from fxbatch.errors import DatabaseLockedError, ServerError, SettingsError
from fxbatch.login import LoginConfig, login_config

if TYPE_CHECKING:  # fxbatch.workbench reads records from here: the host imports it when it starts
    from starlette.types import ASGIApp, Receive, Scope, Send

    from fxbatch.settings import Settings
    from fxbatch.workbench import Workbench

RECORD_SUFFIX = ".server.json"
LOOPBACK_NAMES = frozenset({"localhost"})


class ServerRecord(BaseModel):
    """What a running server writes beside its database: where to reach it, and who it is."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    url: str = Field(description="Base URL of the server (the API is under url + /api/v1).")
    pid: int = Field(gt=0, description="Process id of the server, on the machine that wrote the record.")
    db: str = Field(description="Resolved path of the database file the server holds.")
    started_at: datetime = Field(description="When the server opened the database (UTC).")


def record_path(db: Path | str) -> Path:
    """The record file of the server holding ``db``: ``<db>.server.json``."""
    return Path(str(db) + RECORD_SUFFIX)


def write_record(db: Path | str, url: str) -> ServerRecord:
    """Record this process as the server of ``db`` at ``url`` (atomically: a reader sees the old
    record or the new one, never half of one)."""
    record = ServerRecord(url=url, pid=os.getpid(), db=str(Path(db).resolve()), started_at=datetime.now(UTC))
    path = record_path(db)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(record.model_dump_json(indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; whoever may read the database may read where its server is
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return record


def _load(path: Path) -> ServerRecord | None:
    try:
        return ServerRecord.model_validate_json(path.read_bytes())
    except (OSError, ValueError):  # missing, unreadable, or not a record (ValidationError is a ValueError)
        return None


def read_record(db: Path | str) -> ServerRecord | None:
    """The record of the server holding ``db``; None when there is none, it cannot be read, or the
    process that wrote it is no longer alive on this machine."""
    record = _load(record_path(db))
    return record if record is not None and pid_alive(record.pid) else None


def remove_record(db: Path | str) -> bool:
    """Remove the record of ``db`` if this process wrote it (a record of another server stays)."""
    path = record_path(db)
    record = _load(path)
    if record is None or record.pid != os.getpid():
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return True


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) would send Ctrl-C there
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- binding


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped), ``localhost``, and unix sockets: only this machine reaches them."""
    host = address.strip()
    if host.startswith("unix://"):
        return True
    host = host.removeprefix("[").removesuffix("]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_binding(address: str, allow_unauthenticated: bool, login: bool = False) -> None:
    """Refuse (SettingsError) to serve on an address other machines can reach without sign-in, unless allowed.

    An empty address is Streamlit's default: every interface.
    """
    if login or allow_unauthenticated or is_loopback(address):
        return
    shown = (
        f"address {address!r}" if address.strip() else "every network interface (Streamlit's server.address is empty)"
    )
    raise SettingsError(
        f"The fxbatch server will not listen on {shown}: other machines could reach it, and sign-in is not "
        "configured, so anyone who reaches it could load, run and delete batches. Serve on 127.0.0.1 (make run, "
        "or --server.address 127.0.0.1), configure sign-in in the [auth] section of .streamlit/secrets.toml "
        "(README, Sign-in), or set FXBATCH_ALLOW_UNAUTHENTICATED=1 to serve other machines without authentication."
    )


REFUSED = (
    b"This fxbatch server serves its own machine only: sign-in is not configured. Configure it in the "
    b"[auth] section of .streamlit/secrets.toml, or start it with FXBATCH_ALLOW_UNAUTHENTICATED=1 to serve "
    b"other machines without authentication.\n"
)


class LoopbackOnly:
    """Pure ASGI middleware: refuse a request that reached the server on a non-loopback address.

    The check at startup cannot see the address when another ASGI server runs the app
    (``uvicorn server:app --host 0.0.0.0``); each connection's ``scope["server"]`` (the local
    address it arrived on) can. HTTP gets 403 in plain text; a websocket is closed before it opens.
    ``allow`` is asked per request: settings are read in the lifespan, after the middleware is built.
    """

    def __init__(self, app: ASGIApp, allow: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._local(scope) or self.allow():
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 403,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", b"%d" % len(REFUSED)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": REFUSED})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "fxbatch serves this machine only"})

    @staticmethod
    def _local(scope: Scope) -> bool:
        server = scope.get("server")
        if not server:  # the ASGI server does not say where it was reached: not known to be local
            return False
        host, port = server[0], server[1] if len(server) > 1 else None
        return port is None or is_loopback(str(host))  # (path, None): a unix socket


# ---------------------------------------------------------------- the host


@dataclass(frozen=True)
class Binding:
    """Where the server listens, as its ASGI runner says: ``address`` None when it is not known at
    startup (another ASGI server binds the socket: ``LoopbackOnly`` checks each request); ``url``
    the base URL local clients use."""

    address: str | None
    url: str


_current: Host | None = None  # the host of this process, once its server has started (it stays, stopping or not)
# Set when the server was told to stop (SIGINT, SIGTERM): the streams that follow runs end, so the
# ASGI server, which waits for every connection to close before its lifespan's end interrupts the
# runs, is not held open by a client following a long run.
STOPPING = threading.Event()


def _note_stop_signals() -> Callable[[], None]:
    """Set STOPPING on SIGINT and SIGTERM, then hand the signal to the handler the ASGI server
    installed (uvicorn's: it stops accepting, then waits for the connections to close); returns
    what puts those handlers back. Only in the main thread (where uvicorn serves and signals go)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def noted(sig: int, frame: FrameType | None) -> None:
        STOPPING.set()
        handler = previous[signal.Signals(sig)]
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL and sig == signal.SIGINT:
            raise KeyboardInterrupt

    for sig in previous:
        signal.signal(sig, noted)

    def restore() -> None:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is noted:
                signal.signal(sig, handler)

    return restore


def current_login() -> LoginConfig | None:
    """The sign-in configuration of this process's server (None: single-user, or no server here)."""
    return None if _current is None else _current.login


def hosting() -> bool:
    """Whether this process is a server (its lifespan has started): then it listens on a port and
    holds the database, which a forked child process would inherit."""
    return _current is not None


def current_workbench() -> Workbench | None:
    """The workbench this process's server hosts, for pages in the same process.

    None when the process hosts none (``streamlit run app.py``, AppTest): the caller opens its
    own. ServerError once the server is stopping: the page must not open the file it lets go.
    """
    return None if _current is None else _current.workbench()


_HOSTING = "FXBATCH_HOSTING"  # set in a server process's environment: "<pid> <resolved db>"


def _hosting_mark(db: Path | str) -> str:
    return f"{os.getpid()} {Path(db).resolve()}"


def hosted_here(db: Path | str) -> bool:
    """Whether this very process is the server holding ``db``: its record names this process, and
    so does the mark its lifespan left in the environment (which outlives a reload of this module,
    not the process: a later process given the same id by chance is not taken for the server).
    Then no other workbench may be opened on the file here, even when ``current_workbench`` has
    lost the host (its module reloaded under the running server)."""
    record = _load(record_path(db))
    return record is not None and record.pid == os.getpid() and os.environ.get(_HOSTING) == _hosting_mark(db)


class Host:
    """The one Workbench of a server process, opened and closed by its ASGI lifespan.

    ``settings`` and ``binding`` are called at startup (Streamlit's secrets and config are loaded
    by then, not when the server module is imported).
    """

    def __init__(
        self,
        settings: Callable[[], Settings],
        binding: Callable[[], Binding],
        auth: Callable[[], object] = lambda: None,
    ) -> None:
        self._make_settings = settings
        self._binding = binding
        self._auth = auth
        self.settings: Settings | None = None
        self.login: LoginConfig | None = None
        self.binding: Binding | None = None
        self.url: str | None = None
        self._wb: Workbench | None = None

    def workbench(self) -> Workbench:
        """The hosted workbench (what the API's routes use)."""
        if self._wb is None:
            raise ServerError(
                "The fxbatch server holds no database at the moment: it is starting or stopping. "
                "Try again in a moment, or start it again (make run)."
            )
        return self._wb

    def allow_unauthenticated(self) -> bool:
        """Whether other machines may be served (False until the settings are read): with sign-in, or when allowed."""
        return self.settings is not None and (self.login is not None or self.settings.allow_unauthenticated)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Check the binding, open the workbench, write the record; at the end remove the record
        and close the workbench (runs in progress stop and stay resumable)."""
        global _current
        import anyio.to_thread

        from fxbatch.workbench import Workbench

        settings = self._make_settings()
        login = login_config(self._auth(), settings)
        binding = self._binding()
        if binding.address is not None:
            check_binding(binding.address, settings.allow_unauthenticated, login is not None)
        self.settings, self.binding, self.login = settings, binding, login
        self.url = settings.server_url or binding.url
        # The file itself, never a client of a server recorded beside it. Opening migrates and may
        # load the sample batch: off the event loop.
        try:
            opening = partial(Workbench.open_local, settings=settings, seed_sample=True, login=login is not None)
            wb = await anyio.to_thread.run_sync(opening)
        except DatabaseLockedError as exc:
            other = read_record(settings.db)
            if other is None:
                raise
            raise DatabaseLockedError(settings.db, f"the fxbatch server at {other.url}, process {other.pid}") from exc
        try:
            await anyio.to_thread.run_sync(wb.record_settings)  # a settings change shows in the audit trail
            write_record(settings.db, self.url)
            os.environ[_HOSTING] = _hosting_mark(settings.db)
            self._wb = wb
            _current = self
            STOPPING.clear()
            restore = _note_stop_signals()
            try:
                yield
            finally:
                restore()
        finally:
            os.environ.pop(_HOSTING, None)
            self._wb = None
            remove_record(settings.db)  # first: no client is sent here once the file may be let go
            await anyio.to_thread.run_sync(wb.close)


__all__ = [
    "Binding",
    "Host",
    "LoopbackOnly",
    "ServerRecord",
    "check_binding",
    "current_login",
    "current_workbench",
    "hosted_here",
    "hosting",
    "is_loopback",
    "pid_alive",
    "read_record",
    "record_path",
    "remove_record",
    "write_record",
]
