"""The audit trail: one append-only row per action (who, when, what, on which object, outcome).

Each row carries the hash of the row before it (the first chains from ``GENESIS``), so
``verify`` finds a row that was changed, removed or inserted behind fxbatch's back and names the
first bad one. The newest row's number and hash are also written beside the database file
(``<db>.audit-head``) after each append, so rows cut from the end of the trail, or a trail
rewritten from some row on with fresh hashes, no longer match it. The chain is unkeyed: someone
who can rewrite both the database and the head file is not caught.

Rows are written once per action (a load, a run started, an export), never per trade. Parameters
never hold a secret: keys that name one are redacted and credentials in URLs are dropped.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import json
import os
import re
import shutil
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd
from pydantic import BaseModel, Field

from fxbatch.errors import FxBatchError, rows_text

if TYPE_CHECKING:
    import duckdb

    from fxbatch.store import Store

GENESIS = "0" * 64
REDACTED = "***"
TABLE = "audit_log"
# Timestamps are naive UTC like every other fxbatch table (``fxbatch.store``).
SCHEMA = f"""
CREATE TABLE {TABLE} (
    seq BIGINT PRIMARY KEY,
    logged_at TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    object VARCHAR NOT NULL,
    params VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
);
"""
COLUMNS = ("seq", "logged_at", "actor", "action", "object", "params", "outcome", "prev_hash", "hash")
OK = "ok"

_SECRET_KEY = re.compile(r"secret|passw|token|api[_-]?key|credential|authori[sz]ation|cookie", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)[^/@\s?#]*@")
_MAX_OUTCOME = 500

# One writer at a time per database in this process: reading the chain's head and appending to it
# must not interleave (DuckDB allows one read-write process per file, so this covers all writers).
_locks: weakref.WeakKeyDictionary[Store, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
_file_locks: dict[str, threading.Lock] = {}  # by database file: a few per process, kept
_acting_as: contextvars.ContextVar[str | None] = contextvars.ContextVar("fxbatch_audit_actor", default=None)


class AuditCheck(BaseModel):
    """What ``verify`` found: ``ok`` with the row count, or the first bad row and why."""

    ok: bool
    rows: int = Field(description="Rows in the trail.")
    bad_seq: int | None = Field(None, description="The first row that fails the check.")
    reason: str | None = None

    @property
    def message(self) -> str:
        if self.ok:
            return f"audit trail intact: {self.rows} rows"
        at = f" at row {self.bad_seq}" if self.bad_seq is not None else ""
        return f"audit trail broken{at}: {self.reason}"


def os_user() -> str:
    """The operating-system user (who CLI and notebook actions are recorded as)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError, ImportError):  # no passwd entry, no USER/LOGNAME (containers)
        return "unknown"


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Record actions in this context (thread or task) as ``actor`` (a signed-in user per request)."""
    token = _acting_as.set(actor)
    try:
        yield
    finally:
        _acting_as.reset(token)


def set_actor(actor: str | None) -> None:
    """Record actions as ``actor`` in this context from now on (a page run, an API request's task)."""
    _acting_as.set(actor)


def current_actor(default: str) -> str:
    return _acting_as.get() or default


def redact(value: Any, key: str = "") -> Any:
    """``value`` with secrets replaced by ``REDACTED`` and credentials cut out of URLs, recursively."""
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "get_secret_value"):  # pydantic SecretStr / SecretBytes
        return REDACTED
    return _URL_USERINFO.sub(r"\g<scheme>", str(value))


def failure(exc: BaseException) -> str:
    """The outcome text of a failed action: its error class and first message line."""
    text = str(getattr(exc, "message", None) or exc).splitlines()
    line = redact(text[0] if text else "")
    return f"{type(exc).__name__}: {line}"[:_MAX_OUTCOME]


def row_hash(seq: int, at: datetime, actor: str, action: str, obj: str, params: str, outcome: str, prev: str) -> str:
    """sha256 of the row's fields and the previous row's hash, serialised canonically (JSON)."""
    fields = [seq, at.isoformat(timespec="microseconds"), actor, action, obj, params, outcome, prev]
    canonical = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _lock(store: Store) -> threading.Lock:
    """The lock around appending a row and writing the head: one per database file in this process
    (two workbenches on one file share it: else their rows and heads interleave), one per in-memory store."""
    with _locks_guard:
        if store.path is not None:
            key = str(Path(store.path).resolve())
            lock = _file_locks.get(key)
            if lock is None:
                lock = _file_locks[key] = threading.Lock()
            return lock
        lock = _locks.get(store)
        if lock is None:
            lock = _locks[store] = threading.Lock()
        return lock


