"""The simulated bank's deterministic model: fates, failure mix, quote ids and the rate walk."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fxbatch.bank.model import (
    NONE,
    REASONS,
    REGISTRY_CODES,
    BankModel,
    RateWalk,
    trade_keys,
    uniforms,
)
from fxbatch.models import FAILURES, BankSettings, FailureCode

FINGERPRINT = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
MIDS = {"USD/ZAR": 18.0, "EUR/ZAR": 19.5, "GBP/ZAR": 22.75}


def keys(n: int, fingerprint: str = FINGERPRINT) -> np.ndarray:
    """Trade keys as the engine makes them: the batch fingerprint and spreadsheet rows 2..n+1."""
    return trade_keys(fingerprint, np.arange(2, n + 2))


def model(seed: int = 42, **settings: object) -> BankModel:
    return BankModel(seed, BankSettings.model_validate(settings))


def codes(reason_idx: np.ndarray) -> list[FailureCode]:
    return [REASONS[i] for i in reason_idx if i != NONE]


# -- trade keys ---------------------------------------------------------------------------------


def test_a_trade_key_depends_on_the_fingerprint_and_row_only() -> None:
    k = keys(1000)
    np.testing.assert_array_equal(k, keys(1000))
    np.testing.assert_array_equal(trade_keys(FINGERPRINT, np.array([501, 2])), k[[499, 0]])
    assert len(np.unique(k)) == 1000
    other = keys(1000, "0" * 64)
    assert not np.any(other == k)


def test_uniforms_are_in_the_unit_interval_and_vary_with_seed_attempt_and_salt() -> None:
    k = keys(10_000)
    u = uniforms(1, k, 1, 11)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert 0.49 < u.mean() < 0.51
    for other in (uniforms(2, k, 1, 11), uniforms(1, k, 2, 11), uniforms(1, k, 1, 12)):
        assert np.mean(other == u) < 0.001


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_and_keys_give_the_same_fates_and_quote_ids() -> None:
    k = keys(20_000)
    a, b = model(7, success_rate=0.5).fates(k), model(7, success_rate=0.5).fates(k)
    np.testing.assert_array_equal(a.success, b.success)
    np.testing.assert_array_equal(a.reason, b.reason)
    np.testing.assert_array_equal(a.transient, b.transient)
    attempt = np.ones(len(k), dtype=np.int64)
    np.testing.assert_array_equal(model(7).quote_ids(k, attempt), model(7).quote_ids(k, attempt))


def test_a_different_seed_gives_different_fates_and_quote_ids() -> None:
    k = keys(20_000)
    a, b = model(7, success_rate=0.5).fates(k), model(8, success_rate=0.5).fates(k)
    assert 0.4 < np.mean(a.success != b.success) < 0.6  # independent coins: they disagree half the time
    attempt = np.ones(len(k), dtype=np.int64)
    assert not np.any(model(7).quote_ids(k, attempt) == model(8).quote_ids(k, attempt))


def test_quote_ids_are_positive_unique_and_new_on_every_attempt() -> None:
    k = keys(50_000)
    m = model()
    first = m.quote_ids(k, np.ones(len(k), dtype=np.int64))
    second = m.quote_ids(k, np.full(len(k), 2, dtype=np.int64))
    assert first.min() > 0 and second.min() > 0
    assert len(np.unique(np.concatenate([first, second]))) == 2 * len(k)


def test_fates_do_not_depend_on_how_the_keys_are_split_into_chunks() -> None:
    k = keys(10_000)
    m = model(3, success_rate=0.7)
    whole = m.fates(k)
    cuts = [0, 1, 7, 1000, 4096, 4097, 9999, 10_000]
    parts = [m.fates(k[a:b]) for a, b in itertools.pairwise(cuts)]
    for name in ("success", "reason", "transient"):
        np.testing.assert_array_equal(getattr(whole, name), np.concatenate([getattr(p, name) for p in parts]))


def test_fates_do_not_depend_on_the_order_of_the_keys() -> None:
    k = keys(5000)
    m = model(3, success_rate=0.7)
    order = np.random.default_rng(0).permutation(len(k))
    shuffled = m.fates(k[order])
    whole = m.fates(k)
    np.testing.assert_array_equal(shuffled.success, whole.success[order])
    np.testing.assert_array_equal(shuffled.reason, whole.reason[order])


@pytest.mark.parametrize(
    "settings",
    [
        {"success_rate": 0.7},
        {"success_rate": 0.0},
        {"success_rate": 1.0},
        {"success_rate": 0.5, "transient_absorb_share": 0.9,
         "failure_mix": {"RATE_UNAVAILABLE": 1.0, "SERVICE_UNAVAILABLE": 2.0, "PRICE_MOVED": 0.5, "INSUFFICIENT_FUNDS": 3.0}},
    ],
)  # fmt: skip
def test_one_trade_fate_is_the_same_draw_as_the_fates_of_many(settings: dict[str, object]) -> None:
    """The HTTP simulator decides one trade at a time (``fate``); the in-process bank a wave at
    a time (``fates``): the same trade must meet the same fate in both."""
    k = np.concatenate([keys(20_000), np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)])
    for seed in (0, 42, 2**63 + 5):
        m = model(seed, **settings)
        many = m.fates(k)
        one = [m.fate(int(key)) for key in k]
        assert one == list(zip(many.reason.tolist(), many.transient.tolist(), strict=True))
        assert {r for r, _ in one} != {NONE} or settings["success_rate"] == 1.0


# -- rates of success and failure -----------------------------------------------------------------

N = 200_000


@pytest.mark.parametrize("rate", [0.95, 0.6, 0.0, 1.0])
def test_the_success_share_is_the_success_rate_within_binomial_noise(rate: float) -> None:
    fates = model(11, success_rate=rate).fates(keys(N))
    share = fates.success.mean()
    sigma = np.sqrt(rate * (1 - rate) / N)
    assert abs(share - rate) <= 5 * sigma + 1e-12
    # the two descriptions of a fate agree: a reason exactly where the trade is fated to fail
    np.testing.assert_array_equal(fates.reason == NONE, fates.success)


def test_failure_reasons_follow_the_weights_of_the_mix() -> None:
    settings = BankSettings(success_rate=0.6)
    fates = BankModel(5, settings).fates(keys(N))
    failing = codes(fates.reason)
    mix = settings.normalised_mix()
    observed = {c: failing.count(c) for c in mix}
    assert sum(observed.values()) == len(failing)  # nothing outside the mix
    expected = {c: len(failing) * w for c, w in mix.items()}
    chi2 = sum((observed[c] - expected[c]) ** 2 / expected[c] for c in mix)
    assert chi2 < 35, (chi2, observed)  # 9 degrees of freedom: the 0.1% critical value is 27.9


def test_a_reason_with_zero_weight_never_occurs() -> None:
    fates = model(5, success_rate=0.0).fates(keys(50_000))
    assert FailureCode.NOT_AUTHORISED not in set(codes(fates.reason))
    assert FailureCode.NOT_AUTHORISED not in set(codes(fates.transient))


def test_a_custom_mix_gives_only_its_reasons_in_its_proportions() -> None:
    mix = {FailureCode.INSUFFICIENT_FUNDS: 3.0, FailureCode.MARKET_CLOSED: 1.0}
    fates = model(5, success_rate=0.0, failure_mix=mix).fates(keys(40_000))
    failing = codes(fates.reason)
    assert set(failing) == set(mix)
    share = failing.count(FailureCode.INSUFFICIENT_FUNDS) / len(failing)
    assert abs(share - 0.75) < 5 * np.sqrt(0.75 * 0.25 / len(failing))


def test_registry_codes_never_come_from_the_random_mix() -> None:
    heavy = {code: 100.0 for code in REGISTRY_CODES} | {FailureCode.MARKET_CLOSED: 1.0}
    fates = model(5, success_rate=0.0, failure_mix=heavy).fates(keys(20_000))
    assert set(codes(fates.reason)) == {FailureCode.MARKET_CLOSED}


def test_a_mix_of_only_registry_codes_falls_back_to_a_non_registry_reason() -> None:
    only_registry = {code: 1.0 for code in REGISTRY_CODES}
    fates = model(5, success_rate=0.0, failure_mix=only_registry).fates(keys(5000))
    assert not set(codes(fates.reason)) & REGISTRY_CODES
    assert set(codes(fates.reason)) == {FailureCode.INSUFFICIENT_FUNDS}


def test_the_default_mix_never_draws_a_registry_code() -> None:
    fates = model(5, success_rate=0.0).fates(keys(N))
    assert not set(codes(fates.reason)) & REGISTRY_CODES
    assert not set(codes(fates.transient)) & REGISTRY_CODES


def test_transient_errors_come_only_on_trades_fated_to_succeed_and_only_with_retryable_codes() -> None:
    fates = model(9, success_rate=0.8).fates(keys(N))
    has_transient = fates.transient != NONE
    assert has_transient.any()
    assert fates.success[has_transient].all()
    assert all(FAILURES[c].auto_retry for c in set(codes(fates.transient)))


@pytest.mark.parametrize("absorb", [0.25, 0.5, 0.75])
def test_transient_errors_are_the_configured_share_of_retryable_errors(absorb: float) -> None:
    fates = model(9, success_rate=0.8, transient_absorb_share=absorb).fates(keys(N))
    transient = int(np.sum(fates.transient != NONE))
    persistent = sum(1 for c in codes(fates.reason) if FAILURES[c].auto_retry)
    share = transient / (transient + persistent)
    assert abs(share - absorb) < 5 * np.sqrt(absorb * (1 - absorb) / (transient + persistent))


def test_no_transient_errors_when_every_trade_succeeds_or_none_are_absorbed() -> None:
    assert np.all(model(9, success_rate=1.0).fates(keys(20_000)).transient == NONE)
    assert np.all(model(9, success_rate=0.8, transient_absorb_share=0.0).fates(keys(20_000)).transient == NONE)


# -- the rate walk ---------------------------------------------------------------------------------


def walk(seed: int = 42, vol: float = 10.0) -> RateWalk:
    return RateWalk(seed, MIDS, vol)


def random_requests(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    pairs = np.array(sorted(MIDS), dtype=object)[rng.integers(0, len(MIDS), n)]
    # steps across many blocks and past the first groups of blocks (RateWalk.BLOCK * RateWalk.GROUP steps each)
    steps = np.concatenate([rng.integers(0, 20_000, n // 2), rng.integers(0, 6_000_000, n - n // 2)])
    assert steps.max() > 2 * RateWalk.BLOCK * RateWalk.GROUP, "reaches past the first groups of blocks"
    return pairs, steps


def test_the_mid_of_a_pair_at_a_step_does_not_depend_on_order_or_batching() -> None:
    pairs, steps = random_requests(1500)
    at_once = walk().mid(pairs, steps)
    assert not np.isnan(at_once).any()

    backwards = walk()
    order = np.argsort(-steps, kind="stable")
    reversed_answer = np.empty(len(steps))
    for part in np.array_split(order, 37):
        reversed_answer[part] = backwards.mid(pairs[part], steps[part])
    np.testing.assert_array_equal(reversed_answer, at_once)

    one_by_one = walk()
    singles = np.array([one_by_one.mid(pairs[i : i + 1], steps[i : i + 1])[0] for i in range(0, len(steps), 97)])
    np.testing.assert_array_equal(singles, at_once[::97])


def test_a_far_step_asked_first_gives_the_same_mid_as_asked_last() -> None:
    far = np.array([5_000_000])
    pair = np.array(["USD/ZAR"], dtype=object)
    cold = walk().mid(pair, far)[0]
    warm = walk()
    warm.mid(np.array(["USD/ZAR"] * 3, dtype=object), np.array([0, 10, 4_300_000]))
    assert warm.mid(pair, far)[0] == cold


def test_the_walk_is_seeded() -> None:
    pairs, steps = random_requests(500)
    np.testing.assert_array_equal(walk(1).mid(pairs, steps), walk(1).mid(pairs, steps))
    assert np.all(walk(1).mid(pairs, steps) != walk(2).mid(pairs, steps))


def test_the_walk_starts_at_the_table_mid_and_moves_with_volatility() -> None:
    usd = np.array(["USD/ZAR"] * 1000, dtype=object)
    steps = np.arange(1000)
    moved = walk(vol=10.0).mid(usd, steps)
    assert abs(moved[0] / MIDS["USD/ZAR"] - 1) < 0.01
    assert len(np.unique(moved)) > 900
    flat = walk(vol=0.0).mid(usd, steps)
    np.testing.assert_allclose(flat, MIDS["USD/ZAR"])


def test_a_pair_missing_from_the_rate_table_has_no_mid() -> None:
    mid = walk().mid(np.array(["USD/ZAR", "XAU/ZAR"], dtype=object), np.array([5, 5]))
    assert not np.isnan(mid[0]) and np.isnan(mid[1])


def test_pairs_can_be_given_as_indices_with_the_same_answer() -> None:
    w = walk()
    pairs, steps = random_requests(300)
    idx = w.pair_index(pairs)
    np.testing.assert_array_equal(walk().mid(pairs, steps, idx), w.mid(pairs, steps))


def test_a_few_steps_are_priced_exactly_as_the_vectorised_path_prices_them() -> None:
    mids = {"USD/ZAR": 18.2, "EUR/ZAR": 19.9, "GBP/ZAR": 23.1}
    one_by_one, vectorised = RateWalk(7, mids, 0.5), RateWalk(7, mids, 0.5)
    vectorised.SMALL = 0
    rng = np.random.default_rng(3)
    for n in (1, 7, RateWalk.SMALL):
        pair_idx = rng.integers(-1, len(mids), n)  # -1: a pair the bank does not quote
        steps = rng.integers(0, 3 * RateWalk.BLOCK, n)  # across blocks
        a = one_by_one.mid(np.zeros(0), steps, pair_idx)
        b = vectorised.mid(np.zeros(0), steps, pair_idx)
        assert np.array_equal(a, b, equal_nan=True)
        assert np.isnan(a[pair_idx < 0]).all() and not np.isnan(a[pair_idx >= 0]).any()
