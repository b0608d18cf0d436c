"""The simulated bank's deterministic model: who fails, why, and at what rate.

Every decision is a function of (seed, trade key, attempt) only, computed for whole arrays at
once, so the outcome of a trade never depends on concurrency, chunking, timing or resumption.

Fate of a trade (attempt-independent): SUCCESS with probability ``success_rate``; otherwise a
reason drawn from the failure mix. A failing reason recurs on every attempt (retries do not
help it). Transient errors come on top, on the first attempt of trades fated to succeed: a
retry absorbs them. Their frequency is set so that they are ``transient_absorb_share`` of all
retryable errors seen, which keeps the SUCCESS fraction equal to ``success_rate``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fxbatch.models import FAILURES, BankSettings, FailureCode, Stage
from fxbatch.money import pip_sizes

REGISTRY_CODES = frozenset(
    {
        FailureCode.CLIENT_NOT_FOUND,
        FailureCode.ACCOUNT_MISMATCH,
        FailureCode.ACCOUNT_BLOCKED,
        FailureCode.LIMIT_EXCEEDED,
    }
)
_M64 = (1 << 64) - 1


def check_settings(settings: BankSettings, *, simulated: bool = True) -> None:
    """Refuse settings the bank would silently ignore or replace: a failure mix weighing nothing
    (the trades that fail need a reason; only the simulated bank draws one), client-check codes
    without a registry."""
    from fxbatch.errors import SettingsError

    if simulated and settings.success_rate < 1 and not any(w > 0 for w in settings.failure_mix.values()):
        raise SettingsError(
            "failure_mix gives no reason a weight above 0: the trades that fail need one (or a success_rate of 1)."
        )
    if settings.registry_file:
        return
    weighted = sorted(c.value for c, w in settings.failure_mix.items() if w > 0 and c in REGISTRY_CODES)
    if weighted:
        raise SettingsError(
            f"failure_mix gives weight to {', '.join(weighted)}, which only a client registry produces "
            "(without one every well-formed client and account is accepted): set registry_file or give them 0."
        )


SALT_FATE, SALT_REASON, SALT_TRANSIENT, SALT_TREASON, SALT_QUOTE_ID = 11, 12, 13, 14, 15


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over a uint64 array (wrapping arithmetic, no warnings)."""
    with np.errstate(over="ignore"):  # modular arithmetic is the point
        z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(z ^ (z >> np.uint64(31)), dtype=np.uint64)


def _mix64_int(z: int) -> int:
    """``_mix64`` of one value, in Python integers (the same bits, without numpy's per-call cost)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _scalar_mix(*parts: int) -> np.uint64:
    acc = 0x243F6A8885A308D3
    for p in parts:
        acc = (acc * 0x100000001B3 ^ (p & _M64)) & _M64
        acc = (acc ^ (acc >> 29)) * 0xBF58476D1CE4E5B9 & _M64
    return np.uint64(acc)


def trade_keys(fingerprint: str, src_rows: np.ndarray) -> np.ndarray:
    """Stable 64-bit identity of each trade: its batch file's fingerprint and its row."""
    base = _scalar_mix(int(fingerprint[:15], 16))
    return _mix64(np.asarray(src_rows, dtype=np.uint64) ^ base)


