"""The dashboard in a real headless Chromium (Playwright, the system browser), against
the real app on 127.0.0.1 and a real SQLite database: what a person at the screen
sees and can do. The HTTP-level rules are in tests/integration/test_dashboard.py."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from playwright.async_api import expect

from mwai.server.app import STORE_KEY, create_app
from tests.browser.conftest import StepProcessor, Watched
from tests.conftest import automation_payload, make_settings, secret_headers
from tests.integration.helpers import db_rows, wait_for

# The issue's promise: a webhook shows on an open runs page within 2 s, no reload.
LIVE_WITHIN_MS = 2000
# Where the README's screenshots go when they are retaken (see docs/operations.md).
SCREENSHOTS_ENV = "MWAI_SCREENSHOTS_DIR"
ADMIN = "admin-token-for-the-browser-0123"


async def start(aiohttp_server: Any, settings: Any, processor: Any = None) -> tuple[str, Any]:
    server = await aiohttp_server(create_app(settings, processor), host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), server.app


async def post_webhook(base: str, key: str) -> int:
    async with aiohttp.ClientSession() as session, session.post(
            f"{base}/webhook/jira", data=orjson.dumps(automation_payload(key)),
            headers=secret_headers()) as response:
        assert response.status == 200
        return int((await response.json())["run_id"])


async def mark_page(watched: Watched) -> None:
    """A flag only this load of the page has: gone after any reload."""
    await watched.page.evaluate("window.__sameLoad = true")


async def still_same_load(watched: Watched) -> bool:
    return bool(await watched.page.evaluate("window.__sameLoad === true"))


async def live_on(watched: Watched) -> None:
    await expect(watched.page.locator("#live-state")).to_contain_text("Live updates: on")


async def test_a_webhook_appears_on_the_open_runs_page_without_a_reload(
        aiohttp_server: Any, tmp_path: Path, new_page: Any) -> None:
    base, _ = await start(aiohttp_server, make_settings(tmp_path))
    watched = await new_page()
    await watched.page.goto(f"{base}/dashboard/runs")
    await live_on(watched)
    await mark_page(watched)
    run_id = await post_webhook(base, "LIVE-7")
    row = watched.page.locator(f'tr[data-run-id="{run_id}"]')
    await expect(row).to_be_visible(timeout=LIVE_WITHIN_MS)
    await expect(row).to_contain_text("LIVE-7")
    assert await still_same_load(watched)
    assert watched.errors == []


async def test_a_running_runs_timeline_grows_while_the_page_is_open(
        aiohttp_server: Any, tmp_path: Path, new_page: Any) -> None:
    steps = StepProcessor()
    base, _ = await start(aiohttp_server, make_settings(tmp_path, workers=1), steps)
    run_id = await post_webhook(base, "GROW-1")
    await wait_for(lambda: run_id in steps.started, what="the run running")
    watched = await new_page()
    await watched.page.goto(f"{base}/dashboard/runs/{run_id}")
    timeline = watched.page.locator("#timeline")
    await expect(timeline).to_contain_text("Step 1: reading the issue")
    await expect(timeline).not_to_contain_text("Step 2")
    await live_on(watched)
    await mark_page(watched)
    steps.release.set()
    await expect(timeline).to_contain_text("Step 2: the agent finished")
    await expect(watched.page.locator("#fields-title")).to_contain_text("completed")
    assert await still_same_load(watched)
    assert watched.errors == []


async def test_cancel_and_requeue_from_the_page_land_in_the_database(
        aiohttp_server: Any, tmp_path: Path, new_page: Any) -> None:
    steps = StepProcessor()
    settings = make_settings(tmp_path, workers=1)
    base, _ = await start(aiohttp_server, settings, steps)
    running = await post_webhook(base, "ACT-1")
    await wait_for(lambda: running in steps.started, what="the first run running")
    queued = await post_webhook(base, "ACT-1")  # one running run per issue: this one waits
    watched = await new_page()
    page = watched.page
    await page.goto(f"{base}/dashboard/runs/{queued}")
    await page.get_by_role("link", name="Cancel…").click()
    await expect(page.get_by_role("heading", name=f"Cancel run {queued}")).to_be_visible()
    await page.get_by_role("button", name=f"Yes, cancel run {queued}").click()
    await expect(page.locator("#fields-title")).to_contain_text("cancelled")
    assert db_rows(settings.db, "SELECT status, last_error FROM runs WHERE id = ?",
                   (queued,)) == [("cancelled", "cancelled by local operator: from the dashboard")]

    await page.get_by_role("link", name="Requeue…").click()
    await page.get_by_role("button", name=f"Yes, requeue run {queued}").click()
    await expect(page.locator("#fields-title")).to_contain_text("queued")
    assert db_rows(settings.db, "SELECT status FROM runs WHERE id = ?", (queued,)) == \
        [("queued",)]
    messages = [row[0] for row in db_rows(
        settings.db, "SELECT message || ' ' || meta_json FROM events WHERE run_id = ? "
                     "ORDER BY id", (queued,))]
    assert any("Run cancelled" in m and "by local operator" in m for m in messages)
    assert any("Run requeued" in m and "by local operator" in m for m in messages)
    # The running run: its cancel is asked of its worker, which stops it.
    await page.goto(f"{base}/dashboard/runs/{running}")
    await page.get_by_role("link", name="Cancel…").click()
    await page.get_by_role("button", name=f"Yes, cancel run {running}").click()
    await expect(page.locator("#fields-title")).to_contain_text("cancelled")
    steps.release.set()
    assert watched.errors == []


async def test_hostile_ticket_text_shows_as_text_and_runs_nothing(
        aiohttp_server: Any, tmp_path: Path, new_page: Any) -> None:
    base, app = await start(aiohttp_server, make_settings(tmp_path))
    run_id = await post_webhook(base, "XSS-1")
    script = "<script>window.__pwned = 'script'</script>"
    image = "\"><img src=x onerror=\"window.__pwned = 'img'\">"
    await app[STORE_KEY].add_event(run_id, f"Summary: {script}",
                                   summary=f"Fix {image} and {script}")
    watched = await new_page()
    page = watched.page
    await page.goto(f"{base}/dashboard/runs/{run_id}")
    await expect(page.locator("#timeline")).to_contain_text(f"Summary: {script}")
    await expect(page.locator(".summary")).to_have_text(f"Fix {image} and {script}")
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.locator("#live img").count() == 0
    assert await page.locator("#live script").count() == 0
    assert watched.errors == []


async def test_the_login_and_the_loopback_only_rule_hold(
        aiohttp_server: Any, tmp_path: Path, new_page: Any) -> None:
    for name in ("open", "locked"):
        (tmp_path / name).mkdir()
    open_base, _ = await start(aiohttp_server, make_settings(tmp_path / "open"))
    proxied = await new_page(extra_http_headers={"X-Forwarded-For": "203.0.113.5"})
    answer = await proxied.page.goto(f"{open_base}/dashboard/")
    assert answer is not None and answer.status == 403
    await expect(proxied.page.locator("#error-message")).to_contain_text("MWAI_UI_TOKEN")

    base, _ = await start(aiohttp_server, make_settings(tmp_path / "locked",
                                                        ui_admin_token=ADMIN))
    watched = await new_page()
    page = watched.page
    await page.goto(f"{base}/dashboard/runs?status=failed")
    await expect(page).to_have_url(re.compile(r".*/dashboard/login\?next=.*status.*failed$"))
    await page.get_by_label("Your name").fill("Ada")
    await page.get_by_label("Token").fill("not-the-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_contain_text("nothing changed")
    await page.get_by_label("Token").fill(ADMIN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{base}/dashboard/runs?status=failed")
    await expect(page.locator("header .who")).to_contain_text("Ada · admin")
    cookies = await page.context.cookies()
    session = next(c for c in cookies if c["name"] == "mwai_ui")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    await page.get_by_role("button", name="Sign out").click()
    await page.goto(f"{base}/dashboard/")
    await expect(page).to_have_url(re.compile(r".*/dashboard/login\?next=.*dashboard.*"))
    # Only the wrong-token answer (401) shows in the console: an expected refusal.
    assert [e for e in watched.errors if "401" not in e] == []


async def focus_path(watched: Watched, presses: int) -> list[str]:
    """What Tab reaches, in order: each focused element's id, or its link text."""
    reached = []
    for _ in range(presses):
        await watched.page.keyboard.press("Tab")
        reached.append(await watched.page.evaluate(
            "(() => { const e = document.activeElement;"
            " return e.id || (e.textContent || '').trim(); })()"))
    return reached


