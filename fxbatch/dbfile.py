"""The database file itself: is it a DuckDB database, is it whole, and consistent copies of it.

``fxbatch.store`` runs these checks on an existing file before it writes anything, so a CSV
passed as ``--db`` or a truncated database is refused with how to recover, and its bytes stay
as they were. DuckDB verifies a block's checksum only when it reads the block, so the check
reads every column of every table (a few tens of milliseconds per 50k trades).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import duckdb

from fxbatch.errors import ConflictError, DamagedDatabaseError, NotADatabaseError, StoreError

# A DuckDB file starts with an 8-byte checksum, then the magic bytes (checked on duckdb 2.0).
MAGIC = b"DUCK"
MAGIC_OFFSET = 8
DATABASE_SUFFIXES = (".duckdb", ".db")

log = logging.getLogger(__name__)

Tables = dict[str, frozenset[str]]  # table or view -> its columns


def check_new_or_duckdb(path: Path) -> bool:
    """True when ``path`` exists and is a DuckDB file; False when it is new (warned about an
    unusual name); ``NotADatabaseError`` for anything else. Reads only the header."""
    if not path.exists():
        if path.suffix.lower() not in DATABASE_SUFFIXES:
            # Logged, not refused: the name is the user's choice, but `--db trades.csv` is usually a slip.
            log.warning(
                "warning: creating a new database %s; database files are usually named *.duckdb "
                "(check that --db / FXBATCH_DB names the database, not a trade file)",
                path,
            )
        return False
    if path.is_dir():
        raise NotADatabaseError(path, "it is a folder")
    try:
        with path.open("rb") as fh:
            head = fh.read(MAGIC_OFFSET + len(MAGIC))
    except OSError as exc:
        raise StoreError(f"Cannot open the database file {path}: {exc.strerror}.") from exc
    if head[MAGIC_OFFSET:] != MAGIC:
        raise NotADatabaseError(path, "it is empty" if not head else "")
    return True


def tables_of(con: duckdb.DuckDBPyConnection) -> Tables:
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(str(table), set()).add(str(column))
    return {table: frozenset(columns) for table, columns in found.items()}


def check_readable(con: duckdb.DuckDBPyConnection, path: Path) -> Tables:
    """Read every stored value once (DuckDB checks each block's checksum as it reads it); the
    database's tables and columns, or ``DamagedDatabaseError``."""
    try:
        tables = tables_of(con)
        base = {
            r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
        }
        for table in sorted(base):
            name = '"' + str(table).replace('"', '""') + '"'
            con.execute(f"SELECT count(*), sum(hash(COLUMNS(*))) FROM {name}").fetchall()
    except duckdb.Error as exc:
        raise DamagedDatabaseError(path, str(exc).splitlines()[0]) from exc
    return tables


def check_schema(found: Tables, expected: Tables, path: Path, version: int) -> None:
    """Every table and column that schema ``version`` has must be there."""
    missing = sorted(t for t in expected if t not in found)
    short = sorted(f"{t}.{c}" for t, cols in expected.items() if t in found for c in cols - found[t])
    if missing or short:
        what = ", ".join([*(f"table {t}" for t in missing), *(f"column {c}" for c in short)][:5])
        raise DamagedDatabaseError(path, f"schema version {version} is recorded but {what} is missing")


def backup(con: duckdb.DuckDBPyConnection, source: Path | None, target: Path | str, *, force: bool = False) -> Path:
    """A consistent copy of the open database at ``target`` (one transaction's view, through
    ATTACH + COPY FROM DATABASE, which DuckDB 2.0 does offline); ``target`` opens as a database.

    Written beside ``target`` first and moved over it, so a failed backup leaves no half file.
    """
    target = Path(target)
    if source is not None and target.resolve() == source.resolve():
        raise ConflictError(f"The backup {target} is the database itself; choose another file.")
    if target.exists() and not force:
        raise ConflictError(f"The backup file {target} already exists; pass --force (force=True) to replace it.")
    if target.is_dir():
        raise ConflictError(f"The backup target {target} is a folder; name a file, e.g. {target / 'fxbatch.duckdb'}.")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    alias = f"fxbatch_backup_{uuid.uuid4().hex[:8]}"
    quoted = str(tmp).replace("'", "''")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        (db,) = con.execute("SELECT current_database()").fetchall()[0]
        con.execute(f"ATTACH '{quoted}' AS {alias}")
        try:
            con.execute(f'COPY FROM DATABASE "{db}" TO {alias}')
        finally:
            con.execute(f"DETACH {alias}")
        os.replace(tmp, target)
    except (duckdb.Error, OSError) as exc:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise StoreError(f"Cannot write the backup {target}: {reason}") from exc
    return target