def hashes(seed: int, keys: np.ndarray, attempt: np.ndarray | int, salt: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        att = np.asarray(attempt, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return _mix64(keys ^ _mix64(att ^ _scalar_mix(seed, salt)))


def uniforms(seed: int, keys: np.ndarray, attempt: np.ndarray | int, salt: int) -> np.ndarray:
    """U[0, 1) per trade, a pure function of (seed, key, attempt, salt)."""
    return np.asarray(hashes(seed, keys, attempt, salt) >> np.uint64(11), dtype=np.float64) * (2.0**-53)


# Failure reasons travel as small integers inside the bank and the engine: REASONS[i], with -1
# for none. ``CODE_OBJ[i + 1]`` is the API's string (None for -1), so arrays convert with one take.
REASONS: tuple[FailureCode, ...] = tuple(FailureCode)
REASON_INDEX = {c.value: i for i, c in enumerate(REASONS)}
NONE = -1
CODE_OBJ = np.array([None, *[c.value for c in REASONS]], dtype=object)
MESSAGE_OBJ = np.array([None, *[FAILURES[c].message for c in REASONS]], dtype=object)
RESULT_CODE = np.array([0, *[FAILURES[c].result_code for c in REASONS]], dtype=np.int64)
RETRY_HELPS_OBJ = np.array([None, *[FAILURES[c].retry_helps for c in REASONS]], dtype=object)
AUTO_RETRY = np.array([False, *[FAILURES[c].auto_retry for c in REASONS]])
BACKS_OFF = np.array([False, *[FAILURES[c].backoff for c in REASONS]])
QUOTE_STAGE = np.array([False, *[FAILURES[c].stage is Stage.QUOTE for c in REASONS]])
BOOK_STAGE = np.array([False, *[FAILURES[c].stage is Stage.BOOK for c in REASONS]])
TIMEOUT = REASON_INDEX[FailureCode.TIMEOUT_UNKNOWN.value]


@dataclass
class Fates:
    """Attempt-independent decisions for a set of trades (reasons as REASONS indices)."""

    success: np.ndarray  # bool
    reason: np.ndarray  # int8: failing reason, -1 for trades fated to succeed
    transient: np.ndarray  # int8: first-attempt transient error, -1 for none


@dataclass
class BankModel:
    seed: int
    settings: BankSettings
    _codes: np.ndarray = field(init=False)
    _cum: np.ndarray = field(init=False)
    _t_codes: np.ndarray = field(init=False)
    _t_cum: np.ndarray = field(init=False)
    absorb_prob: float = field(init=False)

    def __post_init__(self) -> None:
        mix = {c: w for c, w in self.settings.failure_mix.items() if w > 0 and c not in REGISTRY_CODES}
        if not mix:
            mix = {FailureCode.INSUFFICIENT_FUNDS: 1.0}
        total = sum(mix.values())
        self._codes = np.array([REASON_INDEX[c.value] for c in mix], dtype=np.int8)
        self._cum = np.cumsum([w / total for w in mix.values()])
        retryable = {c: w for c, w in mix.items() if FAILURES[c].auto_retry}
        p = self.settings.success_rate
        share = sum(retryable.values()) / total
        a = self.settings.transient_absorb_share
        persistent = (1 - p) * share  # trades that fail with a retryable reason, every attempt
        absorbed = a * persistent / (1 - a) if a < 1 else 0.0
        self.absorb_prob = min(1.0, absorbed / p) if p > 0 else 0.0
        if not retryable:
            retryable = {FailureCode.RATE_UNAVAILABLE: 1.0}
        t_total = sum(retryable.values())
        self._t_codes = np.array([REASON_INDEX[c.value] for c in retryable], dtype=np.int8)
        self._t_cum = np.cumsum([w / t_total for w in retryable.values()])
        # For ``fate``: the attempt-0 part of each salt's hash, and the tables as Python values.
        self._salted = {s: _mix64_int(int(_scalar_mix(self.seed, s))) for s in (SALT_FATE, SALT_REASON, SALT_TRANSIENT, SALT_TREASON)}  # fmt: skip
        self._lists = (self._codes.tolist(), self._cum.tolist(), self._t_codes.tolist(), self._t_cum.tolist())

    def fates(self, keys: np.ndarray) -> Fates:
        success = uniforms(self.seed, keys, 0, SALT_FATE) < self.settings.success_rate
        pick = np.searchsorted(self._cum, uniforms(self.seed, keys, 0, SALT_REASON), side="right")
        reason = np.where(success, NONE, self._codes[np.minimum(pick, len(self._codes) - 1)]).astype(np.int8)
        has_t = success & (uniforms(self.seed, keys, 0, SALT_TRANSIENT) < self.absorb_prob)
        t_pick = np.searchsorted(self._t_cum, uniforms(self.seed, keys, 0, SALT_TREASON), side="right")
        t_code = self._t_codes[np.minimum(t_pick, len(self._t_codes) - 1)]
        transient = np.where(has_t, t_code, NONE).astype(np.int8)
        return Fates(success, reason, transient)

    def fate(self, key: int) -> tuple[int, int]:
        """``fates`` of one trade key as (reason, transient), in plain Python: the same draws
        (tested), about twenty times cheaper than numpy on a one-element array (the HTTP
        simulator decides one request at a time)."""
        salted, (codes, cum, t_codes, t_cum) = self._salted, self._lists

        def uniform(salt: int) -> float:
            return (_mix64_int(key ^ salted[salt]) >> 11) * 2.0**-53

        if uniform(SALT_FATE) >= self.settings.success_rate:
            return codes[min(bisect.bisect_right(cum, uniform(SALT_REASON)), len(codes) - 1)], NONE
        if not uniform(SALT_TRANSIENT) < self.absorb_prob:
            return NONE, NONE
        return NONE, t_codes[min(bisect.bisect_right(t_cum, uniform(SALT_TREASON)), len(t_codes) - 1)]

    def quote_ids(self, keys: np.ndarray, attempt: np.ndarray) -> np.ndarray:
        return np.asarray(hashes(self.seed, keys, attempt, SALT_QUOTE_ID) >> np.uint64(2), dtype=np.int64) + 1


class RateWalk:
    """Mid rates moved by a seeded random walk over market time (the trade's step), quoted as a
    dealer quotes them: to a tenth of a pip (17.60512 on USD/ZAR, 152.951 on USD/JPY).

    Built lazily in blocks so any step can be priced in any order with the same answer.
    """

    BLOCK = 65536
    SMALL = 64  # up to this many steps are priced one by one (see mid)
    GROUP = 16  # blocks per group of block-level increments (a group spans ~1M steps)

    def __init__(self, seed: int, mids: dict[str, float], volatility_bps: float) -> None:
        self.seed = seed
        self.pairs = sorted(mids)
        self.index = {p: i for i, p in enumerate(self.pairs)}
        self.mid0 = np.array([mids[p] for p in self.pairs])
        self.per_unit = 10 / pip_sizes(self.pairs)  # tenths of a pip in one unit of the rate
        self.vol = volatility_bps / 10_000
        self._blocks: dict[tuple[int, int], np.ndarray] = {}
        self._bases: dict[int, np.ndarray] = {}

    def _rng(self, *parts: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & _M64, *parts])

    def _base(self, pair: int, block: int) -> float:
        base = self._bases.get(pair, np.zeros(0))
        if block >= len(base):
            groups = block // self.GROUP + 1
            incs = [self._rng(pair, 1, g).standard_normal(self.GROUP) * np.sqrt(self.BLOCK) for g in range(groups)]
            base = np.concatenate([[0.0], np.cumsum(np.concatenate(incs))])
            self._bases[pair] = base
        return float(base[block])

    def _block(self, pair: int, block: int) -> np.ndarray:
        arr = self._blocks.get((pair, block))
        if arr is None:
            if len(self._blocks) > 4096:
                self._blocks.clear()
            arr = self._base(pair, block) + np.cumsum(self._rng(pair, 2, block).standard_normal(self.BLOCK))
            self._blocks[(pair, block)] = arr
        return arr

    def pair_index(self, pairs: np.ndarray) -> np.ndarray:
        """Index of each pair in ``self.pairs`` (-1 for pairs the bank does not quote)."""
        if not len(pairs):
            return np.zeros(0, dtype=np.int64)
        codes, uniq = pd.factorize(pairs)
        return np.array([self.index.get(p, -1) for p in uniq] + [-1], dtype=np.int64)[codes]

    def mid(self, pairs: np.ndarray, steps: np.ndarray, pair_idx: np.ndarray | None = None) -> np.ndarray:
        """Mid rate of each ``pairs[i]`` at market time ``steps[i]`` (NaN for unknown pairs).

        ``pair_idx`` may give the pairs as indices into ``self.pairs`` instead (-1 = unknown).
        """
        out = np.full(len(steps), np.nan)
        steps = np.asarray(steps, dtype=np.int64)
        if pair_idx is None:
            pair_idx = self.pair_index(pairs)
        if len(steps) <= self.SMALL:
            # A few trades (an HTTP bank's batch, a retry wave): look each level up in Python,
            # then the same numpy arithmetic as below (np.unique per pair and block costs more).
            level = np.zeros(len(steps))
            for i, (p, step) in enumerate(zip(pair_idx.tolist(), steps.tolist(), strict=True)):
                if p >= 0:
                    level[i] = self._block(p, step // self.BLOCK)[step % self.BLOCK]
            known = pair_idx >= 0
            at = pair_idx[known]
            out[known] = (
                np.round(self.mid0[at] * np.exp(self.vol * level[known]) * self.per_unit[at]) / self.per_unit[at]
            )
            return out
        blocks = steps // self.BLOCK
        offs = steps % self.BLOCK
        for p in np.unique(pair_idx):
            if p < 0:
                continue
            sel = np.flatnonzero(pair_idx == p)
            pair_blocks, pair_offs = blocks[sel], offs[sel]
            level = np.empty(len(sel))
            # Index each block where it is kept (copying blocks into one table cost more than the lookups).
            for b in np.unique(pair_blocks):
                at = pair_blocks == b
                level[at] = self._block(int(p), int(b))[pair_offs[at]]
            out[sel] = np.round(self.mid0[p] * np.exp(self.vol * level) * self.per_unit[p]) / self.per_unit[p]
        return out
