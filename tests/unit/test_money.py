"""The desk's money (DOMAIN section 6): pips, the client's rate and the spread income."""

from __future__ import annotations

import numpy as np

from fxbatch.money import base_amounts, deal_rates, pip_size, pip_sizes, quote_zar_factors, spread_income_zar


def test_one_pip_is_a_ten_thousandth_of_the_rate_and_a_hundredth_for_pairs_quoted_in_jpy() -> None:
    assert pip_size("USD/ZAR") == 0.0001
    assert pip_size("JPY/ZAR") == 0.0001  # quoted in ZAR
    assert pip_size("USD/JPY") == 0.01
    np.testing.assert_array_equal(pip_sizes(["EUR/USD", "USD/JPY"]), [0.0001, 0.01])


def test_the_clients_rate_moves_up_when_it_buys_the_base_currency_and_down_when_it_sells() -> None:
    quote = np.array([17.79, 17.79, 152.95, 152.95])
    is_buy = np.array([True, False, True, False])
    spread = np.array([358.0, 358.0, 25.0, 25.0])
    pip = np.array([0.0001, 0.0001, 0.01, 0.01])
    deal = deal_rates(quote, is_buy, spread, pip)
    np.testing.assert_allclose(deal, [17.8258, 17.7542, 153.2, 152.7], atol=1e-9)
    np.testing.assert_allclose(np.abs(deal - quote), spread * pip, atol=1e-9)


def test_the_desks_worked_example_earns_r401_60() -> None:
    # The client buys USD 11,217.80 at a spread of 358 pips on a market of 17.7900: 17.8258, R401.60.
    quote = np.array([17.79])
    deal = deal_rates(quote, np.array([True]), np.array([358.0]), np.array([0.0001]))
    assert round(float(deal[0]), 4) == 17.8258
    income = spread_income_zar(np.array([11_217.80]), np.array([True]), quote, deal, np.array([1.0]))
    assert income.tolist() == [401.60]


def test_an_amount_in_the_quote_currency_is_converted_at_the_clients_rate() -> None:
    # A client paying ZAR 50,000 for USD at 17.8258 gets USD 2,804.92; the desk earns 358 pips on that.
    deal = np.array([17.8258])
    np.testing.assert_allclose(base_amounts(np.array([50_000.0]), np.array([False]), deal), [2804.92], atol=0.005)
    income = spread_income_zar(np.array([50_000.0]), np.array([False]), np.array([17.79]), deal, np.array([1.0]))
    assert income.tolist() == [round(50_000 / 17.8258 * 0.0358, 2)]


def test_income_in_another_quote_currency_is_reported_in_zar_at_mid() -> None:
    zar = {"USD": 17.605, "ZAR": 1.0}
    factors = quote_zar_factors(["EUR/USD", "USD/ZAR", "EUR/GBP"], zar)
    np.testing.assert_array_equal(factors[:2], [17.605, 1.0])
    assert np.isnan(factors[2])  # no GBP rate given: unknown, never zero
    quote = np.array([1.1594])
    deal = deal_rates(quote, np.array([False]), np.array([20.0]), np.array([0.0001]))
    income = spread_income_zar(np.array([100_000.0]), np.array([True]), quote, deal, factors[:1])
    assert income.tolist() == [round(100_000 * 0.0020 * 17.605, 2)]


def test_amounts_read_at_a_glance_in_thousands_millions_and_billions_of_rand() -> None:
    from fxbatch.money import zar_compact

    assert [zar_compact(v) for v in (812.4, 999.96, 72_157.52, 260_897_858.45, 1.2e9, -81_000.0)] == [
        "R 812.40", "R 1.0k", "R 72.2k", "R 260.9m", "R 1.2bn", "R -81.0k",
    ]  # fmt: skip