async def test_the_keyboard_reaches_every_action(aiohttp_server: Any, tmp_path: Path,
                                                 new_page: Any) -> None:
    steps = StepProcessor()
    settings = make_settings(tmp_path, workers=1)
    base, _ = await start(aiohttp_server, settings, steps)
    running = await post_webhook(base, "KEY-1")
    await wait_for(lambda: running in steps.started, what="the run running")
    queued = await post_webhook(base, "KEY-1")
    watched = await new_page()
    page = watched.page
    await page.goto(f"{base}/dashboard/runs/{queued}")
    reached = await focus_path(watched, 12)
    for target in ("Skip to content", "Overview", "Runs", "Enqueue", "cancel-run",
                   "issue-link"):
        assert target in reached, (target, reached)
    # From the keyboard alone: open the confirmation, confirm, and the run is cancelled.
    await page.locator("#cancel-run").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name=f"Cancel run {queued}")).to_be_visible()
    reached = await focus_path(watched, 6)
    assert "confirm-cancel" in reached and "confirm-back" in reached
    await page.locator("#confirm-cancel").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#fields-title")).to_contain_text("cancelled")
    assert "requeue-run" in await focus_path(watched, 12)
    # The enqueue form and the runs filters are reachable too.
    await page.goto(f"{base}/dashboard/enqueue")
    await expect(page.get_by_role("heading", name="Enqueue a run")).to_be_visible()
    assert {"enqueue-key", "confirm-enqueue"} <= set(await focus_path(watched, 10))
    await page.goto(f"{base}/dashboard/runs")
    await expect(page.locator("#filter-q")).to_be_visible()
    assert {"filter-q", "filter-status", "filter-apply", "filter-clear"} <= set(
        await focus_path(watched, 24))
    steps.release.set()
    assert watched.errors == []


