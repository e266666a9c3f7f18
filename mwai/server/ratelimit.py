"""Optional per-client rate limit of the webhook: one token bucket per source address.

For installations where no reverse proxy limits the rate (MWAI_RATE_LIMIT_PER_S > 0).
Each source gets ``burst`` tokens, refilled at ``rate_per_s``; a request takes one
token or is answered 429 with the seconds until the next token in Retry-After.

Memory stays bounded whatever the number of sources: at most ``max_sources``
buckets are kept, the least recently seen one is dropped first. A dropped source
starts again with a full bucket, which is the state an idle source reaches anyway
after ``burst / rate_per_s`` seconds; a sender that rotates through more addresses
than that is better stopped by a firewall or a proxy (docs/security.md).

The clock is monotonic: a wall-clock jump neither blocks nor frees anyone.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_MAX_SOURCES = 10_000


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_monotonic: float


class RateLimiter:
    """Token buckets keyed by source; ``take(source)`` -> None or seconds to wait."""

    def __init__(self, rate_per_s: float, burst: int,
                 max_sources: int = DEFAULT_MAX_SOURCES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be > 0 (0 means: no limiter at all)")
        if burst < 1 or max_sources < 1:
            raise ValueError("burst and max_sources must be >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_sources = max_sources
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, source: str) -> float | None:
        """Take a token for ``source``: None if allowed, else seconds until one is back."""
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[source] = bucket
            if len(self._buckets) > self.max_sources:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(source)
            elapsed_s = max(0.0, now - bucket.updated_monotonic)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed_s * self.rate_per_s)
            bucket.updated_monotonic = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it succeeds."""
    return str(max(1, math.ceil(wait_s)))


def make_limiter(rate_per_s: float, burst: int) -> RateLimiter | None:
    """The limiter for these settings, or None when MWAI_RATE_LIMIT_PER_S is 0 (off)."""
    return RateLimiter(rate_per_s, burst) if rate_per_s > 0 else None
