"""The dashboard's pages: overview, runs, run, issue, their live streams, the login.

Each page is its live region (the view's fragment, views.py) inside the frame of
page.html; the frame carries what depends on who is looking (the session, CSRF
tokens), the fragment only what the store says, so one render serves every viewer.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from mwai.errors import RunNotFound, StoreError
from mwai.logs import WEB_LOGGER
from mwai.server.dashboard import live
from mwai.server.dashboard.access import COOKIE, clean_user
from mwai.server.dashboard.guard import LOGIN_PATH, PREFIX, error_page, safe_next
from mwai.server.dashboard.state import ACCESS_KEY, DEPS_KEY, SESSION_KEY
from mwai.server.dashboard.views import (
    TEMPLATES,
    BadRequest,
    IssueView,
    OverviewView,
    PastDays,
    RunsView,
    View,
    parse_issue,
    parse_run_id,
    parse_runs,
    projects,
    view_data,
)
from mwai.server.webhook import ISSUE_KEY_RE

log = logging.getLogger(WEB_LOGGER)

HUB_KEY = web.AppKey("dashboard_hub", live.LiveHub)
PAST_KEY = web.AppKey("dashboard_past_days", PastDays)

TITLES = {"overview": "Overview", "runs": "Runs", "run": "Run", "issue": "Issue"}


async def render_fragment(app: web.Application, view: View) -> str:
    context = await view_data(app[DEPS_KEY], app[PAST_KEY], view)
    template = aiohttp_jinja2.get_env(app).get_template(TEMPLATES[view.kind])
    return template.render(context)


def frame(request: web.Request, context: dict[str, Any]) -> dict[str, Any]:
    """What every full page shows around its content: who is signed in, the forms' token."""
    session = request[SESSION_KEY]
    access = request.app[ACCESS_KEY]
    return {**context, "session": session, "csrf": access.csrf_token(session),
            "token_mode": access.token_mode, "prefix": PREFIX}


def live_url(view: View) -> str | None:
    if isinstance(view, OverviewView):
        return f"{PREFIX}/live/"
    if isinstance(view, RunsView):
        if not view.live:
            return None
        query = urlencode(view.query())
        return f"{PREFIX}/live/runs" + (f"?{query}" if query else "")
    if isinstance(view, IssueView):
        return None if view.before else f"{PREFIX}/live/issues/{view.issue_key}"
    return f"{PREFIX}/live/runs/{view.run_id}"


def version(fragment: str) -> str:
    return hashlib.sha256(fragment.encode()).hexdigest()[:16]


def _view(request: web.Request, kind: str) -> View:
    if kind == "overview":
        return OverviewView()
    if kind == "runs":
        return parse_runs(request.query)
    if kind == "run":
        return parse_run_id(request.match_info["run_id"])
    return parse_issue(request.match_info["issue_key"], request.query.get("before", ""))


async def _page(request: web.Request, kind: str) -> web.StreamResponse:
    try:
        view = _view(request, kind)
        if isinstance(view, RunsView) and ISSUE_KEY_RE.fullmatch(view.q) and not view.after:
            raise web.HTTPSeeOther(f"{PREFIX}/issues/{view.q}")
        fragment = await render_fragment(request.app, view)
    except BadRequest as exc:
        return error_page(request, 400, "Bad request", str(exc))
    except RunNotFound as exc:
        return error_page(request, 404, "No such run", str(exc))
    except StoreError as exc:
        log.error("Dashboard cannot read the store", extra={"error": str(exc)})
        return error_page(request, 503, "Database unavailable",
                          f"The database cannot be read right now: {exc}")
    title = TITLES[kind]
    if isinstance(view, IssueView):
        title = view.issue_key
    elif kind == "run":
        title = f"Run {request.match_info['run_id']}"
    url = live_url(view)
    if url is not None:
        # What this page shows: the stream sends the view at once when it changed
        # between this render and the browser's connection.
        url += ("&" if "?" in url else "?") + f"v={version(fragment)}"
    context = frame(request, {"title": title, "nav": kind, "fragment": fragment,
                              "live_url": url, "view": view,
                              "projects": projects(request.app[DEPS_KEY]) if kind == "runs"
                              else []})
    return aiohttp_jinja2.render_template("page.html", request, context)


async def overview(request: web.Request) -> web.StreamResponse:
    return await _page(request, "overview")


async def runs(request: web.Request) -> web.StreamResponse:
    return await _page(request, "runs")


async def run(request: web.Request) -> web.StreamResponse:
    return await _page(request, "run")


async def issue(request: web.Request) -> web.StreamResponse:
    return await _page(request, "issue")


def live_handler(kind: str) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            view = _view(request, kind)
            current = await render_fragment(request.app, view)
        except BadRequest as exc:
            return error_page(request, 400, "Bad request", str(exc))
        except (RunNotFound, StoreError) as exc:
            return error_page(request, 404, "Not available", str(exc))
        shown = request.query.get("v", "")
        return await live.stream(request, request.app[HUB_KEY], view, current,
                                 send_now=shown != version(current))

    return handle


# ------------------------------------------------------------------ login


async def login_form(request: web.Request, message: str = "", status: int = 200,
                     next_path: str = "", name: str = "") -> web.StreamResponse:
    access = request.app[ACCESS_KEY]
    context = frame(request, {"title": "Sign in", "nav": "login", "message": message,
                              "next": safe_next(next_path or request.query.get("next", "")),
                              "name": name, "sso_user": access.sso_user(request)})
    return aiohttp_jinja2.render_template("login.html", request, context, status=status)


async def login(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return await login_form(request)
    access = request.app[ACCESS_KEY]
    form = await request.post()
    role = access.role_of_token(str(form.get("token", "")))
    if role == "none":
        log.warning("Dashboard sign-in with a wrong token", extra={"remote": request.remote})
        return await login_form(request, "That token is not MWAI_UI_TOKEN nor "
                                         "MWAI_UI_ADMIN_TOKEN; nothing changed.", 401,
                                next_path=str(form.get("next", "")),
                                name=clean_user(str(form.get("name", ""))))
    user = access.sso_user(request) or clean_user(str(form.get("name", ""))) or "token user"
    session = access.new_session(user, role)
    log.info("Dashboard sign-in", extra={"user": user, "role": role,
                                         "remote": request.remote})
    response = web.HTTPSeeOther(safe_next(str(form.get("next", ""))))
    access.set_cookie(request, response, session)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther(LOGIN_PATH if request.app[ACCESS_KEY].token_mode
                                else f"{PREFIX}/")
    response.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise response
