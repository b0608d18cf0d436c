"""Batches: create one from a checked file, list them, read their trades and rejections."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from fxbatch.errors import ConflictError, NotFoundError, SettingsError, UnusableFileError
from fxbatch.ingest import CheckedFile, Fixes, check_file, fetch_rejected_rows, fetch_rejections
from fxbatch.ingest.layout import FIELDS
from fxbatch.ingest.limits import Limits
from fxbatch.ingest.readers import drop_raw
from fxbatch.ingest.rules import drop_checked
from fxbatch.masking import ACCOUNT_FIELD, account_sql, field_value_sql, mask_rejections, message_sql
from fxbatch.models import BatchInfo, CheckReport, LoadResult
from fxbatch.moneyview import checked_notional
from fxbatch.rates import RateTable
from fxbatch.settings import Settings
from fxbatch.store import Store, insert_arrow

# The canonical columns, in template order (one definition: fxbatch.ingest.layout.FIELDS).
# A file may be checked for a coming trading date (a batch prepared the day before, or before a
# long weekend) up to this many days ahead: value dates are checked for the day it will run.
MAX_DAYS_AHEAD = 14
TRADE_COLUMNS = FIELDS


def fingerprint(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


@contextmanager
def _checked(
    store: Store,
    settings: Settings,
    rates: RateTable,
    path: Path,
    *,
    sheet: str | None,
    column_map: Mapping[str, str] | None,
    fixes: Fixes | None,
    today: date | None,
    source: str,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, CheckedFile]]:
    """``path`` checked into temp tables on a cursor of its own, dropped on exit: also when the
    file is refused, or the checked rows of a big file would stay in memory."""
    desk_today = settings.trading_date()
    if today is not None and not desk_today <= today <= desk_today + timedelta(days=MAX_DAYS_AHEAD):
        raise SettingsError(
            f"trading date {today.isoformat()}: a file is checked for today ({desk_today.isoformat()}) or a trading "
            f"date up to {MAX_DAYS_AHEAD} days ahead, when the batch will run."
        )
    cur = store.cursor()
    try:
        yield (
            cur,
            check_file(
                cur,
                path,
                pairs=frozenset(rates.pairs),
                today=today or desk_today,
                default_spread_pips=settings.default_spread_pips,
                mids=rates.mids,
                sheet=sheet,
                column_map=column_map,
                search_rows=settings.header_search_rows,
                fixes=fixes,
                source=source,
                limits=Limits.from_settings(settings),
            ),
        )
    finally:
        drop_checked(cur)
        drop_raw(cur)


def _still_rejected(cur: duckdb.DuckDBPyConnection, rows: list[int], *, blank: bool = False) -> list[int]:
    """Which of ``rows`` still have problems (``blank``: were emptied, so hold no trade at all)."""
    if not rows:
        return []
    which = "is_blank" if blank else "len(errors) > 0"
    found = cur.execute(
        f"SELECT src_row FROM checked WHERE {which} AND list_contains(?, src_row) ORDER BY src_row", [rows]
    ).fetchall()
    return [int(r[0]) for r in found]


def check_report(
    store: Store,
    settings: Settings,
    rates: RateTable,
    path: Path | str,
    *,
    sheet: str | None = None,
    column_map: Mapping[str, str] | None = None,
    fixes: Fixes | None = None,
    today: date | None = None,
    display_name: str | None = None,
    limit: int = 1000,
) -> CheckReport:
    """Validate ``path`` as ``load_file`` would, with ``fixes`` applied, and store nothing.

    The report lists the first ``limit`` rejections and rejected rows (with their cell texts,
    to correct); the counts cover the whole file.
    """
    path = Path(path)
    source = display_name or path.name
    with _checked(
        store, settings, rates, path, sheet=sheet, column_map=column_map, fixes=fixes, today=today, source=source
    ) as (cur, checked):
        return CheckReport(
            source_file=source,
            layout=checked.plan.layout,
            headers=[h for h in checked.plan.headers if h],
            column_map=checked.plan.column_map,
            ignored_columns=checked.plan.ignored_columns,
            rows=checked.rows,
            accepted=checked.accepted,
            rejected=checked.rejected,
            ignored=checked.ignored,
            rejections=fetch_rejections(cur, limit),
            rejected_rows=fetch_rejected_rows(cur, checked.plan, limit),
            fixed=checked.fixed,
            fixed_still_rejected=_still_rejected(cur, checked.fixed),
            notional_zar=checked_notional(cur, rates.zar_factors()),
        )


def load_file(
    store: Store,
    settings: Settings,
    rates: RateTable,
    path: Path | str,
    *,
    name: str | None = None,
    sheet: str | None = None,
    column_map: Mapping[str, str] | None = None,
    fixes: Fixes | None = None,
    today: date | None = None,
    display_name: str | None = None,
) -> LoadResult:
    """Validate ``path`` and store its accepted rows as a new batch (all or nothing).

    ``fixes`` (``{row: {field: text}}``) correct rows before validation: see fxbatch.ingest.fixes.
    """
    path = Path(path)
    source = display_name or path.name
    with _checked(
        store, settings, rates, path, sheet=sheet, column_map=column_map, fixes=fixes, today=today, source=source
    ) as (cur, checked):
        # A load lists the first ones (every one is stored: ``batch_rejections``); 600k listed were 106 MB.
        rejections = fetch_rejections(cur, limit=settings.max_rejections_shown)
        total = cur.execute("SELECT coalesce(sum(len(errors)), 0) FROM checked WHERE len(errors) > 0").fetchall()
        still_rejected = set(_still_rejected(cur, checked.fixed))
        emptied = set(_still_rejected(cur, checked.fixed, blank=True))  # corrected to nothing: no trade loaded
        if checked.accepted == 0:
            # A message goes everywhere (logs, the API, the page): a rejected account in it is masked.
            first = "; ".join(f"row {r.row} {r.column}: {r.message}" for r in mask_rejections(rejections[:3], False))
            raise UnusableFileError(
                f"None of the {checked.rows - checked.ignored} trade rows in {source} is valid, so no batch "
                f"was created. First problems: {first}",
                code="NO_VALID_ROWS",
            )
        digest = fingerprint(path)
        previous = [
            r[0]
            for r in cur.execute(
                "SELECT batch_id FROM batches WHERE fingerprint = ? ORDER BY batch_id", [digest]
            ).fetchall()
        ]
        batch_name = name or Path(source).stem
        cur.begin()
        try:
            batch_id = cur.execute(
                "INSERT INTO batches (name, source_file, fingerprint, layout, sheet, column_map, rows, "
                "accepted, rejected, ignored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING batch_id",
                [
                    batch_name,
                    source,
                    digest,
                    checked.plan.layout.value,
                    checked.raw.sheet,
                    json.dumps(checked.plan.column_map),
                    checked.rows,
                    checked.accepted,
                    checked.rejected,
                    checked.ignored,
                ],
            ).fetchall()[0][0]
            columns = ", ".join((*TRADE_COLUMNS, "value_date_derived"))
            cur.execute(
                f"INSERT INTO trades (batch_id, src_row, {columns}) SELECT ?, src_row, "
                f"{columns} FROM checked WHERE NOT is_blank AND len(errors) = 0"
                # corrected rows were re-inserted at the end of checked_data
                + (" ORDER BY src_row" if checked.fixed else ""),
                [batch_id],
            )
            cur.execute(
                "INSERT INTO rejections SELECT ?, src_row, e.col, e.value, e.code, e.message FROM "
                "(SELECT src_row, unnest(errors) AS e FROM checked WHERE len(errors) > 0)",
                [batch_id],
            )
            if checked.corrections:
                rows, fields, originals, corrected = zip(*checked.corrections, strict=True)
                insert_arrow(
                    cur,
                    "corrections",
                    pa.table(
                        {
                            "batch_id": pa.array([batch_id] * len(rows), type=pa.int32()),
                            "src_row": pa.array(rows, type=pa.int32()),
                            "field": pa.array(fields, type=pa.string()),
                            "original": pa.array(originals, type=pa.string()),
                            "corrected": pa.array(corrected, type=pa.string()),
                        }
                    ),
                )
            cur.commit()
        except Exception:
            cur.rollback()
            raise
    return LoadResult(
        batch_id=batch_id,
        name=batch_name,
        source_file=source,
        layout=checked.plan.layout,
        rows=checked.rows,
        accepted=checked.accepted,
        rejected=checked.rejected,
        ignored=checked.ignored,
        fingerprint=digest,
        previously_loaded_as=previous,
        column_map=checked.plan.column_map,
        ignored_columns=checked.plan.ignored_columns,
        rejections=rejections,
        rejections_total=int(total[0][0]),
        fixed=[r for r in checked.fixed if r not in still_rejected and r not in emptied],
    )


# A batch's status is its latest run's (LOADED before any run).
_BATCH_SELECT = """
SELECT b.batch_id, b.name, coalesce(r.status, 'LOADED') AS status, b.accepted AS trades, b.rows, b.rejected,
       b.ignored, b.source_file, b.layout, b.fingerprint, b.created_at
