"""Run persistence: the runs table, bulk writes of trade records, and run summaries.

Trade records are written once per trade when it is final (``run_trades``) and once per
booking attempt just before booking is asked for (``run_inflight``), always as one Arrow
insert per chunk: never an UPDATE per trade.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fxbatch import valuedates
from fxbatch.bank import dealids
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
    spread_pips: np.ndarray  # float64 (NaN = unknown)
    value_day: np.ndarray  # float64: the run's value date, days since 1970-01-01 (NaN = unknown)
    spread_income_zar: np.ndarray  # float64: the desk's income (NaN unless SUCCESS)
    # strings: the bank's own message for a failure (its resultMsg and validation errors); null =
    # the reason's standard message
    failure_message: pa.Array

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
                "failure_message": _messages(self.failure_message, _MESSAGE_TEXT.take(reason)),
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
                "spread_pips": pa.array(
                    np.nan_to_num(self.spread_pips), type=pa.int32(), mask=np.isnan(self.spread_pips)
                ),
                "value_date": pa.array(
                    np.nan_to_num(self.value_day).astype(np.int32), type=pa.date32(), mask=np.isnan(self.value_day)
                ),
                "spread_income_zar": _f64(self.spread_income_zar),
            }
        )


def _messages(given: pa.Array, standard: pa.Array) -> pa.Array:
    """The bank's message where there is one, else the reason's standard message."""
    if given.null_count == len(given):
        return standard
    return pc.if_else(pc.is_null(standard), standard, pc.coalesce(given.cast(pa.string()), standard))


def write_final(cur: duckdb.DuckDBPyConnection, run_id: int, rows: FinalRows) -> None:
    if len(rows.src_row):
        insert_arrow(cur, "run_trades", rows.to_arrow(run_id), by_name=True)


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


def create_run(
    store: Store, batch_id: int, trades: int, config: RunConfig, trade_date: date, pairs: frozenset[str]
) -> int:
    """A new PENDING run; its deal-id prefix (``fxbatch.bank.dealids``) and its trading
    date are fixed here, with what that date does to the batch's value dates: how many derived
    ones move, and how many trades cannot be sent (see load_todo)."""
    cur = store.cursor()
    value_date, unsendable = run_value_dates(trade_date, pairs)
    moved, unsent = cur.execute(
        f"SELECT count(*) FILTER (WHERE t.value_date_derived AND {value_date} <> t.value_date), "
        f"count(*) FILTER (WHERE {unsendable}) FROM trades t WHERE t.batch_id = ?{scope_sql(config)}",
        [batch_id],
    ).fetchall()[0]
    run_id = int(cur.execute("SELECT nextval('run_id_seq')").fetchall()[0][0])
    cur.execute(
        "INSERT INTO runs (run_id, batch_id, status, config, trades, retry_of_run, deal_prefix, trade_date, "
        "value_dates_moved, value_dates_unsendable) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, batch_id, RunStatus.PENDING.value, config.model_dump_json(), trades, config.retry_of_run,
         dealids.new_prefix(), trade_date, int(moved), int(unsent)],
    )  # fmt: skip
    return run_id


# A trade's newest in-flight row (over run_inflight rows of one run): a trade quoted again on resume
# under the same attempt is settled with the quote its deal id was last sent with.
NEWEST_INFLIGHT = (
    "QUALIFY row_number() OVER (PARTITION BY src_row ORDER BY attempt DESC, quoted_at DESC, rowid DESC) = 1"
)
# A booking's newest word in run_doubts (over run_doubts rows of one run).
NEWEST_DOUBT = (
    "QUALIFY row_number() OVER (PARTITION BY src_row, attempt, quote_id ORDER BY asked_at DESC, rowid DESC) = 1"
)
# What the bank's status said (``write_doubts``), as the desk reads it; UNREACHABLE: the bank could
# not be reached to book or to ask (its answer never came). REFUSED: the bank answered the booking
# with a refusal and the trade is to be tried again: not in doubt, and no status need be asked.
_NO_ANSWER, _NO_ANSWER_TEXT = "UNKNOWN", "no usable answer"
UNREACHABLE, _UNREACHABLE_TEXT = "UNREACHABLE", "bank unreachable"
REFUSED = "REFUSED"
_SAID_TEXT = {_NO_ANSWER: _NO_ANSWER_TEXT, UNREACHABLE: _UNREACHABLE_TEXT}


# The newest in-flight row of each trade of run $run with no final record (its booking unanswered).
_UNANSWERED = f"""(
    SELECT * FROM run_inflight WHERE run_id = $run
      AND src_row NOT IN (SELECT src_row FROM run_trades WHERE run_id = $run)
    {NEWEST_INFLIGHT}
)"""
# Those the bank's status (or its absence) left in doubt, as i, with the newest word on each as d.
_IN_DOUBT = f"""{_UNANSWERED} i
    JOIN (SELECT * FROM run_doubts WHERE run_id = $run {NEWEST_DOUBT}) d
        ON d.src_row = i.src_row AND d.attempt = i.attempt AND d.quote_id = i.quote_id
        AND d.said NOT IN ('NOT_FOUND', 'COMPLETED', '{REFUSED}')  -- the bank's newest answer settled it"""


