"""`mwai serve` with the operator-tests processor (tests/acceptance/test_cli_ops.py).

Issue keys decide what a run does: FAIL-* fails, SLOW-* blocks until it is
cancelled (or the service stops), anything else completes at once.
"""

from __future__ import annotations

import asyncio
import os

from mwai.logs import configure_logging
from mwai.queue.processor import RunContext
from mwai.server.app import serve
from mwai.settings import Settings


class OpsProcessor:
    async def process(self, ctx: RunContext) -> None:
        key = ctx.run.issue_key
        await ctx.event("Processing", step="test", issue=key)
        if key.startswith("SLOW-"):
            await asyncio.Event().wait()  # until the worker cancels the task
        if key.startswith("FAIL-"):
            raise RuntimeError(f"simulated failure of {key} in run {ctx.run.id}")

    async def close(self) -> None:
        return None


def main() -> None:
    settings = Settings.from_env(os.environ)
    configure_logging(settings.log_format, settings.debug)
    asyncio.run(serve(settings, processor=OpsProcessor()))


if __name__ == "__main__":
    main()
