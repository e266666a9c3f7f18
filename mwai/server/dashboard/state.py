"""What the dashboard is handed by the app (the composition root) and keeps per request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from mwai.queue.store import Store
from mwai.server.dashboard.access import Access, Session
from mwai.settings import Settings


@dataclass(frozen=True)
class Deps:
    """The service parts the dashboard uses, given by mwai.server.app."""

    settings: Settings
    store: Callable[[], Store]  # the open store (it opens after the routes are made)
    health: Callable[[], Awaitable[dict[str, Any]]]  # the /health/detailed report
    wake_workers: Callable[[int], None]  # after an enqueue, like a webhook does


DEPS_KEY = web.AppKey("dashboard_deps", Deps)
ACCESS_KEY = web.AppKey("dashboard_access", Access)
SESSION_KEY = web.RequestKey("dashboard_session", Session)
