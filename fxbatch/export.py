"""Exports of a run's per-trade results (CSV, XLSX, Parquet) and of the simulated bank's ledger.

Identifiers stay text: quote ids too, since a 19-digit id stored as a spreadsheet number keeps
only 15 significant digits. Text cells that a spreadsheet would read as a formula (starting with
``= + - @``, tab or carriage return) get a leading apostrophe in every CSV and XLSX file fxbatch
writes: each goes through ``safe_text`` (numbers keep their type: only text columns change).
A file is written beside its target and renamed into place, so a failed write leaves nothing.

Account numbers follow the one masking rule (``fxbatch.masking``): masked unless the caller
unmasks, and then the file's name says ``UNMASKED`` (``run_12.csv`` becomes ``run_12-UNMASKED.csv``).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from fxbatch import batches
from fxbatch.engine import records
from fxbatch.errors import NotFoundError, SettingsError
from fxbatch.masking import ACCOUNT_FIELD, account_sql, export_path
from fxbatch.store import Store

EXCEL_MAX_ROWS = 1_048_575
FORMATS = (".csv", ".xlsx", ".parquet")


def neutralise(expr: str) -> str:
    """SQL: prefix an apostrophe to text a spreadsheet would treat as a formula."""
    return f"CASE WHEN left({expr}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || {expr} ELSE {expr} END"


def safe_text(cur: duckdb.DuckDBPyConnection, sql: str) -> str:
    """``sql`` with every text column neutralised: the one way rows reach a CSV or XLSX file."""
    columns = cur.execute(f"DESCRIBE {sql}").fetchall()
    parts = []
    for name, kind, *_ in columns:
        quoted = '"' + str(name).replace('"', '""') + '"'
        parts.append(f"{neutralise(quoted)} AS {quoted}" if kind == "VARCHAR" else quoted)
    return f"SELECT {', '.join(parts)} FROM ({sql})"


def csv_bytes(df: pd.DataFrame) -> bytes:
    """A DataFrame as CSV for a download (e.g. a batch's rejections), neutralised like the exports.

    The frame is written as given: read it masked (``Workbench.rejections`` masks by default) and name
    the download with ``masking.export_name`` when it was read unmasked."""
    with duckdb.connect() as con, tempfile.TemporaryDirectory() as tmp:
        con.register("frame", df)
        path = Path(tmp) / "frame.csv"
        _write(con, "SELECT * FROM frame", path, len(df))
        return path.read_bytes()


def _run_rows_sql(run_id: int, batch_id: int, scope: str, unmask: bool = False) -> str:
    account = account_sql(f"t.{ACCOUNT_FIELD}", unmask=unmask)
    return f"""
    SELECT t.src_row AS row, t.trade_id, t.client_cif, {account} AS account_number, t.currency_pair, t.side, t.amount, t.amount_currency,
           coalesce(r.spread_pips, t.spread_pips) AS spread_pips, t.delivery,
           coalesce(r.value_date, t.value_date) AS value_date, t.reference,
           coalesce(r.status, 'PENDING') AS status, r.failure_code, r.failure_message, r.retryable,
           CAST(r.quote_id AS VARCHAR) AS quote_id, r.quote_rate, r.quote_expiry, r.deal_transaction_id, r.deal_rate,
           r.spread_income_zar, r.attempts, r.amount_zar, r.executing_at, r.quoted_at, r.finished_at
    FROM trades t
    LEFT JOIN run_trades r ON r.run_id = {int(run_id)} AND r.src_row = t.src_row
    WHERE t.batch_id = {int(batch_id)}{scope}
    ORDER BY t.src_row
    """


def export_run(store: Store, run_id: int, path: Path | str, *, unmask: bool = False) -> int:
    """Write one row per trade of ``run_id`` to ``path`` (format from the suffix); returns rows.

    Account numbers are masked unless ``unmask``; an unmasked export is written to
    ``masking.export_path(path, unmask=True)`` (``-UNMASKED`` before the suffix), never to a plain name."""
    path = _target(export_path(path, unmask=unmask))
    summary = records.get_run(store, run_id)
    sql = _run_rows_sql(run_id, summary.batch_id, records.scope_sql(summary.config), unmask)
    return _write(store.cursor(), sql, path, summary.trades)


def export_batch(store: Store, batch_id: int, path: Path | str, *, unmask: bool = False) -> int:
    """A batch's trades as loaded (before any run) to ``path``; accounts masked unless ``unmask``,
    and then written to ``masking.export_path(path, unmask=True)`` like ``export_run``."""
    path = _target(export_path(path, unmask=unmask))
    info = batches.get_batch(store, batch_id)
    return _write(store.cursor(), batches.trades_sql(batch_id, unmask=unmask), path, info.trades)


def export_rejections(store: Store, batch_id: int, path: Path | str, *, unmask: bool = False) -> int:
    """A batch's rejections (row, column, value, code, message) to ``path``; a rejected account
    masked unless ``unmask``, and then written to ``masking.export_path(path, unmask=True)``."""
    path = _target(export_path(path, unmask=unmask))
    batches.get_batch(store, batch_id)
    cur = store.cursor()
    rows = int(cur.execute("SELECT count(*) FROM rejections WHERE batch_id = ?", [batch_id]).fetchall()[0][0])
    return _write(cur, batches.rejections_sql(batch_id, unmask=unmask), path, rows)


def export_ledger(store: Store, path: Path | str, run_id: int | None = None) -> int:
    """The simulated bank's booked deals (optionally of one run), with the caller's trade id.

    Nothing here to mask: a deal row carries ids, rates and times, no client account number (the
    trade is found by its trade id and row), so the ledger has no ``unmask`` and no UNMASKED name.
    A column with an account added here must go through ``masking.account_sql`` like ``export_run``."""
    if run_id is not None:
        known = (
            store.cursor()
            .execute(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $r) OR EXISTS (SELECT 1 FROM sim_ledger WHERE run_id = $r)",
                {"r": int(run_id)},
            )
            .fetchall()[0][0]
        )
        if not known:  # a deleted batch's runs are gone, their deals are not: either will do
            raise NotFoundError(f"There is no run {run_id}; `python -m fxbatch runs` lists them.")
    path = _target(path)
    where = f"WHERE l.run_id = {int(run_id)}" if run_id is not None else ""
    sql = f"""
    SELECT l.deal_transaction_id, CAST(l.quote_id AS VARCHAR) AS quote_id, t.trade_id, l.run_id,
           r.batch_id, l.src_row AS row, l.deal_rate, l.booked_at
    FROM sim_ledger l
    LEFT JOIN runs r ON r.run_id = l.run_id
    LEFT JOIN trades t ON t.batch_id = r.batch_id AND t.src_row = l.src_row
    {where}
    ORDER BY l.booked_at, l.run_id, l.src_row
    """
    count = store.cursor().execute(f"SELECT count(*) FROM sim_ledger l {where}").fetchall()[0][0]
    return _write(store.cursor(), sql, path, int(count))


def _write(cur: duckdb.DuckDBPyConnection, sql: str, path: Path, rows: int) -> int:
    suffix = path.suffix.lower()
    if suffix == ".xlsx" and rows > EXCEL_MAX_ROWS:
        raise SettingsError(
            f"{rows:,} rows do not fit in an Excel sheet (at most {EXCEL_MAX_ROWS:,}); export to .csv or .parquet."
        )
    partial = _claim(path)
    try:
        target = str(partial).replace("'", "''")
        if suffix == ".csv":
            cur.execute(f"COPY ({safe_text(cur, sql)}) TO '{target}' (FORMAT csv, HEADER true)")
        elif suffix == ".parquet":
            cur.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)")
        else:
            _write_xlsx(cur, safe_text(cur, sql), partial)
        os.replace(partial, path)
    except (OSError, duckdb.IOException) as exc:
        raise _unwritable(path, getattr(exc, "strerror", None) or str(exc)) from exc
    finally:
        partial.unlink(missing_ok=True)
    return rows


def _target(path: Path | str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise _unwritable(path, "it is a folder")
    if path.suffix.lower() not in FORMATS:
        raise SettingsError(f"Cannot export to {path}: use a .csv, .xlsx or .parquet file name.")
    return path


def _unwritable(path: Path, why: str) -> SettingsError:
    return SettingsError(
        f"Cannot write {path}: {why}. Choose a file name in a folder you can write to.", code="UNWRITABLE_PATH"
    )


def _claim(path: Path) -> Path:
    """A new file beside ``path`` to write into (renamed onto it when complete), or a clear refusal."""
    if path.is_dir():
        raise _unwritable(path, "it is a folder")
    if not path.parent.is_dir():
        raise _unwritable(path, f"the folder {path.parent} does not exist")
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:  # os.open rather than mkstemp: the export gets the usual permissions (umask), not 0600
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError as exc:
        raise _unwritable(path, exc.strerror or str(exc)) from exc
    return partial


def _write_xlsx(cur: duckdb.DuckDBPyConnection, sql: str, path: Path) -> None:
    import xlsxwriter

    result = cur.execute(sql)
    columns = [d[0] for d in result.description or []]
    with xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False}) as book:
        ws = book.add_worksheet("Trades")
        bold = book.add_format({"bold": True})
        when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        day = book.add_format({"num_format": "yyyy-mm-dd"})
        for c, name in enumerate(columns):
            ws.write_string(0, c, name, bold)
        row = 0
        while batch := result.fetchmany(10_000):
            for values in batch:
                row += 1
                for c, value in enumerate(values):
                    if value is None:
                        continue
                    if isinstance(value, str):
                        ws.write_string(row, c, value)
                    elif hasattr(value, "hour"):
                        ws.write_datetime(row, c, value, when)
                    elif hasattr(value, "year"):
                        ws.write_datetime(row, c, value, day)
                    elif isinstance(value, bool):
                        ws.write_boolean(row, c, value)
                    else:
                        ws.write_number(row, c, float(value))
