"""The story's guards that need no kill: a repeated START, a run lease recovery fails for
good, webhooks Jira sent while mwai was down, and the JQL search behind the catch-up.

mwai's app, workers and SQLite file in this process, real git, the demo agent as a
subprocess, fake Jira/GitHub/LLM on 127.0.0.1 (the kill -9 cases are acceptance
tests: tests/acceptance/test_crash_defects.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.clients.jira import JiraClient, JiraConfig
from mwai.demo.fakes.jira import FakeJira
from mwai.demo.story import DEMO_PLAN, DemoStack
from mwai.model import Event
from mwai.queue.store import Store
from mwai.queue.writes import MAX_LOST_ATTEMPTS
from mwai.server.reconcile import reconcile_jql
from tests.conftest import make_settings

ONE_SUBTASK_PLAN: dict[str, Any] = {**DEMO_PLAN, "subtasks": DEMO_PLAN["subtasks"][:1]}
StackFactory = Callable[..., Awaitable[DemoStack]]


@pytest.fixture
async def make_stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    stacks: list[DemoStack] = []

    async def make(*, prepare: Callable[[DemoStack], Awaitable[None]] | None = None,
                   **changes: Any) -> DemoStack:
        stack = DemoStack(tmp_path / f"stack{len(stacks)}", **changes)
        stacks.append(stack)
        stack.root.mkdir(parents=True)
        if prepare is not None:
            await prepare(stack)
        return await stack.start()

    yield make
    for stack in stacks:
        await stack.stop()


async def settle(stack: DemoStack, what: str, condition: Callable[[], bool],
                 timeout_s: float = 40.0) -> None:
    if not await stack.wait_for(condition, timeout_s):
        pytest.fail(f"timed out waiting for {what}")


def states(stack: DemoStack, parent: str) -> list[tuple[str, str | None]]:
    return [(s.status, s.assignee_account_id) for s in stack.jira.subtasks_of(parent)]


async def test_a_second_start_leaves_subtasks_under_review_with_their_reviewer(
        make_stack: StackFactory) -> None:
    stack = await make_stack()  # two sub-tasks
    jira = stack.jira
    parent = jira.create_issue(project="DEMO", summary="Greet users by name")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    review = ("In Testing", jira.human_account_id)
    await settle(stack, "both changes in review", lambda: states(stack, parent) == [review] * 2)

    jira.human_assign(parent, jira.human_account_id)  # any later trigger of the parent
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the repeated START", lambda: True)

    assert states(stack, parent) == [review] * 2
    # Each sub-task says which run and plan step made it (a restart finds it by that).
    assert [[label.rsplit("-", 2)[1:] for label in sub.labels if label.startswith("mwai-run-")]
            for sub in jira.subtasks_of(parent)] == [[["subtask", "1"]], [["subtask", "2"]]]


async def test_a_run_lease_recovery_fails_for_good_says_so_in_jira(
        make_stack: StackFactory) -> None:
    key = ""

    async def lost_many_times(stack: DemoStack) -> None:
        nonlocal key
        jira = stack.jira
        key = jira.create_issue(project="DEMO", summary="Greet users by name",
                                assignee=jira.ai_account_id)
        other = Store(str(stack.db_path))  # another mwai process, killed while planning
        await other.open()
        await other.enqueue(key, "{}")
        claimed = await other.claim(f"{other.process_id}/w1", lease_s=0.2)
        assert claimed is not None
        await other.add_events([Event(claimed.id, "Action: plan", "info",
                                      {"action": "plan"}, claimed.claimed_at)])
        await other.close()
        with sqlite3.connect(stack.db_path) as conn:
            conn.execute("UPDATE runs SET lost_attempts = ?, attempts = ? WHERE id = ?",
                         (MAX_LOST_ATTEMPTS - 1, MAX_LOST_ATTEMPTS, claimed.id))

    stack = await make_stack(prepare=lost_many_times)
    jira = stack.jira
    await settle(stack, "the failure told on Jira", lambda: any(
        "could not finish run" in c for c in jira.comments_of(key)))
    failures = [c for c in jira.comments_of(key) if "could not finish run" in c]
    assert len(failures) == 1 and "lost" in failures[0]
    assert jira.issue(key).assignee_account_id == jira.human_account_id


async def test_webhooks_lost_while_mwai_was_down_are_caught_up(
        make_stack: StackFactory) -> None:
    stack = await make_stack(plan=ONE_SUBTASK_PLAN, reconcile_interval_s=0.5)
    jira = stack.jira
    jira.rules_enabled = False  # Automation's webhooks go nowhere: mwai "was down"
    parent = jira.create_issue(project="DEMO", summary="Greet users by name")
    jira.human_assign(parent, jira.ai_account_id)
    await settle(stack, "the plan", lambda: jira.issue(parent).status == "Plan Review")
    jira.human_transition(parent, "In Progress", assignee=jira.ai_account_id)
    await settle(stack, "the change in review", lambda: states(stack, parent) == [
        ("In Testing", jira.human_account_id)])
    jira.human_transition(jira.subtasks_of(parent)[0].key, "Done")
    await settle(stack, "the parent done", lambda: jira.issue(parent).status == "Done")

    assert jira.webhook_deliveries == []
    searches = jira.calls("POST", "/rest/api/3/search/jql")
    assert searches and all(r.status == 200 for r in searches)


@pytest.mark.parametrize("api_version", ["3", "2"])
async def test_the_catch_up_search_reads_every_page(tmp_path: Path,
                                                    api_version: str) -> None:
    async with FakeJira(max_page_size=2) as fake, aiohttp.ClientSession() as session:
        ai = fake.ai_account_id
        mine = [fake.create_issue(project="DEMO", summary=f"Story {n}", assignee=ai)
                for n in range(5)]
        fake.create_issue(project="DEMO", summary="Someone else's", assignee="someone")
        done = fake.create_issue(project="DEMO", summary="Finished", status="Done")
        settings = make_settings(tmp_path, **fake.settings_changes(),
                                 jira_api_version=api_version)
        client = JiraClient(JiraConfig.of(settings), session, page_size=2)
        found = await client.search(reconcile_jql(ai, "Done", 10))
        assert [issue.key for issue in found] == [*mine, done]
        assert all(issue.updated for issue in found)
        assert len(fake.calls("POST")) == 3  # six issues, two a page


async def test_the_fake_refuses_jql_it_does_not_know(tmp_path: Path) -> None:
    # The catch-up's JQL is checked by the fake: a query only a fake would accept fails.
    async with FakeJira() as fake, aiohttp.ClientSession() as session:
        settings = make_settings(tmp_path, **fake.settings_changes())
        client = JiraClient(JiraConfig.of(settings), session)
        with pytest.raises(Exception, match="Error in the JQL Query"):
            await client.search('resolution = "Fixed"')
