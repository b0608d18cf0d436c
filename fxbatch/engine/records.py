"""Run persistence: the runs table, bulk writes of trade records, and run summaries.

Trade records are written once per trade when it is final (``run_trades``) and once per
booking attempt just before booking is asked for (``run_inflight``), always as one Arrow
insert per chunk: never an UPDATE per trade.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch.bank.model import CODE_OBJ, MESSAGE_OBJ, RETRY_HELPS_OBJ
from fxbatch.errors import NotFoundError
from fxbatch.lifecycle import TRADE_CODES, check_run
from fxbatch.models import RunConfig, RunStatus, RunSummary, TradeStatus
from fxbatch.store import Store, insert_arrow


def _ts(values: np.ndarray) -> pa.Array:
    """Epoch seconds (NaN = none) -> timestamp[us]."""
    mask = np.isnan(values)
    micros = np.where(mask, 0, values * 1e6).astype(np.int64)
    return pa.array(micros, type=pa.timestamp("us"), mask=mask)


def _strings(values: pa.Array | np.ndarray) -> pa.Array:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(pa.string())
    return pa.array(values, type=pa.string(), from_pandas=True)


def _f64(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.float64(), mask=np.isnan(values))


# Small lookup arrays: a column of codes becomes its strings with one ``take`` (no Python
# object per row).
_STATUS_TEXT = pa.array([s.value for s in TRADE_CODES], type=pa.string())
_CODE_TEXT = pa.array(CODE_OBJ, type=pa.string())
_MESSAGE_TEXT = pa.array(MESSAGE_OBJ, type=pa.string())
_RETRY_HELPS = pa.array(RETRY_HELPS_OBJ, type=pa.bool_())


@dataclass
class FinalRows:
    """Final records of a set of trades, as columns."""

    src_row: np.ndarray
    state: np.ndarray  # int8: index into lifecycle.TRADE_CODES
    failure: np.ndarray  # int8: index into bank.model.REASONS, -1 = none
    attempts: np.ndarray
    quote_id: np.ndarray  # int64, 0 = none
    quote_rate: np.ndarray
    quote_expiry: np.ndarray
    deal_txn_id: pa.Array  # strings (null where never quoted)
    deal_rate: np.ndarray
    amount_zar: np.ndarray
    executing_at: np.ndarray
    quoted_at: np.ndarray
    finished_at: np.ndarray

    @classmethod
    def concat(cls, parts: list[FinalRows]) -> FinalRows:
        if len(parts) == 1:
            return parts[0]
        merged: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            values = [getattr(p, name) for p in parts]
            if isinstance(values[0], pa.Array | pa.ChunkedArray):
                arrays = [v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for v in values]
                merged[name] = pa.concat_arrays([v.cast(pa.string()) for v in arrays])
            else:
                merged[name] = np.concatenate([np.asarray(v) for v in values])
        return cls(**merged)

    def to_arrow(self, run_id: int) -> pa.Table:
        n = len(self.src_row)
        reason = pa.array(self.failure.astype(np.int64) + 1)
        return pa.table(
            {
                "run_id": pa.array(np.full(n, run_id), type=pa.int32()),
                "src_row": pa.array(self.src_row, type=pa.int32()),
                "status": _STATUS_TEXT.take(pa.array(self.state.astype(np.int64))),
                "failure_code": _CODE_TEXT.take(reason),
                "failure_message": _MESSAGE_TEXT.take(reason),
                "retryable": _RETRY_HELPS.take(reason),
                "attempts": pa.array(self.attempts, type=pa.int32()),
                "quote_id": pa.array(self.quote_id, type=pa.int64(), mask=self.quote_id == 0),
                "quote_rate": _f64(self.quote_rate),
                "quote_expiry": _ts(self.quote_expiry),
                "deal_transaction_id": _strings(self.deal_txn_id),
                "deal_rate": _f64(self.deal_rate),
                "amount_zar": _f64(self.amount_zar),
                "executing_at": _ts(self.executing_at),
                "quoted_at": _ts(self.quoted_at),
                "finished_at": _ts(self.finished_at),
            }
        )


def write_final(cur: duckdb.DuckDBPyConnection, run_id: int, rows: FinalRows) -> None:
    if len(rows.src_row):
        insert_arrow(cur, "run_trades", rows.to_arrow(run_id))


def write_inflight(
    cur: duckdb.DuckDBPyConnection,
    run_id: int,
    src_row: np.ndarray,
    attempt: np.ndarray,
    quote_id: np.ndarray,
    quote_rate: np.ndarray,
    quote_expiry: np.ndarray,
    executing_at: np.ndarray,
    quoted_at: np.ndarray,
) -> None:
    n = len(src_row)
    if not n:
        return
    table = pa.table(
        {
            "run_id": pa.array(np.full(n, run_id), type=pa.int32()),
            "src_row": pa.array(src_row, type=pa.int32()),
            "attempt": pa.array(attempt, type=pa.int32()),
            "quote_id": pa.array(quote_id, type=pa.int64()),
            "quote_rate": pa.array(quote_rate, type=pa.float64()),
            "quote_expiry": _ts(quote_expiry),
            "executing_at": _ts(executing_at),
            "quoted_at": _ts(quoted_at),
        }
    )
    insert_arrow(cur, "run_inflight", table)


# ---------------------------------------------------------------------------- runs


def create_run(store: Store, batch_id: int, trades: int, config: RunConfig) -> int:
    """A new PENDING run; its deal-id prefix (this database's instance id + run id) is fixed here."""
    cur = store.cursor()
    run_id = int(cur.execute("SELECT nextval('run_id_seq')").fetchall()[0][0])
    cur.execute(
        "INSERT INTO runs (run_id, batch_id, status, config, trades, retry_of_run, deal_prefix) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [run_id, batch_id, RunStatus.PENDING.value, config.model_dump_json(), trades, config.retry_of_run,
         f"FXB-{store.instance_id()}-{run_id}-"],
    )  # fmt: skip
    return run_id


