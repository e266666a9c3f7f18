"""The dashboard's pure parts: who a token makes you, what a session cookie proves, how
times and links are written, what the charts draw."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from unittest import mock

import pytest

from mwai.model import DayCost, DayCount
from mwai.server.dashboard import charts
from mwai.server.dashboard.access import SESSION_MAX_AGE_S, Access, clean_user
from mwai.server.dashboard.format import duration, safe_url
from mwai.server.dashboard.live import LiveHub
from mwai.settings import Settings


def access(**changes: str) -> Access:
    return Access(dataclasses.replace(Settings.defaults(), **changes))


@pytest.mark.parametrize(("ui", "admin", "token", "role"), [
    ("u-token", "", "u-token", "admin"),  # the only token may act
    ("u-token", "a-token", "u-token", "viewer"),
    ("u-token", "a-token", "a-token", "admin"),
    ("", "a-token", "a-token", "admin"),
    ("u-token", "a-token", "u-token-", "none"),
    ("u-token", "a-token", "", "none"),
    ("", "", "", "none"),
])
def test_a_token_gives_its_role(ui: str, admin: str, token: str, role: str) -> None:
    assert access(ui_token=ui, ui_admin_token=admin).role_of_token(token) == role


def test_a_session_cookie_proves_only_what_was_signed() -> None:
    gate = access(ui_token="u-token", ui_admin_token="a-token")
    session = gate.new_session("Vera", "viewer")
    value = gate.cookie_value(session)
    assert gate.read_cookie(value) == session
    payload, signature = value.split(".")
    assert gate.read_cookie(payload + "." + "0" * len(signature)) is None
    assert gate.read_cookie(value.replace(payload, payload[:-2] + "xx")) is None
    assert gate.read_cookie("") is None and gate.read_cookie("junk") is None
    # Another token (rotated): every old session ends.
    assert access(ui_token="other", ui_admin_token="a-token").read_cookie(value) is None
    old = dataclasses.replace(session, issued_at=time.time() - SESSION_MAX_AGE_S - 1)
    assert gate.read_cookie(gate.cookie_value(old)) is None
    # The CSRF token belongs to the session.
    assert gate.csrf_token(session) != gate.csrf_token(gate.new_session("Vera", "viewer"))


def test_without_tokens_sessions_are_signed_with_a_key_of_this_process() -> None:
    first, second = access(), access()
    value = first.cookie_value(first.new_session("local operator", "admin"))
    assert first.read_cookie(value) is not None
    assert second.read_cookie(value) is None


def test_user_names_are_printable_and_bounded() -> None:
    assert clean_user("  ada\x00\n@example.com ") == "ada@example.com"
    assert len(clean_user("x" * 500)) == 64


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "\u2014"), (0.25, "250 ms"), (4.2, "4.2 s"), (42, "42 s"), (185, "3 min 05 s"),
    (7260, "2 h 01 min"), (3 * 86400 + 4 * 3600, "3 d 4 h")])
def test_durations_read_naturally(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("url", "link"), [
    ("https://github.com/acme/app/pull/1", True), ("http://127.0.0.1:9/x", True),
    ("javascript:alert(1)", False), ("data:text/html,x", False), ("//evil", False),
    ("", False), (None, False)])
def test_only_http_urls_become_links(url: str | None, link: bool) -> None:
    assert (safe_url(url) is not None) == link


def test_charts_cover_thirty_days_with_the_success_rate_of_finished_runs() -> None:
    today = 20_000
    counts = [DayCount(today, "completed", 3), DayCount(today, "failed", 1),
              DayCount(today, "queued", 2), DayCount(today - 2, "completed", 1),
              DayCount(today - 40, "completed", 99)]  # outside the window
    days = charts.days(counts, [DayCost(today, 0.5, 10, 2)], today)
    assert len(days) == charts.DAYS and days[-1].day == today
    assert (days[-1].runs, days[-1].success_rate, days[-1].cost_usd) == (6, 0.75, 0.5)
    assert days[-3].success_rate == 1.0 and days[-2].success_rate is None
    runs, rate, cost = charts.charts(days)
    assert runs.bars[-1].height == charts.HEIGHT  # the busiest day is full height
    assert rate.bars[-2].height == 0 and "no finished run" in rate.bars[-2].title
    assert "75 %" in rate.bars[-1].title and cost.summary == "$0.50 in 30 days"
    assert all(bar.height == 0 for bar in runs.bars[:-3])


def test_hub_renders_each_watched_view_once_per_change() -> None:
    rendered: list[str] = []

    async def render(view: str) -> str:
        rendered.append(view)
        return f"<p>{view} {len(rendered)}</p>"

    async def scenario() -> None:
        hub = LiveHub(mock.AsyncMock(), render)
        viewers = [hub.subscribe("runs", "old") for _ in range(20)]
        other = hub.subscribe("overview", "old")
        await hub.push()
        assert sorted(rendered) == ["overview", "runs"]
        assert all(v.queue.qsize() == 1 for v in [*viewers, other])
        await hub.close()

    asyncio.run(scenario())