FROM batches b
LEFT JOIN (
    SELECT batch_id, status FROM runs QUALIFY row_number() OVER (PARTITION BY batch_id ORDER BY run_id DESC) = 1
) r ON r.batch_id = b.batch_id
"""


def list_batches(store: Store) -> list[BatchInfo]:
    cur = store.cursor()
    rows = cur.execute(_BATCH_SELECT + " ORDER BY b.batch_id DESC").fetchall()
    cols = [d[0] for d in cur.description or []]
    return [BatchInfo(**dict(zip(cols, r, strict=True))) for r in rows]


def get_batch(store: Store, batch_id: int) -> BatchInfo:
    cur = store.cursor()
    rows = cur.execute(_BATCH_SELECT + " WHERE b.batch_id = ?", [batch_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no batch {batch_id}; `python -m fxbatch batches` lists them.")
    cols = [d[0] for d in cur.description or []]
    return BatchInfo(**dict(zip(cols, rows[0], strict=True)))


def _page(limit: int | None, offset: int) -> str:
    return (f" LIMIT {int(limit)}" if limit is not None else "") + (f" OFFSET {int(offset)}" if offset else "")


def trades_sql(batch_id: int, *, unmask: bool = False) -> str:
    """SQL of a batch's trades in row order as a person sees them: accounts masked unless ``unmask``
    (``fxbatch.masking``). The Batches table and the batch's export both read it."""
    columns = [f"{account_sql(c, unmask=unmask)} AS {c}" if c == ACCOUNT_FIELD else c for c in TRADE_COLUMNS]
    return f"SELECT src_row AS row, {', '.join(columns)} FROM trades WHERE batch_id = {int(batch_id)} ORDER BY src_row"


