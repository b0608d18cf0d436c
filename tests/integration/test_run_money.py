"""Money first (issue 16): a batch's notional and a run's booked, failed and lost amounts in ZAR,
checked against figures worked by hand and against the per-trade records."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import httpx
import pytest

from fxbatch import Workbench, connect  # connect: as the README documents it
from fxbatch.cli import main
from fxbatch.moneyview import RunMoney
from tests.integration.api_helpers import serve_api
from tests.integration.run_helpers import load_sample, query

HEADER = "trade_id,client_cif,account_number,currency_pair,side,amount,amount_currency,spread_pips,delivery,value_date"


def one_trade(wb: Workbench, tmp_path: Path, row: str) -> int:
    path = tmp_path / "one.csv"
    path.write_text(f"{HEADER}\n{row}\n", encoding="utf-8")
    return wb.load(path).batch_id


def test_a_batch_notional_is_its_amounts_at_mid_in_zar(wb: Workbench, tmp_path: Path) -> None:
    mid = wb.rates.mids["USD/ZAR"]
    batch = one_trade(wb, tmp_path, "T1,0123456789,0012345678,USD/ZAR,BUY,1000.00,USD,100,SPOT,")
    assert wb.batch(batch).notional_zar == pytest.approx(1000 * mid)
    assert [b.notional_zar for b in wb.batches() if b.batch_id == batch] == [pytest.approx(1000 * mid)]


def test_income_lost_on_a_trade_that_failed_before_any_quote_is_its_spread_at_mid(
    wb: Workbench, tmp_path: Path
) -> None:
    # USD 1,000 at 100 pips (0.0100 ZAR per USD): R 10.00 the desk would have earned.
    batch = one_trade(wb, tmp_path, "T1,0123456789,0012345678,USD/ZAR,BUY,1000.00,USD,100,SPOT,")
    run = wb.run(batch, success_rate=0.0, failure_mix={"RATE_UNAVAILABLE": 1.0}, max_attempts=1)
    money = wb.run_money(run.run_id)
    assert run.counts["FAILED"] == 1
    assert money.failed_zar == pytest.approx(1000 * wb.rates.mids["USD/ZAR"])
    assert money.income_lost_zar == pytest.approx(10.00)
    assert money.booked_zar == 0 and money.income_zar == 0
    assert money.headline.endswith("R 10.00 income lost")


def test_income_lost_on_domains_worked_deal_is_r401_60(wb: Workbench, tmp_path: Path) -> None:
    # DOMAIN section 6: USD 11,217.80 at 358 pips earns 11,217.80 x 0.0358 = R401.60; failed, that is lost.
    batch = one_trade(wb, tmp_path, "T1,0123456789,0012345678,USD/ZAR,BUY,11217.80,USD,358,SPOT,")
    run = wb.run(batch, success_rate=0.0, failure_mix={"RATE_UNAVAILABLE": 1.0}, max_attempts=1)
    assert wb.run_money(run.run_id).income_lost_zar == 401.60


def test_a_run_money_adds_up_to_its_trades_records(wb: Workbench) -> None:
    batch = load_sample(wb)
    run = wb.run(batch, seed=1, success_rate=0.8)
    money = wb.run_money(run.run_id)
    by_status = dict(
        query(wb, "SELECT status, sum(amount_zar) FROM run_trades WHERE run_id = ? GROUP BY 1", run.run_id)
    )
    assert money.booked_zar == pytest.approx(by_status["SUCCESS"], abs=0.01)
    assert money.failed_zar == pytest.approx(by_status["FAILED"], abs=0.01)
    assert money.cancelled_zar == 0 and money.open_zar == 0
    assert money.income_zar == run.spread_income_zar
    assert money.booked_zar + money.failed_zar == pytest.approx(wb.batch(batch).notional_zar, rel=1e-9)
    # Income lost, row by row in Python: each failed trade's notional x spread x pip / its rate.
    mids = wb.rates.mids
    lost = 0.0
    for pair, notional, pips, quote in query(
        wb,
        "SELECT t.currency_pair, r.amount_zar, r.spread_pips, r.quote_rate FROM run_trades r "
        "JOIN trades t ON t.batch_id = ? AND t.src_row = r.src_row WHERE r.run_id = ? AND r.status = 'FAILED'",
        batch,
        run.run_id,
    ):
        pip = 0.01 if pair.endswith("/JPY") else 0.0001
        lost += notional * pips * pip / (quote if quote is not None else mids[pair])
    assert lost > 0 and money.income_lost_zar == pytest.approx(lost, abs=0.01)


def test_the_api_the_client_and_the_cli_give_the_same_money(wb: Workbench) -> None:
    batch = load_sample(wb)
    run = wb.run(batch, seed=1, success_rate=0.8)
    money = wb.run_money(run.run_id)
    with serve_api(wb) as url, connect(url) as client:
        resp = httpx.get(f"{url}/api/v1/runs/{run.run_id}/money")
        assert resp.status_code == 200 and RunMoney.model_validate(resp.json()) == money
        assert httpx.get(f"{url}/api/v1/runs/999/money").status_code == 404
        assert client.run_money(run.run_id) == money
        by_failed = client.notional_by(run.run_id, "client", 3, failed=True)
        expected = wb.notional_by(run.run_id, "client", 3, failed=True)
        assert by_failed.to_dict("records") == expected.to_dict("records")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["--server", url, "show", str(run.run_id), "--json"]) == 0
    assert json.loads(out.getvalue())["money"] == money.model_dump(mode="json")


def test_a_batchs_notional_is_summed_once_and_a_new_batch_alone_is_summed_next(
    wb: Workbench, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fxbatch import moneyview

    first = load_sample(wb)
    summed: list[list[int] | None] = []
    real = moneyview.batch_notional

    def counted(store: object, zar: object, batch_ids: list[int] | None = None) -> dict[int, float]:
        summed.append(batch_ids)
        return real(store, zar, batch_ids)  # type: ignore[arg-type]

    monkeypatch.setattr(moneyview, "batch_notional", counted)
    before = {b.batch_id: b.notional_zar for b in wb.batches()}
    assert before[first] > 0 and wb.batch(first).notional_zar == before[first]
    second = load_sample(wb)
    after = {b.batch_id: b.notional_zar for b in wb.batches()}
    assert after == {**before, second: before[first]}  # the same file: the same notional
    assert summed == [[first], [second]], "each batch's trades are summed once, not on every listing"
