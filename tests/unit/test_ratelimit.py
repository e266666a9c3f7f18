"""The per-source token bucket: burst, refill, Retry-After, bounded memory."""

from __future__ import annotations

import pytest

from mwai.server.ratelimit import RateLimiter, make_limiter, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_burst_then_limited_then_refilled() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait_s = limiter.take("a")
    assert wait_s == pytest.approx(0.5)
    assert retry_after_header(wait_s) == "1"
    clock.now_s += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") is not None


def test_sources_are_independent() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=Clock())
    assert limiter.take("a") is None
    assert limiter.take("a") is not None
    assert limiter.take("b") is None


def test_refill_never_exceeds_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=10.0, burst=2, clock=clock)
    limiter.take("a")
    clock.now_s += 3600
    assert [limiter.take("a") is None for _ in range(3)] == [True, True, False]


def test_a_clock_going_backwards_frees_no_one_and_blocks_no_one() -> None:
    clock = Clock()
    limiter = RateLimiter(rate_per_s=1.0, burst=1, clock=clock)
    assert limiter.take("a") is None
    clock.now_s -= 3600
    assert limiter.take("a") is not None
    clock.now_s += 1.0
    assert limiter.take("a") is None


def test_memory_is_bounded_and_the_least_recently_seen_source_goes_first() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_sources=100, clock=Clock())
    assert limiter.take("keep") is None
    for number in range(10_000):
        limiter.take(f"10.0.{number // 256}.{number % 256}")
        if number % 50 == 0:
            assert limiter.take("keep") is not None  # seen recently: still limited
    assert len(limiter) == 100


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(3.0) == "3"


def test_zero_rate_means_no_limiter() -> None:
    assert make_limiter(0, 20) is None
    assert isinstance(make_limiter(5, 20), RateLimiter)
    with pytest.raises(ValueError):
        RateLimiter(0, 1)
