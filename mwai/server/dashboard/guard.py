"""The gate of every dashboard request: the access rules, CSRF on POST, HTML error
pages, and the headers that keep hostile ticket text inert (CSP without inline
script, no framing, no sniffing)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from mwai.logs import WEB_LOGGER
from mwai.server.dashboard.access import COOKIE
from mwai.server.dashboard.state import ACCESS_KEY, SESSION_KEY

log = logging.getLogger(WEB_LOGGER)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/dashboard"
STATIC_PREFIX = f"{PREFIX}/static/"
LOGIN_PATH = f"{PREFIX}/login"
FRESH_KEY = web.RequestKey("dashboard_session_fresh", bool)

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def error_page(request: web.Request, status: int, title: str, message: str
               ) -> web.Response:
    session = request.get(SESSION_KEY)
    return aiohttp_jinja2.render_template(
        "error.html", request,
        {"title": title, "message": message, "status": status, "session": session},
        status=status)


def safe_next(target: str) -> str:
    """Where to go after the login: a dashboard path only (no open redirect)."""
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = request.app[ACCESS_KEY]
    if not access.peer_allowed(request):
        log.warning("Dashboard refused a non-loopback client", extra={"remote": request.remote})
        return error_page(request, 403, "Only on this machine",
                          "Without MWAI_UI_TOKEN the dashboard answers only clients on "
                          "127.0.0.1 that did not come through a proxy. Set MWAI_UI_TOKEN "
                          "(and MWAI_UI_ADMIN_TOKEN) to open it to the team; see "
                          "docs/operations.md, Dashboard.")
    session, fresh = access.identify(request)
    request[SESSION_KEY] = session
    request[FRESH_KEY] = fresh
    public = request.path.startswith(STATIC_PREFIX) or request.path == LOGIN_PATH
    if not session.signed_in and not public:
        if request.method == "GET":
            raise web.HTTPSeeOther(f"{LOGIN_PATH}?next={quote(request.path_qs, safe='')}")
        return error_page(request, 401, "Sign in first",
                          "This needs a dashboard session: sign in with MWAI_UI_TOKEN.")
    if request.method == "POST":
        form = await request.post()
        if not access.csrf_ok(request, session, str(form.get("csrf", ""))):
            log.warning("Dashboard POST without a valid CSRF token",
                        extra={"path": request.path, "remote": request.remote})
            return error_page(request, 403, "Form expired",
                              "The form was not sent from this dashboard session (missing or "
                              "stale CSRF token). Reload the page and try again.")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_page(request, exc.status, exc.reason, exc.text or exc.reason)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Headers of every dashboard response, and the session cookie when it is new."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(STATIC_PREFIX):
        response.headers.setdefault("Cache-Control", "public, max-age=300")
    else:
        response.headers.setdefault("Cache-Control", "no-store")
    session = request.get(SESSION_KEY)
    if session is not None and request.get(FRESH_KEY) and COOKIE not in response.cookies \
            and not request.path.startswith(STATIC_PREFIX):
        # aiohttp reads response.cookies before this hook: add the header itself.
        response.headers.add("Set-Cookie", request.app[ACCESS_KEY].cookie_header(request,
                                                                                 session))
