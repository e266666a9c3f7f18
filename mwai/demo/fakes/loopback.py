"""The life cycle the in-process fakes share: an aiohttp app on 127.0.0.1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from aiohttp import web


@dataclass
class Fault:
    """One injected failure: kind (e.g. "429", "500", "slow", "html") and its timing."""

    kind: str
    retry_after_s: float = 0.0
    delay_s: float = 0.0


class LoopbackServer:
    """Serves ``app()`` at ``host``:``port``, by default on 127.0.0.1 at a free port (which
    ``port`` then holds): ``async with Fake() as fake``, then requests go to ``fake.url``."""

    host = "127.0.0.1"
    port = 0
    url = ""  # http://host:port, once started
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
