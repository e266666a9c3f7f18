"""`mwai serve` with a test processor: python serve_with.py slow:SECONDS | failing.

The real serve() machinery (signals, store, workers, logging) with a processor
whose behaviour the acceptance tests control.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mwai.logs import configure_logging
from mwai.queue.processor import RunContext
from mwai.server.app import serve
from mwai.settings import Settings


class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def process(self, ctx: RunContext) -> None:
        await ctx.event("Working slowly", seconds=self.seconds)
        await asyncio.sleep(self.seconds)

    async def close(self) -> None:
        return None


class FailSome:
    """Fails runs of issues whose key starts with FAIL; completes the others."""

    async def process(self, ctx: RunContext) -> None:
        await ctx.event("Processing", step="test")
        if ctx.run.issue_key.startswith("FAIL"):
            raise RuntimeError(f"simulated failure for {ctx.run.issue_key}")

    async def close(self) -> None:
        return None


def main() -> None:
    kind, _, arg = sys.argv[1].partition(":")
    processor = Slow(float(arg)) if kind == "slow" else FailSome()
    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_format, settings.debug)
    asyncio.run(serve(settings, processor=processor))


if __name__ == "__main__":
    main()
