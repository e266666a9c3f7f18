"""The dashboard's part of `mwai bench`: how fast its pages answer on a big database,
and what connected live viewers cost the webhook intake.

* pages (in the scale section, at every size): the runs page (first page and a page
  in the middle of history, through its keyset cursor) and a run page with its
  events, one request at a time, as a person clicking;
* viewers (its own section): webhooks/s at concurrency 32 in windows that
  alternate nobody watching and VIEWERS browsers' worth of Server-Sent Event
  streams open on the overview and the runs page, starting and ending without
  viewers. The ratio compares the means: on a shared machine a single pair of
  windows differs by more than what is measured.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from mwai.bench import fixtures
from mwai.bench import loadgen as lg

VIEWERS = 20
VIEWER_PATHS = ("/dashboard/live/", "/dashboard/live/runs")
CONNECT_TIMEOUT_S = 10.0


def page_latency(url: Callable[[str], str], db: Path, runs: int, duration_s: float,
                 load: Callable[[lg.LoadSpec], lg.LoadResult]) -> dict[str, Any]:
    """p50/p99 of the runs page (first and middle page) and of a run page."""
    middle = max(1, runs // 2)
    paths = {
        "runs_page": "/dashboard/runs",
        "runs_page_deep": f"/dashboard/runs?after={fixtures.runs_page_cursor(db, middle)}",
        "run_page": f"/dashboard/runs/{middle}",
    }
    return {name: load(lg.LoadSpec(url=url(path), concurrency=1, duration_s=duration_s,
                                   method="GET")).as_dict()
            for name, path in paths.items()}


class LiveViewers:
    """``count`` open SSE streams in a thread of their own, counting the updates."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.connected = 0
        self.failed = 0
        self.updates = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bench-viewers", daemon=True)

    def __enter__(self) -> LiveViewers:
        self._thread.start()
        if not self._ready.wait(CONNECT_TIMEOUT_S):
            self.failed += len(self.urls) - self.connected
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(CONNECT_TIMEOUT_S)

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = [asyncio.create_task(self._watch(session, url)) for url in self.urls]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, session: aiohttp.ClientSession, url: str) -> None:
        try:
            async with session.get(url) as response:
                if response.status != 200:
                    self.failed += 1
                    return
                self._connected()
                async for line in response.content:
                    if line.startswith(b"event: update"):
                        self.updates += 1
        except aiohttp.ClientError:
            self.failed += 1
        finally:
            if self.connected + self.failed >= len(self.urls):
                self._ready.set()

    def _connected(self) -> None:
        self.connected += 1
        if self.connected + self.failed >= len(self.urls):
            self._ready.set()


def viewers_cost(url: Callable[[str], str], spec: Callable[[], lg.LoadSpec],
                 load: Callable[[lg.LoadSpec], lg.LoadResult], rounds: int) -> dict[str, Any]:
    """Intake at c=32 in windows: without, then ``rounds`` times (with VIEWERS live
    viewers, without)."""
    urls = [url(VIEWER_PATHS[index % len(VIEWER_PATHS)]) for index in range(VIEWERS)]
    without = [load(spec())]
    watched: list[lg.LoadResult] = []
    connected, failed, updates, watched_s = VIEWERS, 0, 0, 0.0
    for _ in range(rounds):
        with LiveViewers(urls) as viewers:
            started = time.monotonic()
            watched.append(load(spec()))
            watched_s += time.monotonic() - started
            connected = min(connected, viewers.connected)
            failed += viewers.failed
            updates += viewers.updates
        without.append(load(spec()))
    baseline = sum(r.rate_per_s for r in without) / len(without)
    with_rate = sum(r.rate_per_s for r in watched) / len(watched)
    ratio = with_rate / baseline if baseline else None
    return {
        "viewers": VIEWERS,
        "viewer_paths": list(VIEWER_PATHS),
        "rounds": rounds,
        "viewers_connected": connected,
        "updates_received": updates,
        "updates_per_viewer_per_s": round(updates / VIEWERS / watched_s, 2) if watched_s
        else None,
        "without": {"rate_per_s": round(baseline, 1),
                    "windows": [r.as_dict() for r in without]},
        "with_viewers": {"rate_per_s": round(with_rate, 1),
                         "p99_ms": max((r.as_dict()["p99_ms"] or 0) for r in watched),
                         "windows": [r.as_dict() for r in watched]},
        "ratio": None if ratio is None else round(ratio, 3),
        "errors": sum(r.errors for r in [*without, *watched]) + failed,
    }
