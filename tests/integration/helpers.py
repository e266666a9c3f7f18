"""Helpers for integration tests: processors with controllable behaviour, db reads."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mwai.errors import TransientError
from mwai.queue.processor import RunContext


def db_rows(path: str | Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read with a separate plain sqlite3 connection, as an operator would."""
    conn = sqlite3.connect(str(path))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(path: str | Path, table: str) -> int:
    return int(db_rows(path, f"SELECT count(*) FROM {table}")[0][0])


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class GateProcessor:
    """Blocks every run until released; records what ran when."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[int] = []
        self.finished: list[int] = []
        self.intervals: list[tuple[str, float, float]] = []
        self.running = 0
        self.max_running = 0

    async def process(self, ctx: RunContext) -> None:
        self.started.append(ctx.run.id)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        begin = time.monotonic()
        try:
            await self.gate.wait()
            await asyncio.sleep(0.05)
        finally:
            self.running -= 1
            self.intervals.append((ctx.run.issue_key, begin, time.monotonic()))
        self.finished.append(ctx.run.id)

    async def close(self) -> None:
        return None


class ScriptedProcessor:
    """Raises the scripted exceptions one per attempt, then succeeds."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = list(failures)
        self.attempts: list[int] = []

    async def process(self, ctx: RunContext) -> None:
        self.attempts.append(ctx.run.attempts)
        await ctx.event("Step", step="scripted")
        if self.failures:
            raise self.failures.pop(0)

    async def close(self) -> None:
        return None


def transient(message: str = "jira answered 503", retry_after_s: float | None = None
              ) -> TransientError:
    return TransientError(message, retry_after_s)