def deal_prefix(cur: duckdb.DuckDBPyConnection, run_id: int) -> str:
    return str(cur.execute("SELECT deal_prefix FROM runs WHERE run_id = ?", [run_id]).fetchall()[0][0])


def run_status(cur: duckdb.DuckDBPyConnection, run_id: int) -> RunStatus:
    rows = cur.execute("SELECT status FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no run {run_id}; `python -m fxbatch runs` lists them.")
    return RunStatus(rows[0][0])


def set_run_status(
    cur: duckdb.DuckDBPyConnection,
    run_id: int,
    new: RunStatus,
    *,
    started: bool = False,
    finished: bool = False,
    elapsed_s: float | None = None,
    error: str | None = None,
    outcomes: tuple[dict[str, int], dict[str, int]] | None = None,
) -> None:
    """The only writer of a run's status: the transition is checked first. ``outcomes`` are the
    run's :func:`count_outcomes` when the caller has just counted them (finished runs)."""
    check_run(run_status(cur, run_id), new, run_id)
    sets = ["status = ?"]
    params: list[object] = [new.value]
    if started:
        sets.append("started_at = coalesce(started_at, timezone('UTC', now()))")
    if finished:
        sets.append("finished_at = timezone('UTC', now())")
        counts, reasons = outcomes or count_outcomes(cur, run_id)
        sets += ["counts = ?", "failure_reasons = ?"]
        params += [json.dumps(counts), json.dumps(reasons)]
    if elapsed_s is not None:
        sets.append("elapsed_s = coalesce(elapsed_s, 0) + ?")
        params.append(elapsed_s)
    if error is not None:
        sets.append("error = ?")
        params.append(error)
    cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", [*params, run_id])


