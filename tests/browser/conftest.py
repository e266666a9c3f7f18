"""The browser tests' parts: the system Chromium driven by Playwright (no browser is
downloaded; .ci/run installs the Debian package), the real app listening on
127.0.0.1, and a database the demo filled."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from mwai.queue.processor import RunContext

CHROMIUM_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("the browser tests need the system Chromium: "
                         "apt-get install chromium (.ci/run does)")


class StepProcessor:
    """A run that writes its first step, then waits for the test to let it go on:
    a run that stays running while the page watches it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[int] = []

    async def process(self, ctx: RunContext) -> None:
        self.started.append(ctx.run.id)
        await ctx.event("Step 1: reading the issue", step="read")
        await self.release.wait()
        await ctx.event("Step 2: the agent finished", step="agent", exit_code=0)

    async def close(self) -> None:
        self.release.set()


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database `mwai demo` leaves: the whole story (plan, sub-tasks, a PR)."""
    root = tmp_path_factory.mktemp("demo") / "story"
    result = subprocess.run([sys.executable, "-m", "mwai", "demo", "--dir", str(root)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return root / "mwai.sqlite3"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield chromium
        finally:
            await chromium.close()


class Watched:
    """A page and every error its console or scripts reported."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Callable[..., Any]]:
    contexts = []

    async def make(**options: Any) -> Watched:
        context = await browser.new_context(viewport={"width": 1280, "height": 860},
                                            **options)
        contexts.append(context)
        return Watched(await context.new_page())

    yield make
    for context in contexts:
        await context.close()
