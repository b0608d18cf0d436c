"""Review of a run: DuckDB queries -> small DataFrames (aggregates, one page of trades, one trade).

Every function aggregates in DuckDB and returns at most a few hundred rows, whatever the size
of the run: the app must not ship a 1M-trade run to the browser, nor hold it in pandas.
Functions take a ``Store`` and a run id; a run still executing is read as it stands (trades
without a final record are PENDING).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pandas as pd

from fxbatch.engine.records import scope_sql
from fxbatch.errors import NotFoundError
from fxbatch.masking import account_sql
from fxbatch.models import RunConfig, TradeStatus
from fxbatch.store import Store

STATUS_ORDER = [s.value for s in TradeStatus]
OTHER = "(others)"
_BY = {"pair": "t.currency_pair", "client": "t.client_cif"}


def _run(cur: duckdb.DuckDBPyConnection, run_id: int) -> tuple[int, int, str]:
    """(batch_id, trades, scope SQL) of a run."""
    rows = cur.execute("SELECT batch_id, trades, config FROM runs WHERE run_id = ?", [run_id]).fetchall()
    if not rows:
        raise NotFoundError(f"There is no run {run_id}; `python -m fxbatch runs` lists them.")
    batch_id, trades, config = rows[0]
    return int(batch_id), int(trades), scope_sql(RunConfig.model_validate_json(str(config)))


def _run_trades(cur: duckdb.DuckDBPyConnection, run_id: int, columns: str = "*") -> str:
    """The run's trades joined to their final records (a FROM clause; PENDING when not final)."""
    batch_id, _, scope = _run(cur, run_id)
    return (
        f"trades t LEFT JOIN (SELECT {columns} FROM run_trades WHERE run_id = {int(run_id)}) r "
        f"ON r.src_row = t.src_row WHERE t.batch_id = {batch_id}{scope}"
    )


# ---------------------------------------------------------------------------- outcomes


def outcome_counts(store: Store, run_id: int) -> pd.DataFrame:
    """status, trades, share: one row per status that has trades (PENDING = not final yet)."""
    cur = store.cursor()
    _, total, _ = _run(cur, run_id)
    found = dict(
        cur.execute("SELECT status, count(*) FROM run_trades WHERE run_id = ? GROUP BY status", [run_id]).fetchall()
    )
    found[TradeStatus.PENDING.value] = total - sum(int(n) for n in found.values())
    rows = [(s, int(found[s])) for s in STATUS_ORDER if found.get(s)]
    df = pd.DataFrame(rows, columns=["status", "trades"]).astype({"trades": "int64"})
    df["share"] = df["trades"] / total if total else 0.0
    return df


def failure_pareto(store: Store, run_id: int) -> pd.DataFrame:
    """failure_code, trades, share, cumulative_share: failed trades by reason, most frequent first."""
    df = (
        store.cursor()
        .execute(
            """
            SELECT failure_code, count(*)::BIGINT AS trades FROM run_trades
            WHERE run_id = ? AND status = 'FAILED' GROUP BY failure_code ORDER BY trades DESC, failure_code
            """,
            [run_id],
        )
        .df()
    )
    total = df["trades"].sum()
    df["share"] = df["trades"] / total if total else 0.0
    df["cumulative_share"] = df["share"].cumsum()
    return df


