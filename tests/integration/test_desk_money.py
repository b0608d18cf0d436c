"""The desk's numbers on a real run: the bank's quote, the client's rate and the spread income.

The legacy sample is the desk's own layout: Spread is in pips ("bips"), amounts are in ZAR, and
CurPair names the currency the client sells first. Every figure here is recomputed by hand from
the batch and the recorded quote, not read back from fxbatch's own arithmetic.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fxbatch import Workbench
from tests.conftest import DATA

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workbench, int]:
    from fxbatch import Settings

    wb = Workbench.open(settings=Settings(db=tmp_path_factory.mktemp("money") / "money.duckdb"))
    batch = wb.load(DATA / "legacy_sample.csv").batch_id
    run_id = wb.run(batch, success_rate=1.0).run_id
    yield wb, run_id
    wb.close()


def booked(wb: Workbench, run_id: int) -> list[tuple[object, ...]]:
    return (
        wb.store.cursor()
        .execute(
            "SELECT t.currency_pair, t.side, CAST(t.amount AS DOUBLE), t.amount_currency, t.spread_pips, "
            "r.quote_rate, r.deal_rate, r.spread_pips, r.spread_income_zar, r.status "
            "FROM run_trades r JOIN runs USING (run_id) JOIN trades t ON t.batch_id = runs.batch_id "
            "AND t.src_row = r.src_row WHERE r.run_id = ? ORDER BY r.src_row",
            [run_id],
        )
        .fetchall()
    )


def test_every_legacy_trade_is_booked_at_the_quote_moved_by_its_spread_in_pips(
    legacy_run: tuple[Workbench, int],
) -> None:
    wb, run_id = legacy_run
    rows = booked(wb, run_id)
    assert rows and all(r[9] == "SUCCESS" for r in rows)
    for pair, side, _amount, _ccy, spread, quote, deal, recorded_spread, _income, _ in rows:
        pip = 0.01 if str(pair).endswith("/JPY") else 0.0001
        assert recorded_spread == spread
        assert abs(abs(deal - quote) - spread * pip) < 1e-9  # type: ignore[operator]
        if spread:
            # The client's disfavour: it pays more when it buys the base currency, gets less when it sells.
            assert (deal > quote) == (side == "BUY")  # type: ignore[operator]


def test_each_trades_income_is_its_base_amount_times_the_spread_to_the_cent(legacy_run: tuple[Workbench, int]) -> None:
    wb, run_id = legacy_run
    for pair, _side, amount, ccy, spread, _quote, deal, _, income, _ in booked(wb, run_id):
        assert str(pair).endswith("/ZAR") and ccy == "ZAR"  # legacy amounts are ZAR: the quote currency
        base = amount / deal  # type: ignore[operator]
        assert income == pytest.approx(round(base * spread * 0.0001, 2), abs=0.005)  # type: ignore[operator]


def test_the_runs_income_is_the_sum_of_its_trades(legacy_run: tuple[Workbench, int]) -> None:
    wb, run_id = legacy_run
    total = round(sum(r[8] for r in booked(wb, run_id)), 2)  # type: ignore[misc]
    summary = wb.run_summary(run_id)
    assert summary.spread_income_zar == pytest.approx(total, abs=0.001) and total > 0
    assert summary.to_json()["spread_income_zar"] == summary.spread_income_zar


def test_show_json_reports_the_runs_spread_income(tmp_path: Path) -> None:
    def cli(*args: str) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, "-m", "fxbatch", "--db", str(tmp_path / "cli.duckdb"), *args, "--json"],
            cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    batch = cli("load", str(DATA / "legacy_sample.csv"))["batch_id"]
    run = cli("run", str(batch), "--success-rate", "1")
    shown = cli("show", str(run["run_id"]))
    assert isinstance(shown["spread_income_zar"], float) and shown["spread_income_zar"] > 0
    assert shown["spread_income_zar"] == run["spread_income_zar"]


def test_the_export_carries_both_rates_the_spread_and_the_income(
    legacy_run: tuple[Workbench, int], tmp_path: Path
) -> None:
    import pandas as pd

    wb, run_id = legacy_run
    out = tmp_path / "run.csv"
    wb.export_run(run_id, out)
    df = pd.read_csv(out, dtype=str)
    for column in ("quote_rate", "deal_rate", "spread_pips", "spread_income_zar"):
        assert column in df.columns
    exported = pd.to_numeric(df["spread_income_zar"]).sum()
    assert exported == pytest.approx(wb.run_summary(run_id).spread_income_zar, abs=0.01)


def test_failed_trades_earn_nothing_and_a_scenario_earns_what_its_run_earns(
    legacy_run: tuple[Workbench, int],
) -> None:
    wb, _ = legacy_run
    batch = wb.runs()[-1].batch_id
    run = wb.run(batch, success_rate=0.6, seed=11)
    income = wb.store.cursor().execute(
        "SELECT status, count(spread_income_zar), count(*) FROM run_trades WHERE run_id = ? GROUP BY status",
        [run.run_id],
    )
    by_status = {s: (with_income, n) for s, with_income, n in income.fetchall()}
    assert by_status["SUCCESS"][0] == by_status["SUCCESS"][1]
    assert by_status["FAILED"][0] == 0
    sweep = wb.whatif.sweep(batch, [0.6], seeds=[11], workers=1)
    [scenario] = sweep.scenarios
    assert scenario.succeeded == run.counts["SUCCESS"]
    assert scenario.spread_income_zar == pytest.approx(run.spread_income_zar, abs=0.001)
    assert scenario.income_lost_zar is not None and scenario.income_lost_zar > 0
    assert sweep.summary[0].income_mean == pytest.approx(run.spread_income_zar, abs=0.001)


def test_a_rate_table_quoting_zar_first_prices_that_currency_in_zar(tmp_path: Path) -> None:
    # ZAR/MZN: one ZAR is 3.63 MZN, so one MZN is 1 / 3.63 ZAR (the table need not name MZN/ZAR).
    from datetime import date

    from fxbatch import Settings

    rates = tmp_path / "rates.csv"
    rates.write_text("pair,mid\nUSD/ZAR,17.6050\nZAR/MZN,3.6300\n")
    orders = tmp_path / "orders.csv"
    orders.write_text(
        "trade_id,client_cif,account_number,currency_pair,side,amount,amount_currency,spread_pips\n"
        "M1,123456,111111,ZAR/MZN,BUY,100000.00,ZAR,100\nM2,123456,111111,ZAR/MZN,SELL,100000.00,MZN,100\n"
    )
    with Workbench.open(settings=Settings(db=tmp_path / "db.duckdb", rates_file=rates, today=date(2026, 11, 30))) as wb:
        assert wb.rates.to_zar("MZN") == pytest.approx(1 / 3.63)
        batch = wb.load(orders).batch_id
        assert wb.batch(batch).notional_zar == pytest.approx(100_000 + 100_000 / 3.63, abs=0.01)
        run = wb.run(batch, success_rate=1.0)
        money = wb.run_money(run.run_id)
        assert money.unpriced_trades == 0 and money.booked_zar == pytest.approx(100_000 + 100_000 / 3.63, abs=0.01)
        (_, m1_income), (m2_rate, m2_income) = (
            wb.store.cursor()
            .execute(
                "SELECT deal_rate, spread_income_zar FROM run_trades WHERE run_id = ? ORDER BY src_row", [run.run_id]
            )
            .fetchall()
        )
        # 100 pips of MZN (0.0001 each) a ZAR: on ZAR 100,000 that is MZN 1,000, R 275.48 at the mid.
        assert m1_income == pytest.approx(100_000 * 0.01 / 3.63, abs=0.01)
        # MZN 100,000 sold is ZAR 100,000 / the client's rate; the spread on that, in MZN, then in ZAR.
        assert m2_income == pytest.approx(100_000 / m2_rate * 0.01 / 3.63, abs=0.01)
        assert money.income_zar == pytest.approx(m1_income + m2_income, abs=0.01)
