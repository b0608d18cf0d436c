"""The money at a glance: a batch's notional and a run's booked, failed and earned amounts in ZAR.

What the desk reads first (issue 16): "R 260.9m booked, R 16.6m failed, R 1.2m income, R 81k
income lost". One aggregate query each, whatever the batch's size.

Income lost is what the FAILED trades would have earned at their spread: on the bank's quote of
their last attempt when they had one, else at mid. For a trade of ZAR notional N (base amount B
at mid m: N = B x m x quote_zar) at s pips of size p, that is B x s x p x quote_zar = N x s x p / rate.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
from pydantic import BaseModel, Field

from fxbatch.analytics import _run
from fxbatch.money import pip_sizes, zar_compact
from fxbatch.store import Store


class RunMoney(BaseModel):
    """A run's trades in ZAR at mid, by where they stand, and the desk's income."""

    run_id: int
    booked_zar: float = Field(description="Notional of the SUCCESS trades.")
    failed_zar: float = Field(description="Notional of the FAILED trades.")
    cancelled_zar: float = Field(description="Notional of the CANCELLED trades.")
    open_zar: float = Field(description="Notional of the trades not final yet (not started or in flight).")
    income_zar: float | None = Field(description="Spread income on the SUCCESS trades (None: not recorded).")
    income_lost_zar: float = Field(
        description="Spread income the FAILED trades would have earned (at their last quote, else at mid)."
    )
    unpriced_trades: int = Field(0, description="Trades whose currency the rate table cannot convert to ZAR.")

    @property
    def headline(self) -> str:
        """'R 260.9m booked, R 16.6m failed, R 1.2m income, R 81.0k income lost'."""
        parts = [f"{zar_compact(self.booked_zar)} booked", f"{zar_compact(self.failed_zar)} failed"]
        if self.cancelled_zar:
            parts.append(f"{zar_compact(self.cancelled_zar)} cancelled")
        if self.open_zar:
            parts.append(f"{zar_compact(self.open_zar)} still to go")
        if self.income_zar is not None:
            parts.append(f"{zar_compact(self.income_zar)} income")
        parts.append(f"{zar_compact(self.income_lost_zar)} income lost")
        return ", ".join(parts)


def run_money(store: Store, run_id: int, mids: Mapping[str, float], zar: Mapping[str, float]) -> RunMoney:
    """The run's money in one query (``mids``: the rate table's; ``zar``: ZAR per unit of currency)."""
    cur = store.cursor()
    batch_id, _, scope = _run(cur, run_id)
    source = (
        "trades t LEFT JOIN (SELECT src_row, status, amount_zar, spread_income_zar, spread_pips, quote_rate "
        f"FROM run_trades WHERE run_id = {int(run_id)}) r ON r.src_row = t.src_row "
        "LEFT JOIN m ON m.pair = t.currency_pair LEFT JOIN z ON z.ccy = t.amount_currency "
        f"WHERE t.batch_id = {batch_id}{scope}"
    )
    row = cur.execute(
        "WITH m AS (SELECT unnest(?::VARCHAR[]) AS pair, unnest(?::DOUBLE[]) AS mid, unnest(?::DOUBLE[]) AS pip), "
        "z AS (SELECT unnest(?::VARCHAR[]) AS ccy, unnest(?::DOUBLE[]) AS zar), "
        "x AS (SELECT coalesce(r.status, 'PENDING') AS status, "
        "      coalesce(r.amount_zar, t.amount::DOUBLE * z.zar) AS notional, r.spread_income_zar AS income, "
        "      r.amount_zar * r.spread_pips * m.pip / coalesce(r.quote_rate, m.mid) AS lost "
        f"     FROM {source}) "
        "SELECT "
        "  coalesce(sum(notional) FILTER (status = 'SUCCESS'), 0), coalesce(sum(notional) FILTER (status = 'FAILED'), 0), "
        "  coalesce(sum(notional) FILTER (status = 'CANCELLED'), 0), "
        "  coalesce(sum(notional) FILTER (status NOT IN ('SUCCESS', 'FAILED', 'CANCELLED')), 0), "
        "  sum(income) FILTER (status = 'SUCCESS'), count(*) FILTER (status = 'SUCCESS'), "
        "  count(income) FILTER (status = 'SUCCESS'), coalesce(sum(lost) FILTER (status = 'FAILED'), 0), "
        "  count(*) FILTER (notional IS NULL) "
        "FROM x",
        [list(mids), list(mids.values()), pip_sizes(mids).tolist(), list(zar), list(zar.values())],
    ).fetchone()
    assert row is not None
    booked, failed, cancelled, still, income, won, with_income, lost, unpriced = row
    return RunMoney(
        run_id=run_id,
        booked_zar=round(float(booked), 2),
        failed_zar=round(float(failed), 2),
        cancelled_zar=round(float(cancelled), 2),
        open_zar=round(float(still), 2),
        # Runs made before income was recorded have SUCCESS trades without it: unknown, not zero.
        income_zar=round(float(income or 0.0), 2) if with_income == won else None,
        income_lost_zar=round(float(lost), 2),
        unpriced_trades=int(unpriced),
    )


def batch_notional(store: Store, zar: Mapping[str, float], batch_ids: list[int] | None = None) -> dict[int, float]:
    """Each batch's notional in ZAR at mid (one aggregate over the trades); trades in a currency
    the rate table cannot convert count for nothing."""
    where = "" if batch_ids is None else "WHERE t.batch_id IN (SELECT unnest(?::INTEGER[]))"
    params: list[object] = [list(zar), list(zar.values())]
    if batch_ids is not None:
        params.append(list(batch_ids))
    rows = (
        store.cursor()
        .execute(
            "WITH z AS (SELECT unnest(?::VARCHAR[]) AS ccy, unnest(?::DOUBLE[]) AS zar) "
            "SELECT t.batch_id, coalesce(sum(t.amount::DOUBLE * z.zar), 0) FROM trades t "
            f"LEFT JOIN z ON z.ccy = t.amount_currency {where} GROUP BY t.batch_id",
            params,
        )
        .fetchall()
    )
    return {int(b): round(float(v), 2) for b, v in rows}


def checked_notional(cur: duckdb.DuckDBPyConnection, zar: Mapping[str, float]) -> float:
    """The notional in ZAR at mid of the rows a file check accepted (its temp table ``checked``)."""
    row = cur.execute(
        "WITH z AS (SELECT unnest(?::VARCHAR[]) AS ccy, unnest(?::DOUBLE[]) AS zar) "
        "SELECT coalesce(sum(c.amount::DOUBLE * z.zar), 0) FROM checked c LEFT JOIN z ON z.ccy = c.amount_currency "
        "WHERE NOT c.is_blank AND len(c.errors) = 0",
        [list(zar), list(zar.values())],
    ).fetchone()
    return round(float(row[0]), 2) if row else 0.0