def said_text(word: str) -> str:
    """A status word the bank's GetTxnStatus left a booking in doubt with, for the desk."""
    return _SAID_TEXT.get(word, word)


def unsettled_bookings(cur: duckdb.DuckDBPyConnection, run_id: int) -> int:
    """Trades of the run whose booking was asked for and has no recorded answer: the bank that
    was asked may have booked them (only its status settles them)."""
    return int(
        cur.execute(
            f"""
            SELECT count(*) FROM {_UNANSWERED} i
            ANTI JOIN (SELECT * FROM run_doubts WHERE run_id = $run {NEWEST_DOUBT}) d
                ON d.src_row = i.src_row AND d.attempt = i.attempt AND d.quote_id = i.quote_id AND d.said = '{REFUSED}'
                AND d.asked_at >= i.quoted_at  -- the refusal of this very booking, not of an earlier one
            """,
            {"run": run_id},
        ).fetchall()[0][0]
    )


def open_bookings(todo: pa.Table) -> np.ndarray:
    """Which trades of ``load_todo``'s table have a booking the bank may have made (asked for, no
    answer recorded): only the bank's status, or the desk by hand, settles those."""
    sent = np.asarray(todo.column("inflight_deal").is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    refused = np.asarray(todo.column("inflight_refused").to_numpy(zero_copy_only=False), dtype=bool)
    found: np.ndarray = sent & ~refused
    return found


def write_doubts(
    cur: duckdb.DuckDBPyConnection, run_id: int, src_row: np.ndarray, attempt: np.ndarray, quote_id: np.ndarray,
    said: np.ndarray,
) -> None:  # fmt: skip
    """Record what the bank's status said of these unanswered bookings: a word that leaves them in
    doubt, or NOT_FOUND (the bank has none: no longer in doubt)."""
    n = len(src_row)
    if not n:
        return
    table = pa.table(
        {
            "run_id": pa.array(np.full(n, run_id), type=pa.int32()),
            "src_row": pa.array(np.asarray(src_row, dtype=np.int64), type=pa.int32()),
            "attempt": pa.array(np.asarray(attempt, dtype=np.int64), type=pa.int32()),
            "quote_id": pa.array(np.asarray(quote_id, dtype=np.int64), type=pa.int64()),
            "said": pa.array([str(s) for s in said.tolist()], type=pa.string()),
            "asked_at": pa.array(np.full(n, int(time.time() * 1e6)), type=pa.timestamp("us")),
        }
    )
    insert_arrow(cur, "run_doubts", table)


def earlier_bookings(
    cur: duckdb.DuckDBPyConnection, run_id: int, src_row: np.ndarray, quote_id: np.ndarray
) -> pa.Table:
    """For trades of the run whose deal the bank booked with another quote than ``quote_id``
    (their booking now was refused as a duplicate deal id): the newest earlier booking of each
    with another quote that the bank did not refuse (its answer lost, so it may have landed late),
    from the in-flight rows: src_row, attempt, quote_id, quote_rate, quote_expiry and quoted_at
    (epoch seconds), and how many such bookings the trade has (one: certainly that one)."""
    return cur.sql(
        f"""
        WITH asked AS (SELECT unnest($rows) AS src_row, unnest($quotes) AS quote_id)
        SELECT i.src_row, i.attempt, i.quote_id, i.quote_rate, epoch(i.quote_expiry) AS quote_expiry,
               epoch(i.quoted_at) AS quoted_at, count(*) OVER (PARTITION BY i.src_row) AS candidates
        FROM run_inflight i
        JOIN asked a ON a.src_row = i.src_row AND a.quote_id <> i.quote_id
        LEFT JOIN (SELECT * FROM run_doubts WHERE run_id = $run {NEWEST_DOUBT}) d
            ON d.src_row = i.src_row AND d.attempt = i.attempt AND d.quote_id = i.quote_id
            AND d.asked_at >= i.quoted_at
        WHERE i.run_id = $run AND coalesce(d.said, '') <> '{REFUSED}'
        QUALIFY row_number() OVER (PARTITION BY i.src_row ORDER BY i.attempt DESC, i.quoted_at DESC, i.rowid DESC) = 1
        """,
        params={"run": run_id, "rows": [int(r) for r in src_row], "quotes": [int(q) for q in quote_id]},
    ).to_arrow_table()


def bookings_in_doubt(cur: duckdb.DuckDBPyConnection, run_id: int) -> pd.DataFrame:
    """Bookings of the run the bank's status left in doubt, in row order: trades whose last
    booking (the deal id and quote it was sent with) has no recorded answer, and that the bank was
    asked about since, or could not be reached about (``write_doubts``), with what it said. A
    booking never asked about (a process died) is not here: a resume asks the bank first."""
    return cur.execute(
        f"""
        SELECT t.src_row AS row, t.trade_id, t.client_cif, t.currency_pair, t.side, t.amount, t.amount_currency,
               CAST(t.value_date AS VARCHAR) AS value_date,
               {dealids.deal_id_sql("r.deal_prefix", "t.src_row")} AS deal_transaction_id,
               i.attempt, i.quote_id, i.quote_rate, i.quoted_at,
               CASE d.said {" ".join(f"WHEN '{w}' THEN '{t}'" for w, t in _SAID_TEXT.items())} ELSE d.said END
                   AS bank_status, d.asked_at
        FROM {_IN_DOUBT}
        JOIN runs r ON r.run_id = i.run_id
        JOIN trades t ON t.batch_id = r.batch_id AND t.src_row = i.src_row
        ORDER BY t.src_row
        """,
        {"run": run_id},
    ).df()


def doubt_quotes(cur: duckdb.DuckDBPyConnection, run_id: int) -> dict[int, int]:
    """The run's bookings in doubt (as ``bookings_in_doubt`` lists them): row -> the quote id each
    was sent with."""
    rows = cur.execute(f"SELECT i.src_row, i.quote_id FROM {_IN_DOUBT}", {"run": run_id}).fetchall()
    return {int(r): int(q) for r, q in rows}


def set_run_config(cur: duckdb.DuckDBPyConnection, run_id: int, config: RunConfig) -> None:
    """The run goes on with ``config`` (a resume against another bank address): a later resume
    or cancel asks that bank."""
    cur.execute("UPDATE runs SET config = ? WHERE run_id = ?", [config.model_dump_json(), run_id])


def add_quote_releases(cur: duckdb.DuckDBPyConnection, run_id: int, cancelled: int, failed: int) -> None:
    """Count the quotes a run released at the bank (cancelquote), and the cancels that failed."""
    cur.execute(
        "UPDATE runs SET quotes_cancelled = coalesce(quotes_cancelled, 0) + ?, "
        "quote_cancel_failures = coalesce(quote_cancel_failures, 0) + ? WHERE run_id = ?",
        [cancelled, failed, run_id],
    )


def run_trade_date(cur: duckdb.DuckDBPyConnection, run_id: int) -> date | None:
    """The trading date a run was created on (None for runs made before fxbatch recorded it)."""
    rows = cur.execute("SELECT trade_date FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return rows[0][0] if rows and isinstance(rows[0][0], date) else None


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
    outcomes: Tally | None = None,
) -> None:
    """The only writer of a run's status: the transition is checked first. ``outcomes`` are the
    run's :func:`count_outcomes` when the caller has just counted them (finished runs)."""
    check_run(run_status(cur, run_id), new, run_id)
    sets = ["status = ?"]
    params: list[object] = [new.value]
    if started:  # (again, for a resume): why it stopped before no longer stands
        sets += ["started_at = coalesce(started_at, timezone('UTC', now()))", "error = NULL"]
    if finished:  # why it stopped before (INTERRUPTED) no longer stands, unless said again
        sets.append("finished_at = timezone('UTC', now())")
        if error is None:
            sets.append("error = NULL")
        tally = outcomes or count_outcomes(cur, run_id)
        sets += ["counts = ?", "failure_reasons = ?", "spread_income_zar = ?"]
        params += [json.dumps(tally.counts), json.dumps(tally.reasons), tally.income_zar]
    if elapsed_s is not None:
        sets.append("elapsed_s = coalesce(elapsed_s, 0) + ?")
        params.append(elapsed_s)
    if error is not None:
        sets.append("error = ?")
        params.append(error)
    cur.execute(f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", [*params, run_id])


class Tally(NamedTuple):
    """A run's trades by status (PENDING = not final yet), its FAILED ones by reason, and the
    desk's spread income in ZAR on its SUCCESS trades (None for runs that did not record it)."""

    counts: dict[str, int]
    reasons: dict[str, int]
    income_zar: float | None


def count_outcomes(cur: duckdb.DuckDBPyConnection, run_id: int) -> Tally:
    """The run's :class:`Tally`, in one query."""
    counts = {s.value: 0 for s in TradeStatus}
    reasons: dict[str, int] = {}
    rows = cur.execute(
        "SELECT r.trades, t.status, t.failure_code, count(t.status), sum(t.spread_income_zar), "
        "count(t.spread_income_zar) FROM runs r "
        "LEFT JOIN run_trades t ON t.run_id = r.run_id WHERE r.run_id = ? GROUP BY ALL",
        [run_id],
    ).fetchall()
    income, recorded = 0.0, 0
    for _, status, code, n, money, with_money in rows:
        if status is not None:
            counts[status] += int(n)
            if status == TradeStatus.FAILED.value:
                reasons[code] = reasons.get(code, 0) + int(n)
            if status == TradeStatus.SUCCESS.value:
                income += float(money or 0.0)
                recorded += int(with_money)
    counts[TradeStatus.PENDING.value] = int(rows[0][0]) - sum(counts.values())
    ordered = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))
    # Runs made before income was recorded have SUCCESS trades without it: their income is unknown.
    known = recorded == counts[TradeStatus.SUCCESS.value]
    return Tally(counts, ordered, round(income, 2) if known else None)


