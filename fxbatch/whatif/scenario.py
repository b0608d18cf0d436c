"""Fast mode: a run's per-trade outcomes computed in bulk, without the engine's waves or writes.

It applies exactly the engine's semantics at zero latency (the same bank model, the same retry
rules), so a scenario equals an ordinary run with the same settings and seed, trade by trade;
tests hold the two to that. What it leaves out is only what zero latency makes moot: waiting,
quote expiry and persistence.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from fxbatch.bank.model import (
    AUTO_RETRY,
    CODE_OBJ,
    NONE,
    REASON_INDEX,
    TIMEOUT,
    BankModel,
    trade_keys,
)
from fxbatch.bank.registry import ClientRegistry
from fxbatch.engine import records
from fxbatch.models import FailureCode, RunConfig
from fxbatch.rates import RateTable

_UNSUPPORTED = REASON_INDEX[FailureCode.CURRENCY_NOT_SUPPORTED.value]


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

    def __len__(self) -> int:
        return len(self.src_row)

    @classmethod
    def load(cls, cur: duckdb.DuckDBPyConnection, batch_id: int, rates: RateTable) -> BatchArrays:
        fingerprint = records.batch_fingerprint(cur, batch_id)
        zar = records.zar_factor_sql(rates.zar_factors(), "amount_currency")
        pairs = ", ".join(f"'{p}'" for p in rates.pairs if p.replace("/", "").isalpha())
        cols = cur.execute(
            f"""
            SELECT src_row, CAST(amount AS DOUBLE) * {zar} AS amount_zar,
                   currency_pair IN ({pairs}) AS supported, client_cif, account_number
            FROM trades WHERE batch_id = ? ORDER BY src_row
            """,
            [batch_id],
        ).fetchnumpy()
        src = np.asarray(cols["src_row"], dtype=np.int64)
        return cls(
            batch_id=batch_id,
            src_row=src,
            keys=trade_keys(fingerprint, src),
            amount_zar=np.asarray(cols["amount_zar"], dtype=np.float64),
            supported=np.asarray(cols["supported"], dtype=bool),
            cif=np.asarray(cols["client_cif"], dtype=object),
            account=np.asarray(cols["account_number"], dtype=object),
        )


@dataclass
class Outcomes:
    success: np.ndarray  # bool
    failure: np.ndarray  # int8 reason index (-1 for success)
    attempts: np.ndarray  # int64

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
    # Checks at the quote, before the bank's dice: registry, then the pair.
    checked = np.full(n, NONE, dtype=np.int8)
    if config.bank.registry_file:
        codes = ClientRegistry.from_csv(config.bank.registry_file).check(batch.cif, batch.account, batch.amount_zar)
        has = codes != None  # noqa: E711
        checked[has] = [REASON_INDEX[c] for c in codes[has]]
    checked[(checked == NONE) & ~batch.supported] = _UNSUPPORTED
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
    success = failure == NONE
    return Outcomes(success, failure, attempts)
