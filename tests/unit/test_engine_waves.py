"""How many rounds of calls a wave takes at a bank with latency (``worker.wave_rounds``)."""

from __future__ import annotations

import numpy as np
import pytest

from fxbatch.engine.worker import MIN_WAVE_ROUNDS, WAVE_ROUNDS, quote_life, wave_rounds


@pytest.mark.parametrize(
    ("round_s", "life_s", "rounds"),
    [
        (None, None, WAVE_ROUNDS),  # nothing known
        (0.05, None, WAVE_ROUNDS),  # 4 s hold more than 64 rounds of 50 ms
        (0.5, None, MIN_WAVE_ROUNDS),  # 8 rounds fit in 4 s: not fewer than the minimum
        (0.05, 30.0, WAVE_ROUNDS),  # 64 rounds are 3.2 s: well within a third of 30 s
        (2.0, 30.0, 5),  # the minimum 16 rounds would take 32 s: quotes dead before they are booked
        (0.05, 1.0, 6),  # a third of a 1 s quote life holds 6 rounds of 50 ms
        (100.0, 30.0, 1),  # slower than a quote's life: one round at a time, never none
    ],
)  # fmt: skip
def test_a_wave_fits_in_a_third_of_a_quotes_life(round_s: float | None, life_s: float | None, rounds: int) -> None:
    assert wave_rounds(round_s, life_s) == rounds


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("lives", "life"),
    [
        ([29.0, 30.0, 31.0, 1.0], 29.5),  # the median life left: robust to an odd quote
        ([29.0, np.nan, 30.0], 29.5),  # a quote that says nothing is left out
        ([], 30.0),  # nothing said: the last known life
        ([-5.0, -4.0], 30.0),  # already expired by our clock (a bank clock far behind): the last
        ([7230.0, 7231.0], 30.0),  # two hours: a time zone misread, not a quote's life: the last
        ([600.0], 600.0),  # ten minutes is still taken as said
    ],
)  # fmt: skip
def test_the_life_of_quotes_is_read_from_their_expiry_within_reason(lives: list[float], life: float) -> None:
    assert quote_life(NOW + np.array(lives, dtype=float), NOW, 30.0) == life