_RUN_COLS = (
    "run_id, batch_id, status, trades, config, retry_of_run, started_at, finished_at, elapsed_s, counts, "
    "failure_reasons, error, spread_income_zar, trade_date, value_dates_moved, value_dates_unsendable, "
    "quotes_cancelled, quote_cancel_failures"
)


def _summary(cur: duckdb.DuckDBPyConnection, row: tuple[Any, ...], live: bool) -> RunSummary:
    run_id, batch_id, status, trades, config, retry_of, started, finished, elapsed, counts, reasons, error = row[:12]
    income, trade_date, moved, unsendable, released, release_failed = row[12:]
    if counts is None or live:
        c, r, income = count_outcomes(cur, int(run_id))
    else:
        c, r = json.loads(str(counts)), json.loads(str(reasons))
    return RunSummary(
        spread_income_zar=float(income) if income is not None else None,
        trade_date=trade_date if isinstance(trade_date, date) else None,
        value_dates_moved=int(moved or 0),
        value_dates_unsendable=int(unsendable or 0),
        quotes_cancelled=int(released or 0),
        quote_cancel_failures=int(release_failed or 0),
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
    trade_date: date | None = None,
    pairs: frozenset[str] = frozenset(),
    fresh: bool = False,
) -> pa.Table:
    """The run's trades that have no final record yet, in row order (an Arrow table).

    In-flight columns describe a booking a previous process asked for and never recorded the
    answer of. For a retry run, ``prior_attempts`` is how many attempts the earlier run used,
    so that the retry continues the attempt count rather than replaying the same attempts.
    ``amount_zar`` converts the amount at the bundled mid rates (``zar``: currency -> ZAR).
    ``fresh``: the run was just created (no final or in-flight rows; saves a query).

    ``value_date`` is the run's: a date derived from delivery at load is derived again for the
    run's ``trade_date`` (``pairs``: the rate table's), a date written in the file is kept.
    ``unsendable`` marks trades the bank must not be asked about: a written value date that has
    passed, or CASH on a day that is not a business day of both currencies.
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
        inflight = f"""
               i.attempt AS inflight_attempt, i.quote_rate AS inflight_quote_rate,
               i.quote_id AS inflight_quote_id, epoch(i.quote_expiry) AS inflight_quote_expiry,
               CASE WHEN i.src_row IS NOT NULL THEN {dealids.deal_id_sql("r.deal_prefix", "t.src_row")} END
                   AS inflight_deal,
               epoch(i.executing_at) AS inflight_executing_at, epoch(i.quoted_at) AS inflight_quoted_at,
               x.src_row IS NOT NULL AS inflight_refused,"""
        joins = f"""
        LEFT JOIN (SELECT * FROM run_inflight WHERE run_id = $run {NEWEST_INFLIGHT}) i ON i.src_row = t.src_row
        LEFT JOIN (SELECT * FROM (SELECT * FROM run_doubts WHERE run_id = $run {NEWEST_DOUBT}) WHERE said = '{REFUSED}') x
            ON x.src_row = i.src_row AND x.attempt = i.attempt AND x.quote_id = i.quote_id AND x.asked_at >= i.quoted_at
        JOIN runs r ON r.run_id = $run"""
        done = "AND t.src_row NOT IN (SELECT src_row FROM run_trades WHERE run_id = $run)"
    else:  # a fresh run: nothing to join (the common, large case)
        inflight = """
               NULL::INTEGER AS inflight_attempt, NULL::DOUBLE AS inflight_quote_rate,
               NULL::BIGINT AS inflight_quote_id, NULL::DOUBLE AS inflight_quote_expiry, NULL::VARCHAR AS inflight_deal,
               NULL::DOUBLE AS inflight_executing_at, NULL::DOUBLE AS inflight_quoted_at, FALSE AS inflight_refused,"""
        joins, done = "", ""
    # A fresh run reads the batch in stored order, which is row order for every batch loaded in
    # one go: sorting a million rows with their text costs more than checking the order here.
    order = "ORDER BY t.src_row" if has_state else ""
    value_date, unsendable = run_value_dates(trade_date, pairs)
    result = cur.sql(
        f"""
        SELECT t.src_row, t.trade_id, t.client_cif, t.account_number, t.currency_pair, t.side,
               CAST(t.amount AS DOUBLE) AS amount, t.amount_currency, t.spread_pips, t.delivery,
               CAST({value_date} AS VARCHAR) AS value_date,  -- ISO; the HTTP bank sends it without dashes
               CAST({value_date} - DATE '1970-01-01' AS DOUBLE) AS value_day, {unsendable} AS unsendable,
               t.amount_currency = left(t.currency_pair, 3) AS amount_is_base,
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