def batch_trades(
    store: Store, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
) -> pd.DataFrame:
    """A batch's trades in row order (a page of them with ``limit``/``offset``); accounts masked
    unless ``unmask``."""
    get_batch(store, batch_id)
    return store.cursor().execute(trades_sql(batch_id, unmask=unmask) + _page(limit, offset)).df()


def batch_corrections(
    store: Store, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
) -> pd.DataFrame:
    """The cells corrected before the batch was created: row, field, original (the file's text), corrected
    (a page of them with ``limit``/``offset``). An account's original and corrected text are masked unless ``unmask``."""
    get_batch(store, batch_id)
    original = field_value_sql("field", "original", unmask=unmask)
    corrected = field_value_sql("field", "corrected", unmask=unmask)
    return (
        store.cursor()
        .execute(
            f"SELECT src_row AS row, field, {original} AS original, {corrected} AS corrected FROM corrections "
            f"WHERE batch_id = ? ORDER BY src_row, field{_page(limit, offset)}",
            [batch_id],
        )
        .df()
    )


def batch_rejections(
    store: Store, batch_id: int, limit: int | None = None, offset: int = 0, *, unmask: bool = False
) -> pd.DataFrame:
    """A batch's rejections in row order (a page of them with ``limit``/``offset``); the value of a
    rejected account (and the reason quoting it) is masked unless ``unmask``."""
    get_batch(store, batch_id)
    return store.cursor().execute(rejections_sql(batch_id, unmask=unmask) + _page(limit, offset)).df()