def outcomes_by(store: Store, run_id: int, by: str, top: int = 10) -> pd.DataFrame:
    """key, status, trades for the ``top`` currency pairs or clients by trades (the rest as one row)."""
    if by not in _BY:
        raise ValueError(f"by must be one of {sorted(_BY)}")
    cur = store.cursor()
    batch_id, _, scope = _run(cur, run_id)
    # The top keys (and how many trades each has) come from the trades alone; only their trades'
    # final records are joined to them (an inner join: about half the time of a left join over
    # every trade when the top keys hold most of them, as pairs do), the ones not final yet are
    # their trades minus those, and the rest is the run's outcome counts minus theirs (a
    # 1M-trade run has ~50k clients).
    totals = {
        str(key): int(n)
        for key, n in cur.execute(
            f"SELECT {_BY[by]} AS key, count(*) AS n FROM trades t WHERE t.batch_id = ?{scope} "
            f"GROUP BY key ORDER BY n DESC, key LIMIT {int(top)}",
            [batch_id],
        ).fetchall()
    }
    keys = list(totals)
    finals = cur.execute(
        f"SELECT t.key, r.status AS status, count(*)::BIGINT AS trades FROM (SELECT t.src_row, {_BY[by]} AS key "
        f"FROM trades t WHERE t.batch_id = ? AND {_BY[by]} IN (SELECT unnest(?))) t "
        f"JOIN run_trades r ON r.src_row = t.src_row AND r.run_id = ? GROUP BY ALL",
        [batch_id, keys, int(run_id)],
    ).df()
    done = finals.groupby("key")["trades"].sum()
    pending = pd.Series({k: n - int(done.get(k, 0)) for k, n in totals.items()}, dtype="int64")
    pending = pending[pending > 0]
    found = pd.concat(
        [finals, pd.DataFrame({"key": pending.index, "status": TradeStatus.PENDING.value, "trades": pending.values})],
        ignore_index=True,
    )
    rank = {k: i for i, k in enumerate(keys)}
    found = found.assign(rank=found["key"].map(rank)).sort_values(["rank", "status"])
    rest = (
        outcome_counts(store, run_id)
        .set_index("status")["trades"]
        .sub(found.groupby("status")["trades"].sum(), fill_value=0)
    )
    rest = rest[rest > 0]
    others = pd.DataFrame({"key": OTHER, "status": rest.index, "trades": rest.to_numpy().astype("int64")})
    out = pd.concat([found[["key", "status", "trades"]], others], ignore_index=True)
    return out.astype({"trades": "int64"})


def notional_by_outcome(store: Store, run_id: int) -> pd.DataFrame:
    """status, trades, amount_zar: notional converted to ZAR at mid, per final status."""
    return (
        store.cursor()
        .execute(
            "SELECT status, count(*)::BIGINT AS trades, round(coalesce(sum(amount_zar), 0), 2) AS amount_zar "
            "FROM run_trades WHERE run_id = ? GROUP BY status ORDER BY status",
            [run_id],
        )
        .df()
    )


def notional_by(store: Store, run_id: int, by: str, top: int = 10, *, failed: bool = False) -> pd.DataFrame:
    """key, status, trades, amount_zar, rank, keys: notional in ZAR per outcome of the ``top`` currency
    pairs or clients by notional (by failed notional when ``failed``), the rest as one "(others)" row.

    Never ranked by id: the first key holds the most money. ``keys`` says how many pairs or clients
    a row stands for (1, or how many the "(others)" row sums). Trades not final yet have no ZAR value
    (amount_zar 0, status PENDING). With ``failed``, keys without failed notional are never ranked.
    """
    return notional_breakdown(store, run_id, (by,), top)[(by, failed)]


def notional_breakdown(
    store: Store, run_id: int, bys: Sequence[str] = ("pair", "client"), top: int = 10
) -> dict[tuple[str, bool], pd.DataFrame]:
    """``notional_by`` for each of ``bys``, ranked by notional (key ``(by, False)``) and by failed
    notional (``(by, True)``), from one pass over the run's trades (GROUPING SETS): a run page
    shows all four, and each pass joins every trade of the run."""
    for by in bys:
        if by not in _BY:
            raise ValueError(f"by must be one of {sorted(_BY)}")
    cur = store.cursor()
    batch_id, _, scope = _run(cur, run_id)
    names = list(dict.fromkeys(bys))
    dim = "CASE " + " ".join(f"WHEN grouping(k_{b}) = 0 THEN '{b}'" for b in names) + " END"
    key = "CASE " + " ".join(f"WHEN grouping(k_{b}) = 0 THEN k_{b}" for b in names) + " END"
    ranked = " UNION ALL ".join(
        f"SELECT dim, key, {on == 'failed'} AS by_failed, CASE WHEN {on} > 0 THEN row_number() OVER "
        f"(PARTITION BY dim ORDER BY {on} > 0 DESC, {on} DESC, trades DESC, key) END AS rank FROM totals"
        for on in ("total", "failed")
    )
    df = cur.execute(
        f"""
        WITH j AS (
            SELECT {", ".join(f"{_BY[b]} AS k_{b}" for b in names)}, coalesce(r.status, 'PENDING') AS status, r.amount_zar
            FROM trades t LEFT JOIN (SELECT src_row, status, amount_zar FROM run_trades WHERE run_id = $run) r
                ON r.src_row = t.src_row
            WHERE t.batch_id = $batch{scope}
        ), k AS (
            SELECT {dim} AS dim, {key} AS key, status, count(*)::BIGINT AS trades,
                   coalesce(sum(amount_zar), 0)::DOUBLE AS amount_zar
            FROM j GROUP BY GROUPING SETS ({", ".join(f"(k_{b}, status)" for b in names)})
        ), totals AS (
            SELECT dim, key, sum(amount_zar) AS total, coalesce(sum(amount_zar) FILTER (WHERE status = 'FAILED'), 0)
                   AS failed, sum(trades) AS trades FROM k GROUP BY dim, key
        ), ranked AS ({ranked}
        ), others AS (
            SELECT dim, by_failed, count(*) FILTER (WHERE coalesce(rank > $top, true)) AS n FROM ranked
            GROUP BY dim, by_failed
        )
        SELECT dim, by_failed, CASE WHEN rank <= $top THEN k.key ELSE '{OTHER}' END AS key, k.status,
               sum(k.trades)::BIGINT AS trades, round(sum(k.amount_zar), 2)::DOUBLE AS amount_zar,
               CASE WHEN rank <= $top THEN rank ELSE $top + 1 END AS rank,
               CASE WHEN rank <= $top THEN 1 ELSE o.n END::BIGINT AS keys
        FROM k JOIN ranked USING (dim, key) JOIN others o USING (dim, by_failed)
        GROUP BY ALL ORDER BY dim, by_failed, rank, k.status
        """,
        {"run": int(run_id), "batch": batch_id, "top": int(top)},
    ).df()
    columns = ["key", "status", "trades", "amount_zar", "rank", "keys"]
    out = {}
    for by in names:
        for failed in (False, True):
            part = df[(df["dim"] == by) & (df["by_failed"] == failed)]
            out[(by, failed)] = part[columns].reset_index(drop=True).astype({"rank": "int64"})
    return out


