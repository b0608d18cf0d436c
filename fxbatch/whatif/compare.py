"""Compare runs side by side: counts, executed notional, failure mix, and trades that differ."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fxbatch.engine import records
from fxbatch.errors import ConflictError
from fxbatch.store import Store


def compare_runs(store: Store, run_ids: list[int]) -> pd.DataFrame:
    """One row per run: status, trades, counts, success share, notional booked, failed and in all, and
    spread income in ZAR (the money read in one query for every run)."""
    rows: list[dict[str, Any]] = []
    money = {
        int(r[0]): (float(r[1]), float(r[2]), float(r[3]))
        for r in store.cursor()
        .execute(
            "SELECT run_id, coalesce(sum(amount_zar) FILTER (WHERE status = 'SUCCESS'), 0), "
            "coalesce(sum(amount_zar) FILTER (WHERE status = 'FAILED'), 0), coalesce(sum(amount_zar), 0) "
            "FROM run_trades WHERE run_id IN (SELECT unnest(?)) GROUP BY run_id",
            [[int(r) for r in run_ids]],
        )
        .fetchall()
    }
    for run_id in run_ids:
        s = records.get_run(store, run_id)
        booked, failed, total = money.get(int(run_id), (0.0, 0.0, 0.0))
        rows.append(
            {
                "run_id": run_id,
                "batch_id": s.batch_id,
                "status": s.status.value,
                "seed": s.config.seed,
                "success_rate_setting": s.config.bank.success_rate,
                "trades": s.trades,
                "succeeded": s.counts.get("SUCCESS", 0),
                "failed": s.counts.get("FAILED", 0),
                "cancelled": s.counts.get("CANCELLED", 0),
                "success_share": s.counts.get("SUCCESS", 0) / s.trades if s.trades else 0.0,
                "notional_zar_succeeded": booked,
                "notional_zar_failed": failed,
                "notional_zar_total": total,
                "spread_income_zar": s.spread_income_zar,
                **{f"reason:{k}": v for k, v in s.failure_reasons.items()},
            }
        )
    table = pd.DataFrame(rows)
    # A reason a run never met is 0 trades; income a run never recorded stays unknown, not 0.
    reasons = [c for c in table.columns if c.startswith("reason:")]
    table[reasons] = table[reasons].fillna(0).astype("int64")
    table["spread_income_zar"] = pd.to_numeric(table["spread_income_zar"], errors="coerce")
    return table


def differing_trades(store: Store, run_a: int, run_b: int, limit: int = 1000) -> pd.DataFrame:
    """Trades of one batch whose outcome (status or failure reason) differs between two runs, among
    the trades both runs cover (a retry run covers its parent's FAILED trades only: the others were
    never its to run, so they are not an outcome that differs). The first ``limit`` in row order;
    ``differing`` on each row says how many differ in all."""
    a, b = records.get_run(store, run_a), records.get_run(store, run_b)
    if a.batch_id != b.batch_id:
        raise ConflictError(f"Runs {run_a} and {run_b} are of different batches ({a.batch_id}, {b.batch_id}).")
    return (
        store.cursor()
        .execute(
            f"""
            SELECT t.src_row AS row, t.trade_id, t.currency_pair, t.amount, t.amount_currency,
                   coalesce(x.status, 'PENDING') AS status_a, x.failure_code AS failure_a,
                   coalesce(y.status, 'PENDING') AS status_b, y.failure_code AS failure_b,
                   count(*) OVER () AS differing
            FROM trades t
            LEFT JOIN run_trades x ON x.run_id = ? AND x.src_row = t.src_row
            LEFT JOIN run_trades y ON y.run_id = ? AND y.src_row = t.src_row
            WHERE t.batch_id = ?{records.scope_sql(a.config)}{records.scope_sql(b.config)}
              AND (x.src_row IS NOT NULL OR y.src_row IS NOT NULL)
              AND (coalesce(x.status, 'PENDING') <> coalesce(y.status, 'PENDING')
                   OR coalesce(x.failure_code, '') <> coalesce(y.failure_code, ''))
            ORDER BY t.src_row
            LIMIT ?
            """,
            [run_a, run_b, a.batch_id, limit],
        )
        .df()
    )


def split_differing(diff: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """``differing_trades``' answer as (how many trades differ in all, the rows listed without that column)."""
    total = int(diff["differing"].iloc[0]) if len(diff) else 0
    return total, diff.drop(columns="differing")
