"""An HTTP(S) proxy on 127.0.0.1 that records where each request wanted to go.

The agent CLIs get it as HTTPS_PROXY / HTTP_PROXY. A request for the allowed
host (the scripted model API) is passed through; anything else (a CONNECT to a
vendor's host, a plain request elsewhere) is recorded and refused, so nothing
leaves the machine and the test sees every host a CLI tried.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

HEAD_MAX_BYTES = 65536


@dataclass
class RecordingProxy:
    allowed_host: str  # "127.0.0.1:PORT"
    hosts: list[str] = field(default_factory=list)  # every target, in order
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        host = target if method == "CONNECT" else urlsplit(target).netloc
        self.hosts.append(host)
        if method == "CONNECT" or host != self.allowed_host:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        name, port = host.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(name, int(port))
        up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
