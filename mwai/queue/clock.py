"""The queue's clocks, in one place.

Every time the queue writes (created_at, leases, heartbeats...) comes from
``now_s()``, read through this module (``clock.now_s()``), so a test can set the
clock back or make it jump by patching ``mwai.queue.clock.now_s`` alone. The
pool tells a wall-clock jump from time passing with ``monotonic_s()``: a test
patches both to move time on without waiting for it.
"""

from __future__ import annotations

import time


def now_s() -> float:
    """Unix epoch seconds: the database keeps wall-clock times (several processes share it)."""
    return time.time()


def monotonic_s() -> float:
    """Seconds of a clock no one can set: how much time really passed."""
    return time.monotonic()