def income_by(store: Store, run_id: int, by: str, top: int = 10) -> pd.DataFrame:
    """key, trades, spread_income_zar: the desk's income on SUCCESS trades for the ``top`` currency
    pairs or clients by income (the rest as one row), largest first."""
    if by not in _BY:
        raise ValueError(f"by must be one of {sorted(_BY)}")
    cur = store.cursor()
    batch_id, _, _ = _run(cur, run_id)
    df = cur.execute(
        f"""
        WITH k AS (
            SELECT {_BY[by]} AS key, count(*)::BIGINT AS trades, sum(r.spread_income_zar) AS spread_income_zar
            FROM run_trades r JOIN trades t ON t.batch_id = ? AND t.src_row = r.src_row
            WHERE r.run_id = ? AND r.status = 'SUCCESS' AND r.spread_income_zar IS NOT NULL GROUP BY ALL
        ), ranked AS (
            SELECT *, row_number() OVER (ORDER BY spread_income_zar DESC, key) AS rank FROM k
        )
        SELECT CASE WHEN rank <= {int(top)} THEN key ELSE '{OTHER}' END AS key, sum(trades)::BIGINT AS trades,
               sum(spread_income_zar) AS spread_income_zar, min(rank) AS rank
        FROM ranked GROUP BY 1 ORDER BY rank
        """,
        [batch_id, run_id],
    ).df()
    return df[["key", "trades", "spread_income_zar"]].reset_index(drop=True)


def latency_histogram(store: Store, run_id: int, bins: int = 30) -> pd.DataFrame:
    """from_ms, to_ms, trades: time from executing to final per trade, binned in DuckDB (the bank's
    answers: a trade cancelled mid-run ended when the cancel came, not when a bank answered)."""
    return (
        store.cursor()
        .execute(
            f"""
            WITH l AS (
                SELECT (epoch_ms(finished_at) - epoch_ms(executing_at))::DOUBLE AS ms FROM run_trades
                WHERE run_id = ? AND executing_at IS NOT NULL AND status <> 'CANCELLED'
            ),
            b AS (SELECT min(ms) AS lo, greatest((max(ms) - min(ms)) / {int(bins)}, 1) AS width FROM l)
            SELECT lo + bin * width AS from_ms, lo + (bin + 1) * width AS to_ms, count(*)::BIGINT AS trades
            FROM (SELECT least(floor((ms - lo) / width), {int(bins) - 1})::INTEGER AS bin, lo, width FROM l, b)
            GROUP BY ALL ORDER BY from_ms
            """,
            [run_id],
        )
        .df()[["from_ms", "to_ms", "trades"]]
    )


# Bin widths a reader takes in at a glance: 1, 2 or 5 of a power of ten, then minutes and hours.
_TIME_STEPS = (
    *(m * 10.0**e for e in range(-3, 1) for m in (1, 2, 5)),
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
)