def count_outcomes(cur: duckdb.DuckDBPyConnection, run_id: int) -> tuple[dict[str, int], dict[str, int]]:
    """A run's trades by status (PENDING = not final yet) and its FAILED ones by reason, in one query."""
    counts = {s.value: 0 for s in TradeStatus}
    reasons: dict[str, int] = {}
    rows = cur.execute(
        "SELECT r.trades, t.status, t.failure_code, count(t.status) FROM runs r "
        "LEFT JOIN run_trades t ON t.run_id = r.run_id WHERE r.run_id = ? GROUP BY ALL",
        [run_id],
    ).fetchall()
    for _, status, code, n in rows:
        if status is not None:
            counts[status] += int(n)
            if status == TradeStatus.FAILED.value:
                reasons[code] = reasons.get(code, 0) + int(n)
    counts[TradeStatus.PENDING.value] = int(rows[0][0]) - sum(counts.values())
    ordered = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))
    return counts, ordered


_RUN_COLS = (
    "run_id, batch_id, status, trades, config, retry_of_run, started_at, finished_at, elapsed_s, counts, "
    "failure_reasons, error"
)


def _summary(cur: duckdb.DuckDBPyConnection, row: tuple[Any, ...], live: bool) -> RunSummary:
    run_id, batch_id, status, trades, config, retry_of, started, finished, elapsed, counts, reasons, error = row
    if counts is None or live:
        c, r = count_outcomes(cur, int(run_id))
    else:
        c, r = json.loads(str(counts)), json.loads(str(reasons))
    return RunSummary(
        run_id=int(run_id),
        batch_id=int(batch_id),
        status=RunStatus(status),
        trades=int(trades),
        counts=c,
        failure_reasons=r,
        started_at=started if isinstance(started, datetime) else None,
        finished_at=finished if isinstance(finished, datetime) else None,
        elapsed_s=float(elapsed) if elapsed is not None else None,
        retry_of_run=int(retry_of) if retry_of is not None else None,
        config=RunConfig.model_validate_json(str(config)),
        error=error,
    )


