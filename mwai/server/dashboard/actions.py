"""The dashboard's actions: requeue, cancel, enqueue.

Each has a confirmation page (GET, works without JavaScript) whose form POSTs with
the session's CSRF token. Only an admin session may act. The store's own methods do
the work, and the run's events say who did it ("Run cancelled by Ada", reason "from
the dashboard"), as `mwai cancel --by` and `mwai requeue --by` do from a shell.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp_jinja2
import orjson
from aiohttp import web

from mwai.errors import InvalidRunState, RunNotFound, StoreError
from mwai.logs import WEB_LOGGER
from mwai.server.dashboard.guard import PREFIX, error_page
from mwai.server.dashboard.pages import frame
from mwai.server.dashboard.state import DEPS_KEY, SESSION_KEY
from mwai.server.dashboard.views import BadRequest, parse_run_id
from mwai.server.webhook import ISSUE_KEY_RE

log = logging.getLogger(WEB_LOGGER)

ACTIONS = {
    "cancel": ("Cancel run", "Cancel this run? A queued run is cancelled now; a running "
                             "run is asked to stop."),
    "requeue": ("Requeue run", "Queue this finished run again (its attempts start over)?"),
}
SOURCE = "dashboard"


def _who(request: web.Request) -> str:
    return request[SESSION_KEY].user or "unknown user"


def _need_admin(request: web.Request) -> web.Response | None:
    if request[SESSION_KEY].can_act:
        return None
    return error_page(request, 403, "Not allowed",
                      "Actions need the admin token: sign in again with MWAI_UI_ADMIN_TOKEN.")


def _confirm(request: web.Request, context: dict[str, Any], status: int = 200
             ) -> web.StreamResponse:
    return aiohttp_jinja2.render_template("confirm.html", request, frame(request, context),
                                          status=status)


async def run_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    if action not in ACTIONS:
        return error_page(request, 404, "No such action",
                          f"unknown action {action[:20]!r}: use cancel or requeue")
    try:
        view = parse_run_id(request.match_info["run_id"])
        run = await request.app[DEPS_KEY].store().get_run(view.run_id)
    except BadRequest as exc:
        return error_page(request, 400, "Bad request", str(exc))
    except RunNotFound as exc:
        return error_page(request, 404, "No such run", str(exc))
    title, question = ACTIONS[action]
    context = {"title": f"{title} {view.run_id}", "nav": "run", "action": action,
               "question": question, "run": run, "message": ""}
    denied = _need_admin(request)
    if denied is not None:
        return denied
    if request.method == "GET":
        return _confirm(request, context)
    store = request.app[DEPS_KEY].store()
    who = _who(request)
    try:
        if action == "cancel":
            outcome = await store.cancel(view.run_id, by=who, reason="from the dashboard")
        else:
            await store.requeue(view.run_id, by=who, reason="from the dashboard")
            request.app[DEPS_KEY].wake_workers(1)
            outcome = "queued"
    except InvalidRunState as exc:
        return _confirm(request, {**context, "message": str(exc)}, 409)
    except StoreError as exc:
        return _confirm(request, {**context, "message": f"not done: {exc}"}, 503)
    log.info("Dashboard action", extra={"action": action, "run_id": view.run_id,
                                        "user": who, "outcome": outcome})
    raise web.HTTPSeeOther(f"{PREFIX}/runs/{view.run_id}")


async def enqueue(request: web.Request) -> web.StreamResponse:
    denied = _need_admin(request)
    if denied is not None:
        return denied
    context: dict[str, Any] = {"title": "Enqueue a run", "nav": "enqueue", "message": "",
                               "issue_key": request.query.get("issue_key", "")[:60]}
    if request.method == "GET":
        return aiohttp_jinja2.render_template("enqueue.html", request,
                                              frame(request, context))
    form = await request.post()
    key = str(form.get("issue_key", "")).strip().upper()
    if not ISSUE_KEY_RE.fullmatch(key):
        return aiohttp_jinja2.render_template(
            "enqueue.html", request,
            frame(request, {**context, "issue_key": key[:60],
                            "message": "Give a Jira issue key like PROJ-123; nothing was "
                                       "queued."}), status=400)
    who = _who(request)
    deps = request.app[DEPS_KEY]
    payload = orjson.dumps({"event_type": "mwai:dashboard", "issue_key": key, "by": who})
    try:
        result = await deps.store().enqueue(key, payload.decode(), source=SOURCE,
                                            event_type="mwai:dashboard")
        await deps.store().add_event(result.run_id, f"Enqueued from the dashboard by {who}",
                                     by=who, source=SOURCE, coalesced=result.coalesced)
    except StoreError as exc:
        return aiohttp_jinja2.render_template(
            "enqueue.html", request,
            frame(request, {**context, "issue_key": key, "message": f"not queued: {exc}"}),
            status=503)
    if not result.coalesced:
        deps.wake_workers(1)
    log.info("Dashboard action", extra={"action": "enqueue", "run_id": result.run_id,
                                        "issue_key": key, "user": who,
                                        "coalesced": result.coalesced})
    raise web.HTTPSeeOther(f"{PREFIX}/runs/{result.run_id}")