def time_bin_width(duration_s: float, bins: int = 40) -> float:
    """A round bin width (seconds) that cuts a run of ``duration_s`` into at most ``bins`` bars.

    A 1-second run gets 0.05 s bars (twenty of them, not one spike), an hour gets 2 minutes.
    """
    wanted = max(float(duration_s), 0.0) / max(int(bins), 1)
    return next((w for w in _TIME_STEPS if w >= wanted - 1e-12), _TIME_STEPS[-1] * -(-wanted // _TIME_STEPS[-1]))


def throughput(store: Store, run_id: int, bins: int = 40) -> pd.DataFrame:
    """second, trades, per_s, width_s: trades finished per time bin, seconds after the first trade finished;
    trades a cancel ended are not counted (thousands "finished" in the cancel's millisecond).

    The bin width is chosen from the run's own length (``time_bin_width``); empty bins are kept
    out, so a stall shows as a gap on the time axis.
    """
    cur = store.cursor()
    lo, hi = cur.execute(
        "SELECT epoch(min(finished_at)), epoch(max(finished_at)) FROM run_trades WHERE run_id = ? "
        "AND status <> 'CANCELLED'",
        [run_id],
    ).fetchall()[0]
    if lo is None:
        return pd.DataFrame({"second": [], "trades": [], "per_s": [], "width_s": []}).astype(
            {"second": "float64", "trades": "int64", "per_s": "float64", "width_s": "float64"}
        )
    width = time_bin_width(float(hi) - float(lo), bins)
    last = max(int(-(-(float(hi) - float(lo)) // width)) - 1, 0)  # the end instant falls in the last bin
    df = cur.execute(
        """
        SELECT round(least(floor((epoch(finished_at) - $lo) / $w), $last) * $w, 6) AS second,
               count(*)::BIGINT AS trades, count(*) / $w AS per_s, $w AS width_s
        FROM run_trades WHERE run_id = $run AND status <> 'CANCELLED' GROUP BY ALL ORDER BY second
        """,
        {"lo": float(lo), "w": width, "last": last, "run": run_id},
    ).df()
    return df[["second", "trades", "per_s", "width_s"]]


# ---------------------------------------------------------------------------- trades


@dataclass
class TradeFilter:
    """What the trades table shows; empty fields do not filter."""

    statuses: list[str] = field(default_factory=list)
    failure_codes: list[str] = field(default_factory=list)
    pair: str | None = None
    client: str | None = None
    text: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        sql = ""
        params: dict[str, Any] = {}
        if self.statuses:
            sql += " AND coalesce(r.status, 'PENDING') IN (SELECT unnest($statuses))"
            params["statuses"] = list(self.statuses)
        if self.failure_codes:
            sql += " AND r.failure_code IN (SELECT unnest($codes))"
            params["codes"] = list(self.failure_codes)
        if self.pair:
            sql += " AND t.currency_pair = $pair"
            params["pair"] = self.pair
        if self.client:
            sql += " AND t.client_cif = $client"
            params["client"] = self.client.strip()
        if self.text and self.text.strip():
            sql += " AND (t.trade_id ILIKE $text OR coalesce(t.reference, '') ILIKE $text)"
            params["text"] = f"%{self.text.strip()}%"
        return sql, params


def _account(unmask: bool) -> str:
    return account_sql("t.account_number", unmask=unmask)  # the one masking rule (fxbatch.masking)


def trades_page(
    store: Store,
    run_id: int,
    filters: TradeFilter | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
    unmask: bool = False,
) -> tuple[pd.DataFrame, int]:
    """One page of the run's trades in row order, and how many trades the filters match.

    Account numbers show their last 4 digits only unless ``unmask``. The page's rows are found
    from keys first, then only those rows are read in full (a 1M-trade run costs one key scan).
    """
    cur = store.cursor()
    batch_id, trades, scope = _run(cur, run_id)
    where, params = (filters or TradeFilter()).where()
    limit, offset = max(int(limit), 0), max(int(offset), 0)
    if not where:
        total = trades
        rows = cur.execute(
            f"SELECT t.src_row FROM trades t WHERE t.batch_id = ?{scope} ORDER BY t.src_row LIMIT {limit} "
            f"OFFSET {offset}",
            [batch_id],
        ).fetchall()
    else:
        source = _run_trades(cur, run_id, "src_row, status, failure_code")
        keyed = cur.execute(
            f"SELECT t.src_row, count(*) OVER () FROM {source}{where} ORDER BY t.src_row LIMIT {limit} OFFSET {offset}",
            params,
        ).fetchall()
        rows = [(r[0],) for r in keyed]
        if keyed:
            total = int(keyed[0][1])
        else:
            total = int(cur.execute(f"SELECT count(*) FROM {source}{where}", params).fetchall()[0][0])
    wanted = [int(r[0]) for r in rows]
    lo, hi = (min(wanted), max(wanted)) if wanted else (0, -1)
    page = cur.execute(
        f"""
        SELECT t.src_row AS row, t.trade_id, t.client_cif, {_account(unmask)} AS account_number,
               t.currency_pair, t.side, t.amount, t.amount_currency, coalesce(r.status, 'PENDING') AS status,
               r.failure_code, r.attempts, coalesce(r.spread_pips, t.spread_pips) AS spread_pips, r.quote_rate,
               r.deal_rate, r.spread_income_zar, r.amount_zar, r.finished_at, t.reference
        FROM trades t
        LEFT JOIN (SELECT * FROM run_trades WHERE run_id = $run AND src_row BETWEEN $lo AND $hi) r
            ON r.src_row = t.src_row
        WHERE t.batch_id = $batch AND t.src_row BETWEEN $lo AND $hi AND t.src_row IN (SELECT unnest($rows))
        ORDER BY t.src_row
        """,
        {"run": run_id, "batch": batch_id, "lo": lo, "hi": hi, "rows": wanted},
    ).df()
    return page, total


def filter_choices(store: Store, run_id: int) -> dict[str, list[str]]:
    """The values the trades filters offer: statuses, failure codes and currency pairs of this run."""
    cur = store.cursor()
    batch_id, _, _ = _run(cur, run_id)
    codes = cur.execute(
        "SELECT DISTINCT failure_code FROM run_trades WHERE run_id = ? AND failure_code IS NOT NULL ORDER BY 1",
        [run_id],
    ).fetchall()
    pairs = cur.execute("SELECT DISTINCT currency_pair FROM trades WHERE batch_id = ? ORDER BY 1", [batch_id])
    return {
        "statuses": STATUS_ORDER,
        "failure_codes": [str(r[0]) for r in codes],
        "pairs": [str(r[0]) for r in pairs.fetchall()],
    }


def trade_detail(store: Store, run_id: int, row: int, *, unmask: bool = False) -> dict[str, Any]:
    """One trade of a run: its fields, outcome, error and timeline (stage, at, ms since executing)."""
    cur = store.cursor()
    batch_id, _, scope = _run(cur, run_id)
    df = cur.execute(
        f"""
        SELECT t.src_row AS row, t.trade_id, t.client_cif, {_account(unmask)} AS account_number,
               t.currency_pair, t.side, t.amount, t.amount_currency, coalesce(r.spread_pips, t.spread_pips)
               AS spread_pips, t.delivery, coalesce(r.value_date, t.value_date) AS value_date,
               t.reference, coalesce(r.status, 'PENDING') AS status, r.failure_code, r.failure_message,
               r.retryable, r.attempts, CAST(r.quote_id AS VARCHAR) AS quote_id, r.quote_rate, r.quote_expiry,
               r.deal_transaction_id, r.deal_rate, r.spread_income_zar, r.amount_zar, r.executing_at, r.quoted_at,
               r.finished_at
        FROM trades t
        LEFT JOIN (SELECT * FROM run_trades WHERE run_id = $run AND src_row = $row) r ON r.src_row = t.src_row
        WHERE t.batch_id = $batch AND t.src_row = $row{scope}
        """,
        {"run": run_id, "row": row, "batch": batch_id},
    ).df()
    if df.empty:
        raise NotFoundError(f"Run {run_id} has no trade at row {row}.")
    detail: dict[str, Any] = {str(k): (None if _missing(v) else v) for k, v in df.iloc[0].to_dict().items()}
    stages = [
        ("EXECUTING", detail["executing_at"]),
        ("QUOTED", detail["quoted_at"]),
        (str(detail["status"]), detail["finished_at"]),
    ]
    start = detail["executing_at"]
    timeline = pd.DataFrame(
        [
            (stage, at, (at - start).total_seconds() * 1000 if start is not None else None)
            for stage, at in stages
            if at is not None
        ],
        columns=["stage", "at", "ms_since_start"],
    )
    detail["timeline"] = timeline
    return detail


def _missing(value: object) -> bool:
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False
