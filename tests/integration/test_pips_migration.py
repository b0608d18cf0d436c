"""A database from before spreads in pips (schema v5) opens: its batches keep their spreads, runs
already made keep the rates they recorded, and derived value dates are recognised."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from fxbatch import Settings, Workbench
from tests.integration.run_helpers import database_at


def _v5_database(path: Path) -> None:
    con = database_at(path, 5)
    # Loaded on Friday 2026-11-27: the old rule gave SPOT Tue 12-01, TOM Mon 11-30, CASH Fri 11-27.
    con.execute(
        "INSERT INTO batches (name, source_file, fingerprint, layout, rows, accepted, rejected, ignored, created_at) "
        "VALUES ('old', 'old.csv', 'abc123', 'canonical', 3, 3, 0, 0, TIMESTAMP '2026-11-27 08:00:00')"
    )
    con.execute("""
    INSERT INTO trades VALUES
      (1, 2, 'T1', '0123456789', '0012345678', 'USD/ZAR', 'BUY', 1000.00, 'ZAR', 385, 'SPOT', DATE '2026-12-01', NULL),
      (1, 3, 'T2', '0123456789', '0012345678', 'USD/ZAR', 'SELL', 2000.00, 'ZAR', 25, 'TOM', DATE '2026-11-30', NULL),
      (1, 4, 'T3', '0123456789', '0012345678', 'USD/ZAR', 'BUY', 3000.00, 'ZAR', 50, 'SPOT', DATE '2026-12-09', NULL)
    """)
    con.execute(
        "INSERT INTO runs (run_id, batch_id, status, config, trades, deal_prefix, counts, failure_reasons) VALUES "
        """(nextval('run_id_seq'), 1, 'COMPLETED', '{}', 3, 'FXB-old-1-', '{"SUCCESS": 3}', '{}')"""
    )
    con.execute("""
    INSERT INTO run_trades (run_id, src_row, status, attempts, quote_rate, deal_rate, finished_at) VALUES
      (1, 2, 'SUCCESS', 1, 18.2, 18.2, TIMESTAMP '2026-11-27 08:01:00'),
      (1, 3, 'SUCCESS', 1, 17.5, 17.5, TIMESTAMP '2026-11-27 08:01:00'),
      (1, 4, 'SUCCESS', 1, 18.3, 18.3, TIMESTAMP '2026-11-27 08:01:00')
    """)
    con.close()


def test_an_old_database_opens_with_its_spreads_rates_and_derived_value_dates(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    _v5_database(path)
    with Workbench.open(settings=Settings(db=path, today=date(2026, 11, 30))) as wb:
        trades = wb.trades(1)
        assert trades["spread_pips"].tolist() == [385, 25, 50]
        cur = wb.store.cursor()
        derived = cur.execute("SELECT src_row, value_date_derived FROM trades ORDER BY src_row").fetchall()
        assert derived == [(2, True), (3, True), (4, False)]  # 12-09 is no delivery's date: written in the file
        old = cur.execute("SELECT quote_rate, deal_rate, spread_income_zar FROM run_trades ORDER BY src_row")
        assert old.fetchall() == [(18.2, 18.2, None), (17.5, 17.5, None), (18.3, 18.3, None)]
        summary = wb.run_summary(1)
        assert summary.spread_income_zar is None and summary.trade_date is None
        # A new run of the old batch derives SPOT and TOM again for its own trading date.
        run = wb.run(1, success_rate=1.0)
        dates = cur.execute("SELECT value_date FROM run_trades WHERE run_id = ? ORDER BY src_row", [run.run_id])
        assert [d for (d,) in dates.fetchall()] == [date(2026, 12, 2), date(2026, 12, 1), date(2026, 12, 9)]
        assert run.spread_income_zar is not None and run.spread_income_zar > 0
