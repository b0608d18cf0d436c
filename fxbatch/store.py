"""DuckDB storage: schema, forward migrations, and the queries the rest of fxbatch uses.

Every timestamp is stored as naive UTC (``timezone('UTC', now())`` in SQL, epoch seconds from
Python), so run, trade and ledger times share one clock.

One database connection per process; each thread works through its own ``cursor()``
(DuckDB refuses concurrent calls on one connection).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from fxbatch import dbfile
from fxbatch.errors import DamagedDatabaseError, DatabaseLockedError, NotADatabaseError, StoreError

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
        created_at TIMESTAMP NOT NULL DEFAULT timezone('UTC', now())
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


def _v2(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
    CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
    INSERT INTO meta VALUES ('instance_id', substr(replace(gen_random_uuid()::VARCHAR, '-', ''), 1, 8));
    CREATE SEQUENCE run_id_seq START 1;
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
        batch_id INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        config VARCHAR NOT NULL,
        trades INTEGER NOT NULL,
        retry_of_run INTEGER,
        -- A trade's deal transaction id is made from deal_prefix and src_row (fxbatch.bank.dealids):
        -- fixed when the run is created, so it exists before any booking and every retry reuses it.
        deal_prefix VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL DEFAULT timezone('UTC', now()),
        started_at TIMESTAMP,
        finished_at TIMESTAMP,
        elapsed_s DOUBLE,
        counts VARCHAR,
        failure_reasons VARCHAR,
        error VARCHAR
    );
    -- One row per trade once it is final (written in bulk per chunk; never updated).
    CREATE TABLE run_trades (
        run_id INTEGER NOT NULL,
        src_row INTEGER NOT NULL,
        status VARCHAR NOT NULL,
        failure_code VARCHAR,
        failure_message VARCHAR,
        retryable BOOLEAN,
        attempts INTEGER NOT NULL,
        quote_id BIGINT,
        quote_rate DOUBLE,
        quote_expiry TIMESTAMP,
        deal_transaction_id VARCHAR,
        deal_rate DOUBLE,
        amount_zar DOUBLE,
        executing_at TIMESTAMP,
        quoted_at TIMESTAMP,
        finished_at TIMESTAMP NOT NULL
    );
    -- Quoted trades about to be booked: written before booking is asked for, so that a
    -- crashed run knows which deals (from runs.deal_prefix and src_row) to ask the bank about.
    CREATE TABLE run_inflight (
        run_id INTEGER NOT NULL,
        src_row INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        quote_id BIGINT NOT NULL,
        quote_rate DOUBLE NOT NULL,
        quote_expiry TIMESTAMP,
        executing_at TIMESTAMP,
        quoted_at TIMESTAMP NOT NULL
    );
    -- The simulated bank's own ledger of booked deals (its durable state, not the engine's).
    -- run_id and src_row are the caller's references (the trade id is joined on export);
    -- deal_hash = hash(deal_transaction_id) lets the bank index every deal it ever booked cheaply.
    CREATE TABLE sim_ledger (
        deal_hash UBIGINT NOT NULL,
        deal_transaction_id VARCHAR NOT NULL,
        quote_id BIGINT NOT NULL,
        run_id INTEGER,
        src_row INTEGER,
        deal_rate DOUBLE,
        booked_at TIMESTAMP NOT NULL
    );
    """)