def rejections_sql(batch_id: int, *, unmask: bool = False) -> str:
    """SQL of a batch's rejections in row order as a person sees them (``batch_rejections``); the
    rejections' export reads it too."""
    value = field_value_sql("column_name", "value", unmask=unmask)
    message = message_sql("column_name", "value", "message", unmask=unmask)
    return (
        f"SELECT src_row AS row, column_name AS column, {value} AS value, code, {message} AS message "
        f"FROM rejections WHERE batch_id = {int(batch_id)} ORDER BY src_row"
    )


def delete_batch(store: Store, batch_id: int) -> None:
    """Delete a batch with its trades, rejections, runs and their records and sweeps, all or nothing.

    The simulated bank's ledger keeps its deals: it is the bank's record, not the batch's. A batch
    with a run against an HTTP bank is refused (ConflictError): its runs record real orders. Callers
    refuse first when a run of the batch is executing (``Workbench.delete_batch``).
    """
    get_batch(store, batch_id)
    cur = store.cursor()
    # A run against an HTTP bank says so in its settings; one that older versions let go on at the
    # simulated bank (rewriting them) still shows its real deals: bookings the simulated bank never made.
    real = [r for (r,) in cur.execute(
        """SELECT run_id FROM runs r WHERE batch_id = $batch AND (json_extract_string(config, '$.bank_url') IS NOT NULL
               OR EXISTS (SELECT 1 FROM run_trades t WHERE t.run_id = r.run_id AND t.status = 'SUCCESS'
                          AND t.deal_transaction_id NOT IN (SELECT deal_transaction_id FROM sim_ledger)))
           ORDER BY run_id""", {"batch": batch_id}).fetchall()]  # fmt: skip
    if real:
        raise ConflictError(
            f"Batch {batch_id} was sent to an HTTP bank (run{'s' if len(real) > 1 else ''} "
            f"{', '.join(map(str, real))}): those runs are the desk's record of real orders, and are kept. Only a "
            "batch run on the simulated bank alone can be deleted."
        )
    runs = "SELECT run_id FROM runs WHERE batch_id = $batch"
    sweeps = "SELECT sweep_id FROM sweeps WHERE batch_id = $batch"
    cur.begin()
    try:
        for sql in (
            f"DELETE FROM run_trades WHERE run_id IN ({runs})",
            f"DELETE FROM run_inflight WHERE run_id IN ({runs})",
            f"DELETE FROM run_doubts WHERE run_id IN ({runs})",
            f"DELETE FROM settlements WHERE run_id IN ({runs})",
            "DELETE FROM runs WHERE batch_id = $batch",
            f"DELETE FROM sweep_scenarios WHERE sweep_id IN ({sweeps})",
            "DELETE FROM sweeps WHERE batch_id = $batch",
            "DELETE FROM rejections WHERE batch_id = $batch",
            "DELETE FROM corrections WHERE batch_id = $batch",
            "DELETE FROM trades WHERE batch_id = $batch",
            "DELETE FROM batches WHERE batch_id = $batch",
        ):
            cur.execute(sql, {"batch": batch_id})
        cur.commit()
    except Exception:
        cur.rollback()
        raise
