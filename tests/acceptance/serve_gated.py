"""`mwai serve` whose runs wait for a file: python serve_gated.py GATE-PATH.

The real serve() machinery (signals, store, workers, logging) with a processor
that journals "Waiting for the gate" and finishes only once GATE-PATH exists, so
an acceptance test decides when a running run ends instead of guessing a duration.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mwai.logs import configure_logging, log_levels
from mwai.queue.processor import RunContext
from mwai.server.app import serve
from mwai.settings import Settings
from mwai.sources import gather

GATE_POLL_S = 0.02


class Gated:
    def __init__(self, gate: Path) -> None:
        self.gate = gate

    async def process(self, ctx: RunContext) -> None:
        await ctx.event("Waiting for the gate", gate=str(self.gate))  # written at once
        while not self.gate.exists():
            await asyncio.sleep(GATE_POLL_S)

    async def close(self) -> None:
        return None


def load() -> Settings:
    """As `mwai serve` loads them: $MWAI_ENV_FILE under the environment."""
    return Settings.from_env(gather(os.environ).values)


def main() -> None:
    settings = load()
    configure_logging(settings.log_format, levels=log_levels(settings))
    asyncio.run(serve(settings, processor=Gated(Path(sys.argv[1])), reload=load))


if __name__ == "__main__":
    main()