def _v3(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
    CREATE SEQUENCE sweep_id_seq START 1;
    CREATE TABLE sweeps (
        sweep_id INTEGER PRIMARY KEY,
        batch_id INTEGER NOT NULL,
        name VARCHAR NOT NULL,
        grid VARCHAR NOT NULL,
        scenarios INTEGER NOT NULL,
        elapsed_s DOUBLE,
        created_at TIMESTAMP NOT NULL DEFAULT timezone('UTC', now())
    );
    CREATE TABLE sweep_scenarios (
        sweep_id INTEGER NOT NULL,
        scenario INTEGER NOT NULL,
        success_rate DOUBLE NOT NULL,
        seed BIGINT NOT NULL,
        trades INTEGER NOT NULL,
        succeeded INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        failure_reasons VARCHAR NOT NULL,
        notional_zar_succeeded DOUBLE NOT NULL,
        config VARCHAR NOT NULL
    );
    """)


def _v4(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
    -- The simulated bank stores a deal id of the form prefix || src_row (what the engine sends)
    -- as a small prefix id instead of the string: writing a million id strings cost as much as
    -- the rest of the row. Other ids are stored as they came. ``sim_ledger`` stays the ledger as
    -- everyone reads it, with the same columns as before.
    ALTER TABLE sim_ledger RENAME TO sim_ledger_rows;
    ALTER TABLE sim_ledger_rows ALTER COLUMN deal_transaction_id DROP NOT NULL;
    ALTER TABLE sim_ledger_rows ADD COLUMN prefix_id INTEGER;
    CREATE SEQUENCE sim_prefix_seq START 1;
    CREATE TABLE sim_deal_prefixes (prefix_id INTEGER PRIMARY KEY, prefix VARCHAR NOT NULL UNIQUE);
    CREATE VIEW sim_ledger AS
    SELECT l.deal_hash, coalesce(l.deal_transaction_id, p.prefix || l.src_row) AS deal_transaction_id,
           l.quote_id, l.run_id, l.src_row, l.deal_rate, l.booked_at
    FROM sim_ledger_rows l LEFT JOIN sim_deal_prefixes p ON p.prefix_id = l.prefix_id;
    """)


def _v5(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
    -- Cells the analyst corrected before loading: the file's text and what replaced it.
    CREATE TABLE corrections (
        batch_id INTEGER NOT NULL,
        src_row INTEGER NOT NULL,
        field VARCHAR NOT NULL,
        original VARCHAR,
        corrected VARCHAR
    );
    """)


def _v6(con: duckdb.DuckDBPyConnection) -> None:
    """Spreads in pips, two rates and the desk's income, value dates on settlement calendars.

    A batch's spread was always the desk's number ("bips", which are pips); only its name and
    type change. Whether a trade's value date was derived from its delivery (and so is derived
    again when the batch runs on a later day) was not recorded: a date equal to what the old
    rule (weekends skipped from the load date) gave for its delivery is taken as derived. Runs
    already made keep the rates they recorded; their income and run-time value dates are unknown
    (NULL).
    """
    con.execute("""
    ALTER TABLE trades RENAME COLUMN spread_bps TO spread_pips;
    ALTER TABLE trades ALTER COLUMN spread_pips TYPE INTEGER USING CAST(spread_pips AS INTEGER);  -- rounds
    ALTER TABLE trades ADD COLUMN value_date_derived BOOLEAN DEFAULT false;
    ALTER TABLE run_trades ADD COLUMN spread_pips INTEGER;
    ALTER TABLE run_trades ADD COLUMN value_date DATE;
    ALTER TABLE run_trades ADD COLUMN spread_income_zar DOUBLE;
    ALTER TABLE runs ADD COLUMN trade_date DATE;
    ALTER TABLE runs ADD COLUMN spread_income_zar DOUBLE;
    ALTER TABLE runs ADD COLUMN value_dates_moved INTEGER;
    ALTER TABLE runs ADD COLUMN value_dates_unsendable INTEGER;
    ALTER TABLE sweep_scenarios ADD COLUMN spread_income_zar DOUBLE;
    ALTER TABLE sweep_scenarios ADD COLUMN income_lost_zar DOUBLE;
    """)
    loaded = con.execute("SELECT batch_id, CAST(created_at AS DATE) FROM batches").fetchall()
    for batch_id, day in loaded:
        tom, spot = _old_business_days(day, 1), _old_business_days(day, 2)
        con.execute(
            "UPDATE trades SET value_date_derived = value_date = CASE delivery WHEN 'CASH' THEN ? WHEN 'TOM' THEN ? "
            "ELSE ? END WHERE batch_id = ?",
            [day, tom, spot, batch_id],
        )


def _old_business_days(start: date, days: int) -> date:
    """The rule value dates were derived by before v6: weekends skipped, no holidays."""
    current = start
    while days > 0:
        current += timedelta(days=1)
        days -= current.weekday() < 5
    return current


def utc_now() -> datetime:
    """Now, as the database's TIMESTAMP columns hold it: UTC, without a zone."""
    return datetime.now(UTC).replace(tzinfo=None)


