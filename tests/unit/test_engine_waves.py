"""How many rounds of calls a wave takes at a bank with latency (``worker.wave_rounds``)."""

from __future__ import annotations

import pytest

from fxbatch.engine.worker import MIN_WAVE_ROUNDS, WAVE_ROUNDS, wave_rounds


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
