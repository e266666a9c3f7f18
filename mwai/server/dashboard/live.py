"""Live updates: one poller for every viewer, pushed over Server-Sent Events.

Every ``interval_s`` (1 s) the hub reads the store's change mark (the newest event id and
the latest run update: two index lookups). When it moved, or ``refresh_s`` passed
(elapsed times grow), the hub renders each *distinct* watched view once and sends
the fragment to the viewers of that view whose copy differs. Twenty people watching
the runs page cost one query and one render per change, not twenty, and nothing at
all while nobody watches: the intake does not pay for its audience.

A viewer's queue holds only the latest fragment: a slow browser skips versions
rather than piling them up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from mwai.errors import MwaiError
from mwai.logs import WEB_LOGGER
from mwai.model import ChangeMark

log = logging.getLogger(WEB_LOGGER)

INTERVAL_S = 1.0
REFRESH_S = 5.0
PING_S = 15.0
MAX_VIEWERS = 200

Render = Callable[[Any], Awaitable[str]]


class Viewer:
    """One connected browser: the latest fragment for it, or None when the hub closes."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=1)

    def offer(self, item: str | None) -> None:
        with contextlib.suppress(asyncio.QueueEmpty):
            self.queue.get_nowait()  # drop the fragment it has not read yet
        self.queue.put_nowait(item)


class LiveHub:
    def __init__(self, change_mark: Callable[[], Awaitable[ChangeMark]], render: Render,
                 interval_s: float = INTERVAL_S, refresh_s: float = REFRESH_S) -> None:
        self._change_mark = change_mark
        self._render = render
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self._viewers: dict[Any, set[Viewer]] = {}
        self._sent: dict[Any, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.renders = 0  # how many fragments were rendered (tests, bench)

    @property
    def viewers(self) -> int:
        return sum(len(group) for group in self._viewers.values())

    def subscribe(self, view: Any, current: str) -> Viewer:
        """A viewer of ``view`` whose page shows ``current`` (sent only when it changes)."""
        if self._closed:
            raise web.HTTPServiceUnavailable(reason="the service is stopping")
        if self.viewers >= MAX_VIEWERS:
            raise web.HTTPServiceUnavailable(reason=f"more than {MAX_VIEWERS} live viewers; "
                                                    "reload the page later")
        viewer = Viewer()
        self._viewers.setdefault(view, set()).add(viewer)
        self._sent.setdefault(view, current)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-live")
        return viewer

    def unsubscribe(self, view: Any, viewer: Viewer) -> None:
        group = self._viewers.get(view)
        if group is not None:
            group.discard(viewer)
            if not group:
                del self._viewers[view]
                self._sent.pop(view, None)

    async def close(self) -> None:
        """End every stream (at shutdown: no stream holds the server open)."""
        self._closed = True
        for group in self._viewers.values():
            for viewer in group:
                viewer.offer(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        last_mark: ChangeMark | None = None
        last_render = 0.0
        while True:
            await asyncio.sleep(self.interval_s)
            if not self._viewers:
                continue
            try:
                mark = await self._change_mark()
            except MwaiError as exc:
                log.warning("Dashboard live update: cannot read the store",
                            extra={"error": str(exc)})
                continue
            now = time.monotonic()
            if mark == last_mark and now - last_render < self.refresh_s:
                continue
            last_mark, last_render = mark, now
            await self.push()

    async def push(self) -> None:
        """Render every watched view once; send it to its viewers when it changed."""
        for view in list(self._viewers):
            try:
                html = await self._render(view)
            except MwaiError as exc:
                log.warning("Dashboard live update: cannot render a view",
                            extra={"view": repr(view), "error": str(exc)})
                continue
            self.renders += 1
            group = self._viewers.get(view)
            if not group or self._sent.get(view) == html:
                continue
            self._sent[view] = html
            for viewer in group:
                viewer.offer(html)


async def stream(request: web.Request, hub: LiveHub, view: Any, current: str,
                 send_now: bool = False) -> web.StreamResponse:
    """The SSE response of one viewer: an ``update`` event with each new fragment, until
    the browser goes (a failed ping tells) or the service stops. ``send_now``: the
    page is older than ``current``, send it first."""
    viewer = hub.subscribe(view, current)
    if send_now:
        viewer.offer(current)
    response: web.StreamResponse | None = None
    try:
        # X-Accel-Buffering: nginx passes each event on at once instead of buffering.
        async with sse_response(request, ping_interval=PING_S,
                                headers={"X-Accel-Buffering": "no"}) as sse:
            response = sse
            gone = asyncio.create_task(sse.wait())
            gone.add_done_callback(lambda _: viewer.offer(None))
            try:
                while (html := await viewer.queue.get()) is not None:
                    await sse.send(html, event="update")
            finally:
                gone.cancel()
    except ConnectionResetError:
        pass  # the browser went away between two updates
    finally:
        hub.unsubscribe(view, viewer)
    return response if response is not None else web.Response(status=204)
