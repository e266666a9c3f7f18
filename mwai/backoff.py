"""Exponential backoff with "equal jitter": the one delay rule of every retry in mwai.

Retry ``attempt`` (1 for the first retry) waits between half and all of
``min(max_s, base_s * 2 ** (attempt - 1))``. The doubling spreads the retries of
a struggling service out; the random half keeps the many runs or requests that
failed together from coming back together; the fixed half keeps a retry from
coming back at once. A Retry-After sent by the service is a floor.

Used by the run queue (a run re-queued after a TransientError) and by the HTTP
client (a request retried within one attempt of a run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

# (low, high) -> a number in [low, high]. random.uniform, unless a test injects its own.
Uniform = Callable[[float, float], float]

# 2.0 ** 1024 overflows a float; any exponent this large is far past every max_s anyway.
_MAX_EXPONENT = 1000


def ceiling_s(attempt: int, base_s: float, max_s: float) -> float:
    """The longest wait before retry ``attempt``: doubling from ``base_s``, capped at ``max_s``."""
    exponent = min(max(0, attempt - 1), _MAX_EXPONENT)
    return min(max_s, base_s * 2.0 ** exponent)


def backoff_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    retry_after_max_s: float = math.inf,
    uniform: Uniform = random.uniform,
) -> float:
    """The delay before retry ``attempt``: in [ceiling/2, ceiling], at least Retry-After.

    ``retry_after_s`` counts up to ``retry_after_max_s``: the run queue caps it at
    its own longest delay, while the HTTP client takes it whole so that it can
    tell a wait longer than it is willing to make and hand the hint to the queue.
    """
    ceiling = ceiling_s(attempt, base_s, max_s)
    delay_s = ceiling / 2 + uniform(0.0, ceiling / 2)
    if retry_after_s is not None:
        delay_s = max(delay_s, min(retry_after_s, retry_after_max_s))
    return delay_s
