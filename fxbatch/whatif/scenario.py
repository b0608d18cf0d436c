"""Fast mode: a run's per-trade outcomes computed in bulk, without the engine's waves or writes.

It applies exactly the engine's semantics at zero latency (the same bank model, the same retry
rules), so a scenario equals an ordinary run with the same settings and seed, trade by trade;
tests hold the two to that. What it leaves out is only what zero latency makes moot: waiting,
quote expiry and persistence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np

from fxbatch import money
from fxbatch.bank.model import (
    AUTO_RETRY,
    BOOK_STAGE,
    CODE_OBJ,
    NONE,
    QUOTE_STAGE,
    REASON_INDEX,
    TIMEOUT,
    BankModel,
    RateWalk,
    trade_keys,
)
from fxbatch.bank.port import unbookable
from fxbatch.bank.registry import ClientRegistry
from fxbatch.engine import records
from fxbatch.models import FailureCode, RunConfig
from fxbatch.rates import RateTable

_UNSUPPORTED = REASON_INDEX[FailureCode.CURRENCY_NOT_SUPPORTED.value]
_INVALID_VALUE_DATE = REASON_INDEX[FailureCode.INVALID_VALUE_DATE.value]
_VALIDATION = REASON_INDEX[FailureCode.BANK_VALIDATION.value]


@dataclass
class BatchArrays:
    """What a scenario needs of a batch, loaded once and shared by every scenario."""

    batch_id: int
    src_row: np.ndarray  # int64
    keys: np.ndarray  # uint64
    amount_zar: np.ndarray  # float64
    supported: np.ndarray  # bool: the pair is quoted by the rate table
    cif: np.ndarray  # object
    account: np.ndarray  # object
    # For the desk's income: what the engine prices a booked trade with.
    pair: np.ndarray  # object
    amount: np.ndarray  # float64, in amount_currency
    amount_is_base: np.ndarray  # bool
    is_buy: np.ndarray  # bool
    spread_pips: np.ndarray  # float64
    pip: np.ndarray  # float64
    quote_zar: np.ndarray  # float64: ZAR per unit of the pair's quote currency, at mid
    mid: np.ndarray  # float64: the pair's mid in the rate table (NaN for a pair it has not)
    mids: dict[str, float]
    unsendable: np.ndarray  # bool: fails INVALID_VALUE_DATE unsent on the trading date (see load_todo)

    def __len__(self) -> int:
        return len(self.src_row)

    @classmethod
    def load(
        cls, cur: duckdb.DuckDBPyConnection, batch_id: int, rates: RateTable, trade_date: date | None = None
    ) -> BatchArrays:
        """The batch as a run on ``trade_date`` would take it (None: value dates as loaded)."""
        fingerprint = records.batch_fingerprint(cur, batch_id)
        zar = records.zar_factor_sql(rates.zar_factors(), "amount_currency")
        pairs = ", ".join(f"'{p}'" for p in rates.pairs if p.replace("/", "").isalpha())
        _, unsendable = records.run_value_dates(trade_date, frozenset(rates.pairs))
        cols = cur.execute(
            f"""
            SELECT src_row, CAST(amount AS DOUBLE) * {zar} AS amount_zar,
                   currency_pair IN ({pairs}) AS supported, client_cif, account_number, currency_pair,
                   CAST(amount AS DOUBLE) AS amount, amount_currency = left(currency_pair, 3) AS amount_is_base,
                   side = 'BUY' AS is_buy, CAST(spread_pips AS DOUBLE) AS spread_pips, {unsendable} AS unsendable
            FROM trades t WHERE batch_id = ? ORDER BY src_row
            """,
            [batch_id],
        ).fetchnumpy()
        src = np.asarray(cols["src_row"], dtype=np.int64)
        pair = np.asarray(cols["currency_pair"], dtype=object)
        names, codes = np.unique(pair, return_inverse=True)
        return cls(
            batch_id=batch_id,
            src_row=src,
            keys=trade_keys(fingerprint, src),
            amount_zar=np.asarray(cols["amount_zar"], dtype=np.float64),
            supported=np.asarray(cols["supported"], dtype=bool),
            cif=np.asarray(cols["client_cif"], dtype=object),
            account=np.asarray(cols["account_number"], dtype=object),
            pair=pair,
            amount=np.asarray(cols["amount"], dtype=np.float64),
            amount_is_base=np.asarray(cols["amount_is_base"], dtype=bool),
            is_buy=np.asarray(cols["is_buy"], dtype=bool),
            spread_pips=np.asarray(cols["spread_pips"], dtype=np.float64),
            pip=money.pip_sizes(names)[codes],
            quote_zar=money.quote_zar_factors(names, rates.zar_factors())[codes],
            mid=np.array([rates.mids.get(str(p), np.nan) for p in names], dtype=np.float64)[codes],
            mids=dict(rates.mids),
            unsendable=np.asarray(cols["unsendable"], dtype=bool),
        )

    def income_zar(self, quote: np.ndarray) -> np.ndarray:
        """The desk's income per trade had it been booked at ``quote`` (``Outcomes.quote``):
        the quote moved by the spread, as the engine books it."""
        deal = money.deal_rates(quote, self.is_buy, self.spread_pips, self.pip)
        return money.spread_income_zar(self.amount, self.amount_is_base, quote, deal, self.quote_zar)

    def income_lost_zar(self, quote: np.ndarray, o: Outcomes) -> np.ndarray:
        """What each FAILED trade would have earned, as a run counts it: on ``quote`` (its last
        attempt's) when the booking failed (the run keeps that quote), else at mid (never quoted)."""
        failed = ~o.success
        at_booking = failed & (BOOK_STAGE[o.failure.astype(np.int64) + 1] | o.refused_booking)
        rate = np.where(at_booking, quote, self.mid)
        lost = money.income_lost_zar(self.amount_zar, self.spread_pips, self.pip, rate)
        return np.where(failed, lost, np.nan)


@dataclass
class Outcomes:
    success: np.ndarray  # bool
    failure: np.ndarray  # int8 reason index (-1 for success)
    attempts: np.ndarray  # int64
    quote: np.ndarray  # float64: the bank's quote of the last attempt that reached a booking (NaN: none did)
    refused_booking: np.ndarray  # bool: BANK_VALIDATION at the booking, the client's rate not above zero

    def failure_codes(self) -> np.ndarray:
        return np.asarray(CODE_OBJ[self.failure.astype(np.int64) + 1])

    def reasons(self) -> dict[str, int]:
        codes, counts = np.unique(self.failure[~self.success], return_counts=True)
        pairs = sorted(((str(CODE_OBJ[int(c) + 1]), int(n)) for c, n in zip(codes, counts, strict=True)),
                       key=lambda kv: (-kv[1], kv[0]))  # fmt: skip
        return dict(pairs)


def outcomes(batch: BatchArrays, config: RunConfig) -> Outcomes:
    """Each trade's final outcome under ``config``, as the engine would reach it at zero latency."""
    n = len(batch)
    model = BankModel(config.seed, config.bank)
    fates = model.fates(batch.keys)
    max_attempts = config.max_attempts
    failure = np.full(n, NONE, dtype=np.int8)
    attempts = np.ones(n, dtype=np.int64)
    # Checks at the quote, before the bank's dice: registry, then the pair. Trades whose value date
    # cannot settle are never sent.
    checked = np.full(n, NONE, dtype=np.int8)
    if config.bank.registry_file:
        codes = ClientRegistry.from_csv(config.bank.registry_file).check(batch.cif, batch.account, batch.amount_zar)
        has = codes != None  # noqa: E711
        checked[has] = [REASON_INDEX[c] for c in codes[has]]
    checked[(checked == NONE) & ~batch.supported] = _UNSUPPORTED
    checked[batch.unsendable] = _INVALID_VALUE_DATE
    attempts[batch.unsendable] = 0
    blocked = checked != NONE
    failure[blocked] = checked[blocked]
    # Trades fated to fail: the reason recurs on every attempt; retries run out when they may retry.
    fated = ~blocked & ~fates.success
    failure[fated] = fates.reason[fated]
    retried = fated & AUTO_RETRY[fates.reason.astype(np.int64) + 1]
    attempts[retried] = max_attempts
    # Trades fated to succeed may meet a transient error on attempt 1; a lost booking answer is
    # resolved as booked, any other needs a second attempt.
    t = fates.transient
    hit = ~blocked & fates.success & (t != NONE) & (t != TIMEOUT)
    if max_attempts >= 2:
        attempts[hit] = 2
    else:
        failure[hit] = t[hit]
    quoted = ~blocked & ~(fated & QUOTE_STAGE[fates.reason.astype(np.int64) + 1])
    quote_first = ~blocked & fates.success & (t != NONE) & QUOTE_STAGE[t.astype(np.int64) + 1]
    quote, refused = _bookings(batch, config, books=quoted, quote_first=quote_first, attempts=attempts)
    failure[refused] = _VALIDATION
    success = failure == NONE
    return Outcomes(success, failure, attempts, quote, refused)


def _bookings(
    batch: BatchArrays, config: RunConfig, *, books: np.ndarray, quote_first: np.ndarray, attempts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each booking the trades reach, attempt by attempt, with that attempt's quote: returns the
    quote of each trade's last booking (NaN where it reached none) and which bookings were refused.

    ``books``: the trades quoted at all; ``quote_first``: those whose first quote met a transient
    error (their first booking is attempt 2, when they may try again); ``attempts``: each trade's
    last attempt as the bank's fates have it, cut (in place) to the attempt of a refused booking.
    A client rate not above zero (a spread wider than the rate, in a batch loaded before
    SPREAD_TOO_WIDE) is refused unsent at that booking, BANK_VALIDATION and never retried, as both
    banks refuse it (``fxbatch.bank.port.unbookable``)."""
    n = len(batch)
    first = np.where(quote_first, 2, 1)
    books = books & (first <= attempts)  # a first quote's transient error with no second attempt
    walk = RateWalk(config.seed, batch.mids, config.bank.volatility_bps)
    last = np.flatnonzero(books)
    quote = np.full(n, np.nan)
    quote[last] = walk.mid(batch.pair[last], batch.src_row[last] + attempts[last] - 1)  # the quote a run keeps
    refused = np.zeros(n, dtype=bool)
    # Only a client selling at a spread of half the quote or more can be refused (a buyer pays the
    # quote plus the spread): rare, a batch loaded before SPREAD_TOO_WIDE. Any booking of such a
    # trade may be refused, each at its own attempt's quote. (One of less than half the last quote
    # cannot be: that would take the quote halving between two attempts, about 16 standard
    # deviations at the widest volatility and the most attempts the settings take: 100 bps a
    # step, 20 attempts.)
    with np.errstate(invalid="ignore"):
        risky = last[~batch.is_buy[last] & (batch.spread_pips[last] * batch.pip[last] >= 0.5 * quote[last])]
    for k in range(1, int(attempts[risky].max(initial=0)) + 1):
        at = risky[(first[risky] <= k) & (k <= attempts[risky]) & ~refused[risky]]
        q = walk.mid(batch.pair[at], batch.src_row[at] + k - 1)
        bad = at[unbookable(money.deal_rates(q, batch.is_buy[at], batch.spread_pips[at], batch.pip[at]))]
        quote[bad] = q[np.isin(at, bad)]
        refused[bad] = True
        attempts[bad] = k
    return quote, refused