async def test_every_page_of_the_demo_story_renders_without_errors_and_screenshots(
        aiohttp_server: Any, tmp_path: Path, new_page: Any, demo_db: Path) -> None:
    """From the database `mwai demo` filled: every page renders, no console error, and
    the README's screenshots (retaken into MWAI_SCREENSHOTS_DIR when it is set)."""
    db = tmp_path / "demo.sqlite3"
    shutil.copyfile(demo_db, db)
    settings = make_settings(tmp_path, db=str(db),
                             jira_base_url="https://your-site.atlassian.net")
    base, _ = await start(aiohttp_server, settings)
    run_id = db_rows(db, "SELECT id FROM runs WHERE pr_url IS NOT NULL "
                         "AND cost_usd IS NOT NULL ORDER BY id LIMIT 1")[0][0]
    issue_key = db_rows(db, "SELECT issue_key FROM runs WHERE id = ?", (run_id,))[0][0]
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    watched = await new_page()
    page = watched.page
    shots = {"overview": "/dashboard/", "runs": "/dashboard/runs",
             "run": f"/dashboard/runs/{run_id}"}
    for name, path in shots.items():
        await page.goto(base + path)
        await live_on(watched)
        await page.screenshot(path=str(folder / f"dashboard-{name}.png"), full_page=True)
    await expect(page.locator("#pr-link")).to_have_attribute("href", db_rows(
        db, "SELECT pr_url FROM runs WHERE id = ?", (run_id,))[0][0])
    await expect(page.locator("#jira-link")).to_have_attribute(
        "href", f"https://your-site.atlassian.net/browse/{issue_key}")
    for path in (f"/dashboard/issues/{issue_key}", f"/dashboard/runs/{run_id}/requeue",
                 "/dashboard/enqueue", "/dashboard/runs?q=DEMO-&status=completed",
                 "/dashboard/login"):
        answer = await page.goto(base + path)
        assert answer is not None and answer.status == 200, path
    for name in shots:
        assert (folder / f"dashboard-{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert watched.errors == []
