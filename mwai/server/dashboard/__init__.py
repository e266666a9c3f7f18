"""The web dashboard under /dashboard/: server-rendered pages (jinja2), live over
Server-Sent Events, static assets from this package (no CDN, no build step).

``create_dashboard(deps)`` returns the sub-application mwai.server.app mounts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from mwai.server.dashboard import actions, format, live, pages
from mwai.server.dashboard.access import Access
from mwai.server.dashboard.guard import guard, on_prepare
from mwai.server.dashboard.state import ACCESS_KEY, DEPS_KEY, Deps
from mwai.server.dashboard.views import PastDays

__all__ = ["Deps", "create_dashboard"]

STATIC_DIR = Path(__file__).parent / "static"


async def _live_hub(app: web.Application) -> AsyncIterator[None]:
    deps = app[DEPS_KEY]
    app[pages.HUB_KEY] = hub = live.LiveHub(lambda: deps.store().change_mark(),
                                            lambda view: pages.render_fragment(app, view))
    yield
    await hub.close()


async def _close_streams(app: web.Application) -> None:
    # At shutdown, before the server waits for handlers: end every live stream.
    if pages.HUB_KEY in app:
        await app[pages.HUB_KEY].close()


def create_dashboard(deps: Deps) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[DEPS_KEY] = deps
    app[ACCESS_KEY] = Access(deps.settings)
    app[pages.PAST_KEY] = PastDays()
    env = aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("mwai.server.dashboard", "templates"),
        autoescape=True)
    env.filters.update(format.FILTERS)
    app.on_response_prepare.append(on_prepare)
    app.cleanup_ctx.append(_live_hub)
    app.on_shutdown.append(_close_streams)
    router = app.router
    router.add_get("/", pages.overview)
    router.add_get("/runs", pages.runs)
    router.add_get("/runs/{run_id}", pages.run)
    router.add_get("/issues/{issue_key}", pages.issue)
    for path, handler in (("/runs/{run_id}/{action}", actions.run_action),
                          ("/enqueue", actions.enqueue), ("/login", pages.login)):
        router.add_get(path, handler)
        router.add_post(path, handler)
    router.add_get("/live/", pages.live_handler("overview"))
    router.add_get("/live/runs", pages.live_handler("runs"))
    router.add_get("/live/runs/{run_id}", pages.live_handler("run"))
    router.add_get("/live/issues/{issue_key}", pages.live_handler("issue"))
    router.add_post("/logout", pages.logout)
    router.add_static("/static/", STATIC_DIR)
    return app