def update_returning(store: Store, sql: str, params: list[object]) -> list[Any]:
    """A conditional UPDATE ... RETURNING; empty when nothing matched, or when another writer changed
    the row at the same moment (DuckDB refuses the second of two concurrent updates of one row)."""
    try:
        return store.cursor().execute(sql, params).fetchall()
    except duckdb.TransactionException:
        return []


def insert_arrow(cur: duckdb.DuckDBPyConnection, table_name: str, table: pa.Table, *, by_name: bool = False) -> None:
    """Append an Arrow table to ``table_name`` in one statement (no per-row round trips).

    DuckDB reads the table by its replacement scan (this frame's local), with no register /
    unregister, which cost ~1 ms of a small insert's ~3 ms. ``by_name`` matches columns by name.
    """
    _fx_arrow_rows = table  # read by DuckDB's replacement scan
    cur.execute(f"INSERT INTO {table_name} {'BY NAME ' if by_name else ''}SELECT * FROM _fx_arrow_rows")


def _v7(con: duckdb.DuckDBPyConnection) -> None:
    """Deal transaction ids are UUIDs (``fxbatch.bank.dealids``): a new run's prefix is a UUID's
    first 24 characters and a trade's id ends in its row as 12 digits. The simulated bank's
    ledger rebuilds both forms from a prefix id; runs record the quotes they released."""
    from fxbatch.bank.dealids import deal_id_sql

    con.execute(f"""
    CREATE OR REPLACE VIEW sim_ledger AS
    SELECT l.deal_hash, coalesce(l.deal_transaction_id, {deal_id_sql("p.prefix", "l.src_row")}) AS deal_transaction_id,
           l.quote_id, l.run_id, l.src_row, l.deal_rate, l.booked_at
    FROM sim_ledger_rows l LEFT JOIN sim_deal_prefixes p ON p.prefix_id = l.prefix_id;
    ALTER TABLE runs ADD COLUMN quotes_cancelled INTEGER;
    ALTER TABLE runs ADD COLUMN quote_cancel_failures INTEGER;
    """)


def _v8(con: duckdb.DuckDBPyConnection) -> None:
    """The audit trail (``fxbatch.audit``): one hash-chained row per action."""
    from fxbatch.audit import SCHEMA

    con.execute(SCHEMA)


def _v9(con: duckdb.DuckDBPyConnection) -> None:
    """Login: roles and personal API tokens (``fxbatch.access``), four-eyes approvals (``fxbatch.approvals``)."""
    from fxbatch import access, approvals

    con.execute(access.SCHEMA)
    con.execute(approvals.SCHEMA)


def _v10(con: duckdb.DuckDBPyConnection) -> None:
    """Bookings in doubt: what the bank's status said of an unanswered booking it could not settle."""
    con.execute("""
    -- One row each time the bank's GetTxnStatus left a booking (the in-flight row with this
    -- attempt and quote) in doubt: still PENDING, no usable answer, or a status fxbatch does not
    -- know; or the bank could not be reached (UNREACHABLE). Only such bookings may be settled by
    -- hand (fxbatch.engine.by_hand). NOT_FOUND clears a doubt; REFUSED records that the bank
    -- refused the booking and the trade is tried again (nothing to ask the bank on resume).
    CREATE TABLE run_doubts (
        run_id INTEGER NOT NULL,
        src_row INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        quote_id BIGINT NOT NULL,
        said VARCHAR NOT NULL,
        asked_at TIMESTAMP NOT NULL
    );
    """)


def _v11(con: duckdb.DuckDBPyConnection) -> None:
    """Four-eyes for settling bookings in doubt by hand (``fxbatch.settlements``)."""
    from fxbatch import settlements

    con.execute(settlements.SCHEMA)


def _v12(con: duckdb.DuckDBPyConnection) -> None:
    """A what-if sweep records the trading day it simulated (value dates, and so which trades can
    settle, depend on it): a scenario is promoted only on that day."""
    con.execute("ALTER TABLE sweeps ADD COLUMN trade_date DATE")


def _v13(con: duckdb.DuckDBPyConnection) -> None:
    """An approval records the trading day it was requested for (value dates depend on it): it
    starts a run on that day only. Older requests (NULL) are not bound to a day."""
    con.execute("ALTER TABLE approvals ADD COLUMN trade_date DATE")


MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10, _v11, _v12, _v13]
SCHEMA_VERSION = len(MIGRATIONS)

_PID = re.compile(r"PID (\d+)")


def _connect(path: Path | None, read_only: bool) -> duckdb.DuckDBPyConnection:
    if path is None:
        return duckdb.connect(":memory:")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return duckdb.connect(str(path), read_only=read_only)
    except (duckdb.Error, OSError) as exc:
        raise _open_error(path, exc) from exc


def _open_error(path: Path, exc: Exception) -> StoreError:
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        pid = _PID.search(text)
        return DatabaseLockedError(path, f"PID {pid.group(1)}" if pid else "")
    return StoreError(f"Cannot open the database file {path}: {text.splitlines()[0]}")


_SCHEMA_VERSION_TABLE = "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)"


def _recorded_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return int(con.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] or 0)


@functools.cache
def expected_tables(version: int) -> dbfile.Tables:
    """The tables and columns a database at schema ``version`` has (its migrations, replayed in memory)."""
    con = duckdb.connect(":memory:")
    try:
        con.execute(_SCHEMA_VERSION_TABLE)
        for migration in MIGRATIONS[:version]:
            migration(con)
        return dbfile.tables_of(con)
    finally:
        con.close()


def verify(path: Path) -> None:
    """Refuse an existing file that is not a whole fxbatch database, reading it only.

    Opened read-only and closed again, so nothing (not even a WAL replay) is written to a file
    that is refused. A file this process already has open was checked when it was opened.
    """
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.ConnectionException) and "different configuration" in str(exc):
            return
        error = _open_error(path, exc)
        if type(error) is StoreError and os.access(path, os.R_OK):
            # A file with DuckDB's header that DuckDB cannot open (truncated, overwritten header).
            error = DamagedDatabaseError(path, str(exc).splitlines()[0])
        raise error from exc
    try:
        found = dbfile.check_readable(con, path)
        version = _recorded_version(con)
        if version == 0 and found:
            raise NotADatabaseError(path, "a DuckDB database without fxbatch's tables")
        if 0 < version <= SCHEMA_VERSION:
            dbfile.check_schema(found, expected_tables(version), path, version)
    finally:
        con.close()


class Store:
    """The fxbatch database. ``Store(None)`` is an in-memory database (tests, scratch)."""

    def __init__(self, path: Path | str | None, *, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        existed = self.path is not None and dbfile.check_new_or_duckdb(self.path)
        if existed and self.path is not None:
            verify(self.path)
        self._conn = _connect(self.path, read_only)
        # Row numbers of the fast CSV path rely on tables keeping insertion order.
        self._conn.execute("SET preserve_insertion_order = true")
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

    def release_cursor(self) -> None:
        """Close this thread's cursor (worker threads call it before they end)."""
        cur = getattr(self._local, "cursor", None)
        if cur is not None:
            self._local.cursor = None
            cur.close()

    def close(self) -> None:
        self._conn.close()

    def instance_id(self) -> str:
        """A short random id of this database, prefixed to deal ids so they are unique anywhere."""
        return str(self.cursor().execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchall()[0][0])

    # -- schema --------------------------------------------------------------
    def schema_version(self) -> int:
        return _recorded_version(self.cursor())

    def backup(self, path: Path | str, *, force: bool = False) -> Path:
        """A consistent copy of this database at ``path`` (refused if it exists, unless ``force``)."""
        return dbfile.backup(self.cursor(), self.path, path, force=force)

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
            cur.execute(_SCHEMA_VERSION_TABLE)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            cur.begin()
            try:
                MIGRATIONS[version - 1](cur)
                cur.execute("INSERT INTO schema_version VALUES (?, timezone('UTC', now()))", [version])
                cur.commit()
            except Exception:
                cur.rollback()
                raise
        if current < SCHEMA_VERSION:
            # Schema changes go to the file now, not the WAL: replaying some DDL (an ALTER ... USING
            # expression) after a crash needs a DuckDB extension loaded, which offline it cannot fetch.
            cur.execute("CHECKPOINT")
        return current == 0
