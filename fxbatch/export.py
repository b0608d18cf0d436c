"""Exports of a run's per-trade results (CSV, XLSX, Parquet) and of the simulated bank's ledger.

Identifiers stay text: quote ids too, since a 19-digit id stored as a spreadsheet number keeps
only 15 significant digits. Text cells that a spreadsheet would read as a formula (starting with
``= + - @``, tab or carriage return) get a leading apostrophe in CSV and XLSX exports.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from fxbatch.engine import records
from fxbatch.errors import SettingsError
from fxbatch.store import Store

TEXT_COLUMNS = (
    "trade_id", "client_cif", "account_number", "currency_pair", "side", "amount_currency", "delivery",
    "reference", "status", "failure_code", "failure_message", "deal_transaction_id",
)  # fmt: skip
EXCEL_MAX_ROWS = 1_048_575
FORMATS = (".csv", ".xlsx", ".parquet")


def neutralise(expr: str) -> str:
    """SQL: prefix an apostrophe to text a spreadsheet would treat as a formula."""
    return f"CASE WHEN left({expr}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || {expr} ELSE {expr} END"


def _run_rows_sql(run_id: int, batch_id: int, scope: str, safe: bool) -> str:
    def text(col: str, src: str) -> str:
        return f"{neutralise(src) if safe else src} AS {col}"

    return f"""
    SELECT t.src_row AS row, {text("trade_id", "t.trade_id")}, {text("client_cif", "t.client_cif")},
           {text("account_number", "t.account_number")}, t.currency_pair, t.side, t.amount, t.amount_currency,
           coalesce(r.spread_pips, t.spread_pips) AS spread_pips, t.delivery,
           coalesce(r.value_date, t.value_date) AS value_date, {text("reference", "t.reference")},
           coalesce(r.status, 'PENDING') AS status, r.failure_code, r.failure_message, r.retryable,
           CAST(r.quote_id AS VARCHAR) AS quote_id, r.quote_rate, r.quote_expiry, r.deal_transaction_id, r.deal_rate,
           r.spread_income_zar, r.attempts, r.amount_zar, r.executing_at, r.quoted_at, r.finished_at
    FROM trades t
    LEFT JOIN run_trades r ON r.run_id = {int(run_id)} AND r.src_row = t.src_row
    WHERE t.batch_id = {int(batch_id)}{scope}
    ORDER BY t.src_row
    """


def export_run(store: Store, run_id: int, path: Path | str) -> int:
    """Write one row per trade of ``run_id`` to ``path`` (format from the suffix); returns rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SettingsError(f"Cannot export to {path.name}: use a .csv, .xlsx or .parquet file name.")
    summary = records.get_run(store, run_id)
    sql = _run_rows_sql(run_id, summary.batch_id, records.scope_sql(summary.config), safe=suffix != ".parquet")
    return _write(store.cursor(), sql, path, summary.trades)


def export_ledger(store: Store, path: Path | str, run_id: int | None = None) -> int:
    """The simulated bank's booked deals (optionally of one run), with the caller's trade id."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SettingsError(f"Cannot export to {path.name}: use a .csv, .xlsx or .parquet file name.")
    where = f"WHERE l.run_id = {int(run_id)}" if run_id is not None else ""
    trade_id = neutralise("t.trade_id") if path.suffix.lower() != ".parquet" else "t.trade_id"
    sql = f"""
    SELECT l.deal_transaction_id, CAST(l.quote_id AS VARCHAR) AS quote_id, {trade_id} AS trade_id, l.run_id,
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
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    target = str(path).replace("'", "''")
    if suffix == ".csv":
        cur.execute(f"COPY ({sql}) TO '{target}' (FORMAT csv, HEADER true)")
    elif suffix == ".parquet":
        cur.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)")
    else:
        if rows > EXCEL_MAX_ROWS:
            raise SettingsError(
                f"{rows:,} rows do not fit in an Excel sheet (at most {EXCEL_MAX_ROWS:,}); export to .csv or .parquet."
            )
        _write_xlsx(cur, sql, path)
    return rows


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
