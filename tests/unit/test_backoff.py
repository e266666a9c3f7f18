"""The one backoff rule: exponential growth, 'equal jitter', a cap, Retry-After as a floor."""

from __future__ import annotations

import random

import pytest

from mwai.backoff import backoff_s, ceiling_s


def lowest(low: float, high: float) -> float:
    return low


def highest(low: float, high: float) -> float:
    return high


@pytest.mark.parametrize("attempt", range(1, 8))
def test_each_attempt_waits_between_half_and_all_of_its_ceiling(attempt: int) -> None:
    ceiling = 0.5 * 2 ** (attempt - 1)
    draw = random.Random(attempt).uniform
    delays = [backoff_s(attempt, base_s=0.5, max_s=1000.0, uniform=draw) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    # The jitter spreads the delays over the upper half, not onto one value.
    assert max(delays) - min(delays) > ceiling / 4
    assert backoff_s(attempt, base_s=0.5, max_s=1000.0, uniform=lowest) == ceiling / 2
    assert backoff_s(attempt, base_s=0.5, max_s=1000.0, uniform=highest) == ceiling


def test_the_random_half_is_drawn_between_zero_and_half_the_ceiling() -> None:
    asked: list[tuple[float, float]] = []

    def recording(low: float, high: float) -> float:
        asked.append((low, high))
        return high / 3

    assert backoff_s(3, base_s=1.0, max_s=100.0, uniform=recording) == pytest.approx(2.0 + 2 / 3)
    assert asked == [(0.0, 2.0)]


def test_delays_double_from_one_attempt_to_the_next() -> None:
    floors = [backoff_s(n, base_s=1.0, max_s=1000.0, uniform=lowest) for n in range(1, 7)]
    assert floors == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert [ceiling_s(n, 1.0, 1000.0) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_attempt_zero_or_below_counts_as_the_first_retry() -> None:
    first = backoff_s(1, base_s=2.0, max_s=60.0, uniform=highest)
    assert first == 2.0
    assert backoff_s(0, base_s=2.0, max_s=60.0, uniform=highest) == first
    assert backoff_s(-3, base_s=2.0, max_s=60.0, uniform=highest) == first


def test_the_delay_is_capped_at_max_s() -> None:
    for attempt in (5, 6, 20, 10_000):  # 10_000: no float overflow either
        assert backoff_s(attempt, base_s=1.0, max_s=10.0, uniform=highest) == 10.0
        assert backoff_s(attempt, base_s=1.0, max_s=10.0, uniform=lowest) == 5.0
        assert ceiling_s(attempt, 1.0, 10.0) == 10.0


def test_retry_after_is_a_floor_never_a_shortcut() -> None:
    # Longer than the backoff: the service asked to wait that long.
    assert backoff_s(1, base_s=1.0, max_s=8.0, retry_after_s=30.0, uniform=highest) == 30.0
    # Shorter than the backoff: the backoff stands.
    assert backoff_s(4, base_s=1.0, max_s=8.0, retry_after_s=0.5, uniform=lowest) == 4.0
    assert backoff_s(4, base_s=1.0, max_s=8.0, retry_after_s=0.0, uniform=lowest) == 4.0
    assert backoff_s(4, base_s=1.0, max_s=8.0, retry_after_s=None, uniform=lowest) == 4.0


def test_retry_after_counts_up_to_its_own_bound() -> None:
    # The run queue bounds every wait by MWAI_RETRY_MAX_S, Retry-After included.
    assert backoff_s(1, base_s=1.0, max_s=8.0, retry_after_s=300.0, retry_after_max_s=8.0,
                     uniform=lowest) == 8.0
    assert backoff_s(1, base_s=1.0, max_s=8.0, retry_after_s=5.0, retry_after_max_s=8.0,
                     uniform=lowest) == 5.0
    # Without a bound (the HTTP client) it is taken whole, so a long wait can be noticed.
    assert backoff_s(1, base_s=1.0, max_s=8.0, retry_after_s=300.0, uniform=lowest) == 300.0


def test_without_an_injected_source_the_delays_still_keep_their_bounds() -> None:
    delays = [backoff_s(3, base_s=1.0, max_s=100.0) for _ in range(100)]
    assert all(2.0 <= delay <= 4.0 for delay in delays)
    assert len(set(delays)) > 1  # random.uniform is the default source
