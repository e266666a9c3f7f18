"""JiraClient.status_changes against FakeJira over real HTTP: who moved the issue where.

The approval rule (tests/unit/test_approval.py) is only as good as this read: every
page of Cloud's changelog, Data Center's expand=changelog, and the right author.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mwai.clients.jira import JiraClient, JiraConfig
from mwai.demo.fakes.jira import FakeJira
from tests.conftest import make_settings

COLLEAGUE = "colleague-account"


@pytest.fixture
async def fake() -> AsyncIterator[FakeJira]:
    async with FakeJira(extra_account_ids=[COLLEAGUE], max_page_size=2) as jira:
        yield jira


def client(tmp_path: Path, fake: FakeJira, session: aiohttp.ClientSession,
           api_version: str) -> JiraClient:
    settings = make_settings(tmp_path, **fake.settings_changes(), jira_api_version=api_version)
    return JiraClient(JiraConfig.of(settings), session, page_size=50)


@pytest.mark.parametrize("api_version", ["3", "2"])
async def test_every_status_move_with_its_author_in_order(
        tmp_path: Path, fake: FakeJira, api_version: str) -> None:
    key = fake.create_issue(summary="Greet users", assignee=fake.ai_account_id)
    fake.human_transition(key, "Plan Review", author=fake.human_account_id)
    fake.human_assign(key, COLLEAGUE, author=COLLEAGUE)  # not a status move: left out
    fake.human_transition(key, "In Progress", author=COLLEAGUE)
    fake.human_transition(key, "Blocked", author=fake.human_account_id)
    fake.human_transition(key, "In Progress", author=fake.human_account_id)
    async with aiohttp.ClientSession() as session:
        jira = client(tmp_path, fake, session, api_version)
        await jira.transition_to(key, "In Testing")  # through the API: the AI account's
        changes = await jira.status_changes(key)

    assert [(c.author_account_id, c.to_status) for c in changes] == [
        (fake.human_account_id, "Plan Review"), (COLLEAGUE, "In Progress"),
        (fake.human_account_id, "Blocked"), (fake.human_account_id, "In Progress"),
        (fake.ai_account_id, "In Testing")]
    assert [c.history_id for c in changes] == sorted(c.history_id for c in changes)
    reads = fake.calls("GET", f"/issue/{key}")
    if api_version == "3":  # six entries in pages of two: three requests, every page read
        pages = [r for r in reads if r.path.endswith("/changelog")]
        assert [r.query["startAt"] for r in pages] == ["0", "2", "4"]
    else:  # Data Center has no /changelog resource: the whole history in one read
        assert [r.query.get("expand") for r in reads if r.path.endswith(key)][-1] == "changelog"
        assert not [r for r in reads if r.path.endswith("/changelog")]


async def test_an_issue_nobody_moved_has_no_status_changes(tmp_path: Path,
                                                           fake: FakeJira) -> None:
    key = fake.create_issue(summary="Imported", status="In Progress")
    async with aiohttp.ClientSession() as session:
        assert await client(tmp_path, fake, session, "3").status_changes(key) == []