def record(
    store: Store,
    actor: str,
    action: str,
    obj: str = "",
    params: Mapping[str, Any] | None = None,
    outcome: str = OK,
) -> int:
    """Append one row and return its ``seq``; ``params`` are redacted before they are stored."""
    params_json = json.dumps(redact(dict(params or {})), sort_keys=True, ensure_ascii=False, default=str)
    at = datetime.now(UTC).replace(tzinfo=None)
    actor = current_actor(actor)
    cur = store.cursor()
    with _lock(store):
        cur.begin()
        try:
            head = cur.execute(f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1").fetchall()
            seq, prev = (int(head[0][0]) + 1, str(head[0][1])) if head else (1, GENESIS)
            digest = row_hash(seq, at, actor, action, obj, params_json, outcome, prev)
            notes = _head_notes(store, cur, seq)
            # The head says which row comes next before it is committed, so a crash between the
            # row and its head leaves a row the head vouches for, not one written behind its back.
            _write_head(store, seq - 1, prev, notes, upcoming=(seq, digest))
            cur.execute(
                f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [seq, at, actor, action, obj, params_json, outcome, prev, digest],
            )
            cur.commit()
        except Exception:
            cur.rollback()
            raise
        _write_head(store, seq, digest, notes)
    return seq


class HeadNotes(NamedTuple):
    """What the head keeps for good: rows fxbatch never wrote (``unwitnessed``), and ranges of rows
    it had written that were gone when it next wrote one (``removed``: [first, last])."""

    unwitnessed: list[int]
    removed: list[list[int]]


def _head_notes(store: Store, cur: duckdb.DuckDBPyConnection, seq: int) -> HeadNotes:
    """The head's notes as row ``seq`` is about to be written (under the lock): rows before it that
    fxbatch never wrote a head for were added behind its back (the head names them for good, so the
    next row's head does not vouch for them); rows its head had that the trail no longer has were
    removed (or the database restored without its head file)."""
    known = _read_head(store)
    if known is None or known.seq < 0:
        return HeadNotes([], [])
    unwitnessed = [u for u in known.unwitnessed if u < seq]  # those past were of a longer trail
    removed = [list(r) for r in known.removed]
    witnessed = known.seq
    if known.upcoming is not None and known.upcoming[0] == known.seq + 1 < seq:  # a row its head did not follow
        found = cur.execute(f"SELECT hash FROM {TABLE} WHERE seq = ?", [known.upcoming[0]]).fetchall()
        if found and str(found[0][0]) == known.upcoming[1]:
            witnessed += 1
    if witnessed < seq - 1:
        unwitnessed += range(witnessed + 1, seq)
    elif known.seq > seq - 1:
        removed.append([seq, known.seq])
    return HeadNotes(unwitnessed, removed)


HEAD_SUFFIX = ".audit-head"


def head_path(store: Store) -> Path | None:
    """``<db>.audit-head`` beside the database file (None for an in-memory store)."""
    return None if store.path is None else Path(str(store.path) + HEAD_SUFFIX)


def _write_head(
    store: Store, seq: int, digest: str, notes: HeadNotes | None = None, *, upcoming: tuple[int, str] | None = None
) -> None:
    """Record the newest row beside the database, atomically (a reader sees the old head or the new),
    with the head's ``notes`` and the row about to be written (``upcoming``: seq, hash)."""
    path = head_path(store)
    if path is None:
        return
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    head: dict[str, Any] = {"seq": seq, "hash": digest}
    if notes is not None and notes.unwitnessed:
        head["unwitnessed"] = sorted(set(notes.unwitnessed))
    if notes is not None and notes.removed:
        head["removed"] = notes.removed
    if upcoming is not None:
        head["upcoming"] = list(upcoming)
    tmp.write_text(json.dumps(head) + "\n", encoding="utf-8")
    os.replace(tmp, path)


_HEAD_KEY = "audit_head"  # in ``meta``: this database keeps a head file (its absence is then a finding)


def ensure_head(store: Store) -> None:
    """At open: a file database keeps a head file from now on. One that had rows before head files
    existed gets its head written once, here; after that a missing head file is reported."""
    path = head_path(store)
    if path is None:
        return
    cur = store.cursor()
    if cur.execute("SELECT 1 FROM meta WHERE key = ?", [_HEAD_KEY]).fetchall():
        return
    with _lock(store):
        head = cur.execute(f"SELECT seq, hash FROM {TABLE} ORDER BY seq DESC LIMIT 1").fetchall()
        if head and not path.exists():
            _write_head(store, int(head[0][0]), str(head[0][1]))
        cur.execute("INSERT OR IGNORE INTO meta VALUES (?, '1')", [_HEAD_KEY])


def holding(store: Store) -> threading.Lock:
    """The trail's lock, held around something that must see no row written meanwhile (a backup
    and its head file: a row between them would name, in the copy's head, a row the copy lacks)."""
    return _lock(store)


def copy_head(store: Store, copy: Path) -> None:
    """Give a copy of the database (a backup) the head file of the original."""
    path = head_path(store)
    if path is not None and path.exists():
        shutil.copyfile(path, Path(str(copy) + HEAD_SUFFIX))


class Head(NamedTuple):
    """The head file: the newest row fxbatch wrote (seq -1: unreadable), its notes, and the row it was
    about to write (if any)."""

    seq: int
    hash: str
    unwitnessed: list[int]
    removed: list[list[int]]
    upcoming: tuple[int, str] | None


def _read_head(store: Store) -> Head | None:
    path = head_path(store)
    if path is None or not path.exists():
        return None
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
        upcoming = head.get("upcoming")
        return Head(
            int(head["seq"]), str(head["hash"]), [int(s) for s in head.get("unwitnessed", [])],
            [[int(a), int(b)] for a, b in head.get("removed", [])],
            (int(upcoming[0]), str(upcoming[1])) if upcoming else None,
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return Head(-1, "", [], [], None)


@contextmanager
def audited(store: Store, actor: str, action: str, obj: str = "", **params: Any) -> Iterator[dict[str, Any]]:
    """Record ``action`` when the block ends: "ok", or the fxbatch error that stopped it (re-raised).

    The block may add parameters to the yielded dict; an ``object`` key there replaces ``obj``
    (a new batch's id is known only after the load).
    """
    extra: dict[str, Any] = {}
    try:
        yield extra
    except FxBatchError as exc:
        target = str(extra.pop("object", obj))
        record(store, actor, action, target, {**params, **extra}, outcome=failure(exc))
        raise
    target = str(extra.pop("object", obj))
    record(store, actor, action, target, {**params, **extra})


def verify(store: Store) -> AuditCheck:
    """Walk the chain from the first row; the first row whose place, contents or link is wrong."""
    rows = store.cursor().execute(f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY seq, rowid").fetchall()
    prev, expected = GENESIS, 1
    for seq, at, actor, action, obj, params, outcome, prev_hash, digest in rows:
        if seq < expected:
            return AuditCheck(ok=False, rows=len(rows), bad_seq=seq,
                              reason=f"row {seq} is out of order or a duplicate (expected row {expected}): a row was inserted")  # fmt: skip
        if seq > expected:
            missing = f"row {expected}" if seq == expected + 1 else f"rows {expected}-{seq - 1}"
            return AuditCheck(ok=False, rows=len(rows), bad_seq=seq, reason=f"{missing} missing: removed")
        if row_hash(seq, at, actor, action, obj, params, outcome, prev_hash) != digest:
            return AuditCheck(ok=False, rows=len(rows), bad_seq=seq,
                              reason="its contents do not match its hash: the row was changed")  # fmt: skip
        if prev_hash != prev:
            before = f"row {seq - 1}" if seq > 1 else "the start of the trail"
            return AuditCheck(ok=False, rows=len(rows), bad_seq=seq,
                              reason=f"it does not chain to {before}: a row was inserted, removed or changed before it")  # fmt: skip
        prev, expected = digest, expected + 1
    return _check_head(store, rows)


def _rows_named(seqs: list[int]) -> str:
    return f"row {seqs[0]}" if len(seqs) == 1 else "rows " + rows_text(seqs)


def _check_head(store: Store, rows: list[Any]) -> AuditCheck:
    """The intact chain against the head recorded beside the database: rows cut from the end, or a
    chain rewritten with fresh hashes, show here."""
    head = _read_head(store)
    if head is None:
        kept = store.cursor().execute("SELECT 1 FROM meta WHERE key = ?", [_HEAD_KEY]).fetchall()
        if rows and kept:
            return AuditCheck(ok=False, rows=len(rows), bad_seq=None,
                              reason=f"the head file {head_path(store)} is missing: rows may have been cut from the end")  # fmt: skip
        return AuditCheck(ok=True, rows=len(rows))
    seq, digest, unwitnessed, removed, upcoming = head
    where = head_path(store)
    if seq < 0:
        return AuditCheck(ok=False, rows=len(rows), bad_seq=None, reason=f"the head file {where} is unreadable")
    if removed:
        first, last = removed[0]
        gone = f"row {first} was" if first == last else f"rows {first}-{last} were"
        return AuditCheck(ok=False, rows=len(rows), bad_seq=first,
                          reason=f"{gone} gone when fxbatch next wrote row {first} (removed from the end, or the "
                          f"database restored without its head file {where})")  # fmt: skip
    if upcoming is not None and upcoming[0] == seq + 1 <= len(rows) and rows[seq][8] == upcoming[1]:
        seq, digest = upcoming  # written by fxbatch, which stopped before its head (a crash): vouched for
    # Rows fxbatch did not write (a head written after each row would name them): added behind its back.
    added = sorted({*unwitnessed, *range(seq + 1, len(rows) + 1)} & set(range(1, len(rows) + 1)))
    if added:
        return AuditCheck(ok=False, rows=len(rows), bad_seq=added[0],
                          reason=f"{_rows_named(added)} {'was' if len(added) == 1 else 'were'} added without fxbatch "
                          f"recording {'it' if len(added) == 1 else 'them'} in {where}: written behind its back")  # fmt: skip
    if seq > len(rows):
        first = len(rows) + 1
        missing = f"row {first}" if seq == first else f"rows {first}-{seq}"
        return AuditCheck(ok=False, rows=len(rows), bad_seq=first,
                          reason=f"{missing} missing: removed from the end ({where} records row {seq}; or the "
                          "database was restored from a backup older than the trail)")  # fmt: skip
    if seq >= 1 and rows[seq - 1][8] != digest:
        return AuditCheck(ok=False, rows=len(rows), bad_seq=seq,
                          reason=f"its hash is not the one {where} recorded: the trail was rewritten up to it")  # fmt: skip
    return AuditCheck(ok=True, rows=len(rows))


def _where(
    actor: str | None, action: str | None, since: datetime | None, until: datetime | None
) -> tuple[str, list[object]]:
    """The filter of ``read`` as SQL (`` WHERE ...`` or empty) and its arguments."""
    where: list[str] = []
    args: list[object] = []
    for column, value in (("actor", actor), ("action", action)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    for op, when in ((">=", since), ("<", until)):
        if when is not None:
            where.append(f"logged_at {op} ?")
            args.append(when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when)
    return (" WHERE " + " AND ".join(where) if where else ""), args


def read(
    store: Store,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Audit rows, newest first, filtered by actor, action and time (``since`` <= logged_at < ``until``, UTC)."""
    where, args = _where(actor, action, since, until)
    sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}{where} ORDER BY seq DESC"
    if limit is not None:
        sql += f" LIMIT {max(int(limit), 0)}"
    return store.cursor().execute(sql, args).df()


class Overview(NamedTuple):
    """What the trail holds, for filtering it: its entries, and who and which actions appear."""

    entries: int
    actors: list[str]
    actions: list[str]


def overview(store: Store) -> Overview:
    cur = store.cursor()
    entries = int(cur.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0])
    actors = [str(r[0]) for r in cur.execute(f"SELECT DISTINCT actor FROM {TABLE} ORDER BY actor").fetchall()]
    actions = [str(r[0]) for r in cur.execute(f"SELECT DISTINCT action FROM {TABLE} ORDER BY action").fetchall()]
    return Overview(entries, actors, actions)


def count(
    store: Store,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many rows ``read`` gives with these filters (without a limit)."""
    where, args = _where(actor, action, since, until)
    return int(store.cursor().execute(f"SELECT count(*) FROM {TABLE}{where}", args).fetchall()[0][0])