def run_value_dates(trade_date: date | None, pairs: frozenset[str]) -> tuple[str, str]:
    """SQL: a trade's value date for a run on ``trade_date``, and whether it cannot be sent."""
    if trade_date is None:  # a run made before trading dates were recorded: dates as loaded
        return "t.value_date", "false"
    derived = valuedates.derived_sql("t.currency_pair", "t.delivery", pairs, trade_date)
    closed = valuedates.closed_on(pairs, trade_date)
    cash_closed = "false"
    if closed:
        listed = ", ".join(f"'{p}'" for p in sorted(closed) if p.replace("/", "").isalpha())
        cash_closed = f"t.delivery = 'CASH' AND t.currency_pair IN ({listed})"
    # A date written in the file that has passed, or no longer suits the delivery (a SPOT date
    # loaded yesterday is today's TOM date: the bank refuses it).
    given_passed = (
        f"(t.value_date < DATE '{trade_date.isoformat()}' OR "
        f"{valuedates.unsuited_sql('t.currency_pair', 't.delivery', 't.value_date', pairs, trade_date)})"
    )
    return (
        f"CASE WHEN t.value_date_derived THEN coalesce({derived}, t.value_date) ELSE t.value_date END",
        f"CASE WHEN t.value_date_derived THEN {cash_closed} ELSE {given_passed} END",
    )


def numeric(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64 numpy (NULL -> NaN)."""
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)


def integers(table: pa.Table, name: str) -> np.ndarray:
    """An integer column as int64 numpy (NULL -> 0), exact beyond a float's 53 bits (quote ids)."""
    return np.asarray(pc.fill_null(table.column(name).cast(pa.int64()), 0).to_numpy(zero_copy_only=False),
                      dtype=np.int64)  # fmt: skip


def batch_fingerprint(cur: duckdb.DuckDBPyConnection, batch_id: int) -> str:
    rows = cur.execute("SELECT fingerprint FROM batches WHERE batch_id = ?", [batch_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no batch {batch_id}; `python -m fxbatch batches` lists them.")
    return str(rows[0][0])
