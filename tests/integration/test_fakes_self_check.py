"""Self-checks of the fakes (mwai/demo/fake_*.py), not of mwai.

The tests of mwai run against these fakes; these checks guard the fakes' fidelity
to the real services (Jira Automation's rule deliveries, the errors Jira and the
LLM APIs answer to bad requests), so that a passing mwai test means something.
Nothing here would fail if mwai broke: mwai's own tests are in test_jira_client.py,
test_llm_clients.py and the flow tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mwai.clients.jira import JiraClient, JiraConfig
from mwai.demo.fakes.jira import FakeJira
from mwai.demo.fakes.llm import FakeLlm
from tests.conftest import SECRET, make_settings
from tests.integration.helpers import wait_for

MESSAGES = [{"role": "user", "content": "Plan PROJ-1"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeJira]:
    async with FakeJira() as jira:
        yield jira


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLlm]:
    async with FakeLlm() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def jira_client(tmp_path: Path, fake: FakeJira, session: aiohttp.ClientSession) -> JiraClient:
    """mwai's client only drives the fake here, as mwai would during a run."""
    return JiraClient(JiraConfig.of(make_settings(tmp_path, **fake.settings_changes())),
                      session)


# ------------------------------------------------------------------ FakeJira


async def test_an_invalid_transition_id_gets_400(
        fake: FakeJira, session: aiohttp.ClientSession) -> None:
    key = fake.create_issue(status="Plan Review")
    async with session.post(f"{fake.url}/rest/api/3/issue/{key}/transitions",
                            json={"transition": {"id": "41"}},
                            headers=fake.auth_headers()) as answer:
        assert answer.status == 400  # "Start work" is not available from Plan Review
        assert (await answer.json())["errorMessages"] == [
            "Transition id '41' is not valid for this issue."]


class Receiver:
    """A tiny stand-in for mwai's webhook endpoint."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str | None]] = []

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.received.append((payload, request.headers.get("X-Moveware-Webhook-Secret")))
        return web.json_response({"ok": True})


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/webhook/jira", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield target, f"http://127.0.0.1:{port}/webhook/jira"
    await runner.cleanup()


async def test_rules_post_automation_payloads_on_assignment_and_status_change(
        receiver: tuple[Receiver, str], session: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    target, url = receiver
    async with FakeJira(webhook_url=url, webhook_secret=SECRET) as fake:
        client = jira_client(tmp_path, fake, session)
        parent = fake.create_issue(summary="Parent")
        sub = fake.create_issue(parent=parent, project="PROJ")
        assert target.received == []  # creating an issue fires nothing

        await client.assign(sub, fake.ai_account_id)
        await client.transition_to(sub, "In Progress")
        fake.human_transition(parent, "In Progress", assignee=fake.human_account_id)
        await wait_for(lambda: len(target.received) == 4, what="4 rule deliveries")

        payloads = {(p["event_type"], p["issue_key"]): p for p, _ in target.received}
        assert payloads[("issue_assigned", sub)] == {
            "event_type": "issue_assigned", "issue_key": sub, "issue_type": "Sub-task",
            "status": "Backlog", "assignee_account_id": fake.ai_account_id,
            "parent_key": parent, "project_key": "PROJ"}
        assert payloads[("issue_transitioned", sub)]["status"] == "In Progress"
        assert payloads[("issue_assigned", parent)]["assignee_account_id"] == (
            fake.human_account_id)
        assert {secret for _, secret in target.received} == {SECRET}

        fake.rules_enabled = False
        fake.human_transition(parent, "Done")
        await fake.wait_webhooks()
        assert len(target.received) == 4


async def test_rule_delivery_failure_is_recorded_not_raised(
        fake: FakeJira, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    client = jira_client(tmp_path, fake, session)
    fake.webhook_url = "http://127.0.0.1:9/nothing-listens-here"
    key = fake.create_issue()
    await client.assign(key, fake.ai_account_id)
    await fake.wait_webhooks()
    assert fake.webhook_deliveries[0].status is None
    assert fake.webhook_deliveries[0].error
    assert fake.issue(key).assignee_account_id == fake.ai_account_id


# ------------------------------------------------------------------ FakeLlm


async def test_anthropic_fake_rejects_malformed_requests(fake_llm: FakeLlm,
                                                         session: aiohttp.ClientSession) -> None:
    headers = {"x-api-key": fake_llm.anthropic_key, "anthropic-version": "2023-06-01"}
    url = f"{fake_llm.url}/v1/messages"
    cases = [
        ({}, {"model": "m", "max_tokens": 5, "messages": MESSAGES}, 401,
         "authentication_error"),
        ({"x-api-key": fake_llm.anthropic_key}, {"model": "m", "max_tokens": 5,
                                             "messages": MESSAGES}, 400, "anthropic-version"),
        (headers, {"model": "m", "messages": MESSAGES}, 400, "max_tokens: Field required"),
        (headers, {"max_tokens": 5, "messages": MESSAGES}, 400, "model: Field required"),
        (headers, {"model": "m", "max_tokens": 5, "messages": []}, 400, "at least one"),
        (headers, {"model": "m", "max_tokens": 5,
                   "messages": [{"role": "system", "content": "x"}]}, 400, "role"),
    ]
    for send_headers, body, status, text in cases:
        async with session.post(url, json=body, headers=send_headers) as answer:
            document = await answer.json()
        assert answer.status == status, body
        assert document["type"] == "error"
        assert text in str(document["error"]), document


async def test_openai_fake_rejects_malformed_requests(fake_llm: FakeLlm,
                                                      session: aiohttp.ClientSession) -> None:
    url = f"{fake_llm.openai_base_url}/chat/completions"
    auth = {"Authorization": f"Bearer {fake_llm.openai_key}"}
    cases = [
        ({}, {"model": "m", "messages": MESSAGES}, 401, "API key"),
        (auth, {"messages": MESSAGES}, 400, "model parameter"),
        (auth, {"model": "m"}, 400, "'messages'"),
    ]
    for send_headers, body, status, text in cases:
        async with session.post(url, json=body, headers=send_headers) as answer:
            document = await answer.json()
        assert answer.status == status, body
        assert text in document["error"]["message"]
