"""The desk's money: pips, the client's rate and the desk's spread income (DOMAIN section 6).

The bank quotes the desk its rate for a trade (``quote_rate``). The client's rate
(``deal_rate``) is that quote moved by the trade's spread in pips, in the client's disfavour:
up when the client buys the base currency, down when it sells. The desk earns the difference on
the base-currency amount, in the quote currency, reported in ZAR at mid.

Worked example (a real desk deal): the client buys USD 11,217.80 at a spread of 358 pips on a
quote of 17.7900: deal rate 17.8258, income 11,217.80 x 0.0358 = R401.60.

Every function takes whole columns (numpy arrays): the engine and the what-if scenarios call
the same ones, so a scenario's income equals a run's to the cent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

MAX_SPREAD_PIPS = 2000


def pip_size(pair: str) -> float:
    """One pip of ``pair`` ("USD/ZAR"): 0.0001 of the rate, 0.01 when the quote currency is JPY."""
    return 0.01 if pair.endswith("/JPY") else 0.0001


def spread_caps(mids: Mapping[str, float]) -> dict[str, tuple[int, float]]:
    """Pairs whose rate is too low for a spread of up to MAX_SPREAD_PIPS (JPY/ZAR at 0.1151 is
    1,151 pips in all): the widest spread each takes, less than half its rate, and the rate. A
    spread at or over the rate takes the client's rate to zero or below when the client sells."""
    caps = {}
    for pair, mid in mids.items():
        cap = math.ceil(mid / 2 / pip_size(pair)) - 1
        if cap < MAX_SPREAD_PIPS:
            caps[pair] = (max(cap, 0), mid)
    return caps


def income_lost_zar(amount_zar: np.ndarray, spread_pips: np.ndarray, pip: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """What failed trades would have earned at their spread, in ZAR: the ZAR amount in the base
    currency at ``rate`` (the quote of the last attempt, else mid) times the spread. The run's
    money view (``fxbatch.moneyview``) sums the same expression in SQL."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(amount_zar * spread_pips * pip / rate, dtype=np.float64)


def pip_sizes(pairs: Iterable[str]) -> np.ndarray:
    return np.array([pip_size(p) for p in pairs], dtype=np.float64)


def quote_zar_factors(pairs: Iterable[str], zar: Mapping[str, float]) -> np.ndarray:
    """ZAR value at mid of one unit of each pair's quote currency (NaN when the table has none)."""
    return np.array([zar.get(p[-3:], np.nan) for p in pairs], dtype=np.float64)


def deal_rates(quote_rate: np.ndarray, is_buy: np.ndarray, spread_pips: np.ndarray, pip: np.ndarray) -> np.ndarray:
    """The client's rate: the quote moved by the spread, up when the client buys the base currency."""
    sign = np.where(is_buy, 1.0, -1.0)
    # To 1/10,000 of a pip: 17.79 + 358 pips is 17.8258, not the float sum's 17.825799999999997,
    # on the wire and in exports; a quote's own decimals (a bank's 6) are kept.
    per_unit = 1e4 / pip
    return np.asarray(np.round((quote_rate + sign * spread_pips * pip) * per_unit) / per_unit, dtype=np.float64)


def base_amounts(amount: np.ndarray, amount_is_base: np.ndarray, deal_rate: np.ndarray) -> np.ndarray:
    """The trade's amount in the base currency: as given, or the quote-currency amount at the
    client's rate (a client paying ZAR 50,000 for USD at 17.8258 gets USD 2,804.92)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(np.where(amount_is_base, amount, amount / deal_rate), dtype=np.float64)


def spread_income_zar(
    amount: np.ndarray,
    amount_is_base: np.ndarray,
    quote_rate: np.ndarray,
    deal_rate: np.ndarray,
    quote_zar: np.ndarray,
) -> np.ndarray:
    """The desk's income per trade in ZAR: base amount x |deal - quote|, in the quote currency,
    converted to ZAR at mid (``quote_zar``: 1.0 for X/ZAR pairs). Rounded to the cent."""
    income = base_amounts(amount, amount_is_base, deal_rate) * np.abs(deal_rate - quote_rate) * quote_zar
    return np.asarray(np.round(income, 2), dtype=np.float64)


def zar_compact(value: float) -> str:
    """An amount in ZAR as the desk says it at a glance: 'R 812.40', 'R 72.2k', 'R 260.9m', 'R 1.2bn'."""
    size = abs(value)
    for limit, suffix in ((1e9, "bn"), (1e6, "m"), (1e3, "k")):
        if round(size / limit, 1) >= 1:
            return f"R {value / limit:,.1f}{suffix}"
    return f"R {value:,.2f}"
