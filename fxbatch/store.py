"""DuckDB storage: schema, forward migrations, and the queries the rest of fxbatch uses.

One database connection per process; each thread works through its own ``cursor()``
(DuckDB refuses concurrent calls on one connection).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import duckdb

from fxbatch.errors import DatabaseLockedError, StoreError

Migration = Callable[[duckdb.DuckDBPyConnection], None]


def _v1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
    CREATE SEQUENCE batch_id_seq START 1;
    CREATE TABLE batches (
        batch_id INTEGER PRIMARY KEY DEFAULT nextval('batch_id_seq'),
        name VARCHAR NOT NULL,
        source_file VARCHAR NOT NULL,
        fingerprint VARCHAR NOT NULL,
        layout VARCHAR NOT NULL,
        sheet VARCHAR,
        column_map VARCHAR,
        rows INTEGER NOT NULL,
        accepted INTEGER NOT NULL,
        rejected INTEGER NOT NULL,
        ignored INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT current_localtimestamp()
    );
    -- No keys on the bulk tables: DuckDB index upkeep would dominate 1M-row loads.
    CREATE TABLE trades (
        batch_id INTEGER NOT NULL,
        src_row INTEGER NOT NULL,  -- the spreadsheet row; orders a batch's trades
        trade_id VARCHAR NOT NULL,
        client_cif VARCHAR NOT NULL,
        account_number VARCHAR NOT NULL,
        currency_pair VARCHAR NOT NULL,
        side VARCHAR NOT NULL,
        amount DECIMAL(18, 2) NOT NULL,
        amount_currency VARCHAR NOT NULL,
        spread_bps DOUBLE NOT NULL,
        delivery VARCHAR NOT NULL,
        value_date DATE NOT NULL,
        reference VARCHAR
    );
    CREATE TABLE rejections (
        batch_id INTEGER NOT NULL,
        src_row INTEGER NOT NULL,
        column_name VARCHAR NOT NULL,
        value VARCHAR,
        code VARCHAR NOT NULL,
        message VARCHAR NOT NULL
    );
    """)


MIGRATIONS: list[Migration] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)

_PID = re.compile(r"PID (\d+)")


def _connect(path: Path | None, read_only: bool) -> duckdb.DuckDBPyConnection:
    if path is None:
        return duckdb.connect(":memory:")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            pid = _PID.search(text)
            raise DatabaseLockedError(path, f"PID {pid.group(1)}" if pid else "") from exc
        raise StoreError(f"Cannot open the database file {path}: {text.splitlines()[0]}") from exc
    except (duckdb.Error, OSError) as exc:
        raise StoreError(f"Cannot open the database file {path}: {str(exc).splitlines()[0]}") from exc


class Store:
    """The fxbatch database. ``Store(None)`` is an in-memory database (tests, scratch)."""

    def __init__(self, path: Path | str | None, *, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        existed = self.path is not None and self.path.exists()
        self._conn = _connect(self.path, read_only)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.created = False
        if not read_only:
            self.created = self._migrate() and not existed
        else:
            self._check_version()

    # -- connections ---------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (created on first use)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                cur = self._conn.cursor()
            self._local.cursor = cur
        return cur

    def new_cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor the caller owns and closes (for worker threads and pools)."""
        with self._lock:
            return self._conn.cursor()

    def close(self) -> None:
        self._conn.close()

    # -- schema --------------------------------------------------------------
    def schema_version(self) -> int:
        cur = self.cursor()
        exists = cur.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchall()[0][0]
        if not exists:
            return 0
        row = cur.execute("SELECT max(version) FROM schema_version").fetchall()
        return int(row[0][0] or 0)

    def _check_version(self) -> None:
        found = self.schema_version()
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"The database {self.path} has schema version {found}, newer than this fxbatch "
                f"({SCHEMA_VERSION}); upgrade fxbatch."
            )

    def _migrate(self) -> bool:
        """Apply missing migrations; True when the database was empty before."""
        cur = self.cursor()
        self._check_version()
        current = self.schema_version()
        if current == 0:
            cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)")
        for version in range(current + 1, SCHEMA_VERSION + 1):
            cur.begin()
            try:
                MIGRATIONS[version - 1](cur)
                cur.execute("INSERT INTO schema_version VALUES (?, current_localtimestamp())", [version])
                cur.commit()
            except Exception:
                cur.rollback()
                raise
        return current == 0