def get_run(store: Store, run_id: int) -> RunSummary:
    cur = store.cursor()
    rows = cur.execute(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no run {run_id}; `python -m fxbatch runs` lists them.")
    return _summary(cur, rows[0], live=rows[0][2] not in ("COMPLETED", "PARTIAL", "FAILED", "CANCELLED"))


def list_runs(store: Store, batch_id: int | None = None) -> list[RunSummary]:
    cur = store.cursor()
    where, params = ("WHERE batch_id = ?", [batch_id]) if batch_id is not None else ("", [])
    rows = cur.execute(f"SELECT {_RUN_COLS} FROM runs {where} ORDER BY run_id DESC", params).fetchall()
    return [_summary(cur, r, live=r[2] not in ("COMPLETED", "PARTIAL", "FAILED", "CANCELLED")) for r in rows]


def unfinished_runs(cur: duckdb.DuckDBPyConnection) -> list[int]:
    return [int(r[0]) for r in cur.execute("SELECT run_id FROM runs WHERE status = 'RUNNING'").fetchall()]


def scope_sql(config: RunConfig) -> str:
    """Which trades of the batch a run covers (all, or the FAILED ones of an earlier run)."""
    if config.retry_of_run is None:
        return ""
    return (
        f" AND t.src_row IN (SELECT src_row FROM run_trades WHERE run_id = {int(config.retry_of_run)} "
        "AND status = 'FAILED')"
    )


def count_scope(store: Store, batch_id: int, config: RunConfig) -> int:
    return int(
        store.cursor()
        .execute(f"SELECT count(*) FROM trades t WHERE t.batch_id = ?{scope_sql(config)}", [batch_id])
        .fetchall()[0][0]
    )


def zar_factor_sql(factors: dict[str, float], column: str = "t.amount_currency") -> str:
    """SQL: the ZAR value of one unit of ``column``'s currency (NULL for a currency not quoted)."""
    whens = " ".join(f"WHEN '{c}' THEN {f!r}" for c, f in sorted(factors.items()) if c.isalpha())
    return f"CASE {column} {whens} END" if whens else "NULL::DOUBLE"


def load_todo(
    cur: duckdb.DuckDBPyConnection,
    run_id: int,
    batch_id: int,
    config: RunConfig,
    zar: dict[str, float],
    *,
    fresh: bool = False,
) -> pa.Table:
    """The run's trades that have no final record yet, in row order (an Arrow table).

    In-flight columns describe a booking a previous process asked for and never recorded the
    answer of. For a retry run, ``prior_attempts`` is how many attempts the earlier run used,
    so that the retry continues the attempt count rather than replaying the same attempts.
    ``amount_zar`` converts the amount at the bundled mid rates (``zar``: currency -> ZAR).
    ``fresh``: the run was just created (no final or in-flight rows; saves a query).
    """
    if config.retry_of_run is None:
        prior, prior_join = "0", ""
    else:
        prior = "coalesce(p.attempts, 0)"
        prior_join = (
            f"LEFT JOIN (SELECT src_row, attempts FROM run_trades WHERE run_id = {int(config.retry_of_run)}) p "
            "ON p.src_row = t.src_row"
        )
    has_state = (
        not fresh
        and cur.execute(
            "SELECT (SELECT count(*) FROM run_trades WHERE run_id = ?) + (SELECT count(*) FROM run_inflight WHERE run_id = ?)",
            [run_id, run_id],
        ).fetchall()[0][0]
    )
    if has_state:
        inflight = """
               i.attempt AS inflight_attempt, i.quote_rate AS inflight_quote_rate,
               epoch(i.quote_expiry) AS inflight_quote_expiry,
               CASE WHEN i.src_row IS NOT NULL THEN r.deal_prefix || t.src_row END AS inflight_deal,
               epoch(i.executing_at) AS inflight_executing_at, epoch(i.quoted_at) AS inflight_quoted_at,"""
        joins = """
        LEFT JOIN (
            SELECT * FROM run_inflight WHERE run_id = $run
            QUALIFY row_number() OVER (PARTITION BY src_row ORDER BY attempt DESC) = 1
        ) i ON i.src_row = t.src_row
        JOIN runs r ON r.run_id = $run"""
        done = "AND t.src_row NOT IN (SELECT src_row FROM run_trades WHERE run_id = $run)"
    else:  # a fresh run: nothing to join (the common, large case)
        inflight = """
               NULL::INTEGER AS inflight_attempt, NULL::DOUBLE AS inflight_quote_rate,
               NULL::DOUBLE AS inflight_quote_expiry, NULL::VARCHAR AS inflight_deal,
               NULL::DOUBLE AS inflight_executing_at, NULL::DOUBLE AS inflight_quoted_at,"""
        joins, done = "", ""
    # A fresh run reads the batch in stored order, which is row order for every batch loaded in
    # one go: sorting a million rows with their text costs more than checking the order here.
    order = "ORDER BY t.src_row" if has_state else ""
    result = cur.sql(
        f"""
        SELECT t.src_row, t.trade_id, t.client_cif, t.account_number, t.currency_pair, t.side,
               CAST(t.amount AS DOUBLE) AS amount, t.amount_currency, t.spread_bps, t.delivery,
               CAST(t.value_date AS VARCHAR) AS value_date,  -- ISO; the HTTP bank sends it without dashes
               CAST(t.amount AS DOUBLE) * {zar_factor_sql(zar)} AS amount_zar,
               {inflight}
               {prior} AS prior_attempts
        FROM trades t
        {joins}
        {prior_join}
        WHERE t.batch_id = $batch{scope_sql(config)} {done}
        {order}
        """,
        params={"run": run_id, "batch": batch_id} if has_state else {"batch": batch_id},
    )
    table = result.to_arrow_table()
    rows = np.asarray(table.column("src_row").to_numpy())
    if len(rows) > 1 and not (rows[1:] > rows[:-1]).all():
        table = table.take(pc.sort_indices(table, [("src_row", "ascending")]))
    return table


def numeric(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 numpy (NULL -> NaN)."""
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def batch_fingerprint(cur: duckdb.DuckDBPyConnection, batch_id: int) -> str:
    rows = cur.execute("SELECT fingerprint FROM batches WHERE batch_id = ?", [batch_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no batch {batch_id}; `python -m fxbatch batches` lists them.")
    return str(rows[0][0])
