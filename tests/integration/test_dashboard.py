"""The web dashboard in-process (aiohttp test client, real SQLite): access rules,
sessions, CSRF, actions recorded with who did them, escaping, live updates, paging.
The same promises in a real browser: tests/browser/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any
from unittest import mock

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from mwai.server.app import STORE_KEY, create_app
from mwai.server.dashboard import pages
from mwai.server.dashboard.access import Access
from tests.conftest import automation_payload, secret_headers
from tests.integration.helpers import GateProcessor, db_rows, wait_for

VIEWER = "viewer-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


async def post_webhook(client: Any, key: str) -> int:
    response = await client.post("/webhook/jira", data=orjson.dumps(automation_payload(key)),
                                 headers=secret_headers())
    assert response.status == 200, await response.text()
    return int((await response.json())["run_id"])


async def csrf_of(client: Any, path: str) -> str:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    match = CSRF_RE.search(await response.text())
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def events_of(db: str, run_id: int) -> list[tuple[str, str]]:
    return [(m, meta) for m, meta in db_rows(
        db, "SELECT message, meta_json FROM events WHERE run_id = ? ORDER BY id", (run_id,))]


# ------------------------------------------------------------------ access


async def test_without_a_token_only_loopback_clients_not_via_a_proxy_get_in(
        aiohttp_client: Any, settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    page = await client.get("/dashboard/")
    assert page.status == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    # A request a local reverse proxy forwards comes from the internet, not this machine.
    proxied = await client.get("/dashboard/", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status == 403
    assert "MWAI_UI_TOKEN" in await proxied.text()
    assert (await client.get("/dashboard/runs",
                             headers={"Forwarded": "for=203.0.113.9"})).status == 403


def test_a_client_on_another_machine_is_refused_without_a_token(settings: Any) -> None:
    def request_from(address: str) -> Any:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None: (
            (address, 40000) if name == "peername" else default)
        return make_mocked_request("GET", "/dashboard/", transport=transport)

    access = Access(settings)
    assert access.peer_allowed(request_from("127.0.0.1"))
    assert access.peer_allowed(request_from("::1"))
    assert not access.peer_allowed(request_from("192.168.1.20"))
    assert not access.peer_allowed(request_from("10.0.0.7"))
    with_token = Access(dataclasses.replace(settings, ui_token=VIEWER))
    assert with_token.peer_allowed(request_from("192.168.1.20"))


async def test_with_tokens_the_login_sets_a_signed_session_and_the_viewer_cannot_act(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(ui_token=VIEWER, ui_admin_token=ADMIN)
    client = await aiohttp_client(create_app(settings))
    run_id = await post_webhook(client, "LOG-1")
    first = await client.get("/dashboard/runs?status=failed", allow_redirects=False)
    assert first.status == 303
    assert first.headers["Location"].startswith("/dashboard/login?next=")
    # A forged cookie is no session.
    forged = await client.get("/dashboard/", allow_redirects=False,
                              cookies={"mwai_ui": "eyJ1IjoieCIsInIiOiJhZG1pbiJ9.00"})
    assert forged.status == 303

    token = await csrf_of(client, "/dashboard/login")
    no_csrf = await client.post("/dashboard/login", data={"token": ADMIN})
    assert no_csrf.status == 403
    wrong = await client.post("/dashboard/login", data={"token": "guess", "csrf": token})
    assert wrong.status == 401
    assert "nothing changed" in await wrong.text()
    assert (await client.get("/dashboard/", allow_redirects=False)).status == 303

    viewer = await client.post("/dashboard/login", allow_redirects=False,
                               data={"token": VIEWER, "name": "Vera", "csrf": token,
                                     "next": "/dashboard/runs"})
    assert viewer.status == 303 and viewer.headers["Location"] == "/dashboard/runs"
    cookie = viewer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard/" in cookie
    page = await client.get("/dashboard/")
    assert page.status == 200 and "Vera · viewer" in await page.text()
    csrf = await csrf_of(client, "/dashboard/")
    denied = await client.post(f"/dashboard/runs/{run_id}/cancel", data={"csrf": csrf})
    assert denied.status == 403
    assert "MWAI_UI_ADMIN_TOKEN" in await denied.text()
    assert db_rows(settings.db, "SELECT status FROM runs WHERE id = ?", (run_id,))[0][0] != \
        "cancelled"


async def test_the_login_is_secure_behind_https_and_never_redirects_away(
        aiohttp_client: Any, settings_factory: Any) -> None:
    client = await aiohttp_client(create_app(settings_factory(ui_token=VIEWER)))
    token = await csrf_of(client, "/dashboard/login")
    answer = await client.post("/dashboard/login", allow_redirects=False,
                               headers={"X-Forwarded-Proto": "https"},
                               data={"token": VIEWER, "csrf": token,
                                     "next": "//evil.example/phish"})
    assert answer.status == 303
    assert answer.headers["Location"] == "/dashboard/"
    assert "Secure" in answer.headers["Set-Cookie"]


async def test_a_trusted_proxy_user_gets_in_without_a_token_and_is_recorded(
        aiohttp_client: Any, settings_factory: Any) -> None:
    settings = settings_factory(ui_token=VIEWER, ui_trusted_user_header="X-Forwarded-User")
    client = await aiohttp_client(create_app(settings))
    sso = {"X-Forwarded-User": "ada@example.com", "X-Forwarded-For": "198.51.100.4"}
    page = await client.get("/dashboard/", headers=sso)
    assert page.status == 200 and "ada@example.com · admin" in await page.text()
    match = CSRF_RE.search(await page.text())
    assert match
    answer = await client.post("/dashboard/enqueue", headers=sso, allow_redirects=False,
                               data={"issue_key": "SSO-1", "csrf": match.group(1)})
    assert answer.status == 303
    run_id = int(answer.headers["Location"].rsplit("/", 1)[1])
    assert ("Enqueued from the dashboard by ada@example.com" in
            [message for message, _ in events_of(settings.db, run_id)])


# ------------------------------------------------------------------ actions


async def test_cancel_requeue_and_enqueue_land_in_the_database_with_who_did_them(
        aiohttp_client: Any, settings_factory: Any) -> None:
    gate = GateProcessor()
    settings = settings_factory(workers=1)
    client = await aiohttp_client(create_app(settings, gate))
    running = await post_webhook(client, "ACT-1")
    await wait_for(lambda: running in gate.started, what="the first run running")
    queued = await post_webhook(client, "ACT-1")  # waits: one running run per issue

    confirm = await client.get(f"/dashboard/runs/{queued}/cancel")
    assert confirm.status == 200 and "Yes, cancel run" in await confirm.text()
    assert db_rows(settings.db, "SELECT status FROM runs WHERE id = ?", (queued,))[0][0] == \
        "queued"  # the confirmation page changes nothing
    csrf = CSRF_RE.search(await confirm.text())
    assert csrf
    done = await client.post(f"/dashboard/runs/{queued}/cancel", data={"csrf": csrf.group(1)},
                             allow_redirects=False)
    assert done.status == 303 and done.headers["Location"] == f"/dashboard/runs/{queued}"
    row = db_rows(settings.db, "SELECT status, last_error FROM runs WHERE id = ?", (queued,))
    assert row == [("cancelled", "cancelled by local operator: from the dashboard")]
    assert any(message == "Run cancelled by local operator" and "from the dashboard" in meta
               for message, meta in events_of(settings.db, queued))

    again = await client.post(f"/dashboard/runs/{queued}/cancel", data={"csrf": csrf.group(1)})
    assert again.status == 409 and "already cancelled" in await again.text()

    requeued = await client.post(f"/dashboard/runs/{queued}/requeue",
                                 data={"csrf": csrf.group(1)}, allow_redirects=False)
    assert requeued.status == 303
    assert db_rows(settings.db, "SELECT status FROM runs WHERE id = ?", (queued,))[0][0] == \
        "queued"
    assert any(message == "Run requeued by local operator" and "from the dashboard" in meta
               for message, meta in events_of(settings.db, queued))

    bad = await client.post("/dashboard/enqueue", data={"issue_key": "not a key",
                                                        "csrf": csrf.group(1)})
    assert bad.status == 400 and "nothing was queued" in await bad.text()
    before = db_rows(settings.db, "SELECT count(*) FROM runs")[0][0]
    stale = await client.post("/dashboard/enqueue", data={"issue_key": "ACT-9",
                                                          "csrf": "forged"})
    assert stale.status == 403
    assert db_rows(settings.db, "SELECT count(*) FROM runs")[0][0] == before
    made = await client.post("/dashboard/enqueue", allow_redirects=False,
                             data={"issue_key": "act-9", "csrf": csrf.group(1)})
    assert made.status == 303
    new_id = int(made.headers["Location"].rsplit("/", 1)[1])
    assert db_rows(settings.db, "SELECT issue_key FROM runs WHERE id = ?", (new_id,)) == \
        [("ACT-9",)]
    gate.gate.set()


# ------------------------------------------------------------------ pages


async def test_hostile_ticket_text_is_shown_as_text(aiohttp_client: Any,
                                                    settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    run_id = await post_webhook(client, "XSS-1")
    store = client.app[STORE_KEY]
    await store.add_event(run_id, "<script>alert('m')</script>",
                          summary='"><img src=x onerror=alert(1)>')
    await store.set_run_result(run_id, pr_url="javascript:alert(2)")
    page = await (await client.get(f"/dashboard/runs/{run_id}")).text()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;m&#39;)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="javascript:' not in page  # shown as text, never a link


async def test_overview_shows_the_health_of_health_detailed(aiohttp_client: Any,
                                                             settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    report = await (await client.get("/health/detailed")).json()
    page = await (await client.get("/dashboard/")).text()
    assert f'id="health-status">{report["status"]}<' in page
    assert "Runs per day" in page and "<svg" in page


async def test_bad_parameters_get_a_clear_page_and_change_nothing(aiohttp_client: Any,
                                                                   settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    for path, status, words in [
        ("/dashboard/runs?status=done", 400, "status must be one of"),
        ("/dashboard/runs?since=2026-13-45", 400, "not a real date"),
        ("/dashboard/runs?after=zzz", 400, "cursor"),
        ("/dashboard/runs?q=%3Cscript%3E", 400, "search an issue key"),
        ("/dashboard/runs/abc", 400, "a run id is a number"),
        ("/dashboard/runs/999", 404, "no run with id 999"),
        ("/dashboard/issues/nope", 400, "not a Jira issue key"),
        ("/dashboard/runs/1/explode", 404, "unknown action"),
    ]:
        answer = await client.get(path)
        text = await answer.text()
        assert answer.status == status, (path, text)
        assert words in text, (path, text)
        assert "Traceback" not in text
        assert answer.headers["Content-Type"].startswith("text/html")
    status = await client.get("/status", allow_redirects=False)
    assert status.status == 301 and status.headers["Location"] == "/dashboard/"


async def test_runs_pages_follow_each_other_without_gaps(aiohttp_client: Any,
                                                         settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    for n in range(120):
        await post_webhook(client, f"PAGE-{n + 1}")
    seen: list[int] = []
    path = "/dashboard/runs?q=PAGE"
    while path:
        text = await (await client.get(path)).text()
        seen += [int(x) for x in re.findall(r'data-run-id="(\d+)"', text)]
        nxt = re.search(r'href="([^"]+)" id="next-page"', text)
        path = nxt.group(1).replace("&amp;", "&") if nxt else ""
    assert sorted(seen) == list(range(1, 121)) and len(seen) == len(set(seen))
    search = await (await client.get("/dashboard/runs?q=page-")).text()
    assert "/dashboard/issues/PAGE-100" in search
    exact = await client.get("/dashboard/runs?q=page-7", allow_redirects=False)
    assert exact.headers["Location"] == "/dashboard/issues/PAGE-7"


async def test_a_webhook_reaches_a_connected_live_viewer(aiohttp_client: Any,
                                                         settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    async with client.get("/dashboard/live/runs") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        await post_webhook(client, "LIVE-42")
        received = b""
        async with asyncio.timeout(10):
            while b"LIVE-42" not in received:
                received += await stream.content.readany()
        assert b"event: update" in received


async def test_a_page_older_than_the_data_gets_the_data_when_its_stream_connects(
        aiohttp_client: Any, settings: Any) -> None:
    client = await aiohttp_client(create_app(settings))
    page = await (await client.get("/dashboard/runs")).text()
    live = re.search(r'data-live="([^"]+)"', page)
    assert live and "v=" in live.group(1)
    await post_webhook(client, "LATE-1")  # after the render, before the stream
    hub = client.app._subapps[0][pages.HUB_KEY]
    hub.interval_s = 3600.0  # no poll: only the connection itself can send it
    async with client.get(live.group(1).replace("&amp;", "&")) as stream:
        received = b""
        async with asyncio.timeout(10):
            while b"LATE-1" not in received:
                received += await stream.content.readany()


@pytest.mark.parametrize("path", ["/dashboard/live/", "/dashboard/live/runs/1"])
async def test_live_streams_end_when_the_service_stops(aiohttp_client: Any, settings: Any,
                                                       path: str) -> None:
    client = await aiohttp_client(create_app(settings))
    await post_webhook(client, "END-1")
    stream = await client.get(path)
    assert stream.status == 200
    async with asyncio.timeout(10):
        await client.app.shutdown()
        assert await stream.content.read() is not None  # the stream ends


async def test_no_secret_on_any_page_and_the_repositories_filter_runs_by_project(
        aiohttp_client: Any, settings_factory: Any, tmp_path: Any) -> None:
    repos = tmp_path / "repos.toml"
    repos.write_text('[projects.APP]\nrepo_url = "https://github.com/acme/app.git"\n'
                     '[projects.WEB]\nrepo_url = "https://github.com/acme/web.git"\n')
    settings = settings_factory(repos_file=str(repos), gh_token="ghp_secret_value_123456",
                                metrics_token="metrics-secret-123456")
    client = await aiohttp_client(create_app(settings))
    app_run = await post_webhook(client, "APP-1")
    web_run = await post_webhook(client, "WEB-1")
    pages = ["/dashboard/", "/dashboard/runs", f"/dashboard/runs/{app_run}",
             "/dashboard/issues/APP-1", "/dashboard/enqueue", "/dashboard/login",
             f"/dashboard/runs/{app_run}/requeue"]
    for path in pages:
        text = await (await client.get(path)).text()
        for secret in settings.secret_values():
            assert secret not in text, (path, secret)
    runs = await (await client.get("/dashboard/runs")).text()
    assert '<option value="APP">APP: acme/app</option>' in runs
    only_app = await (await client.get("/dashboard/runs?project=app")).text()
    assert f'data-run-id="{app_run}"' in only_app
    assert f'data-run-id="{web_run}"' not in only_app
