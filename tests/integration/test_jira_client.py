"""JiraClient against FakeJira over real HTTP on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.clients.adf import stored_size
from mwai.clients.http import HttpError
from mwai.clients.jira import JiraClient, JiraConfig
from mwai.demo.fakes.jira import COMMENT_NOT_VALID, NOT_ADF, NOT_FOUND, FakeJira
from mwai.errors import PermanentError, TransientError
from mwai.server.app import create_app
from mwai.settings import Settings
from tests.conftest import SECRET, make_settings
from tests.integration.helpers import db_rows, wait_for

RETRIES = 2


@pytest.fixture
async def fake() -> AsyncIterator[FakeJira]:
    async with FakeJira() as jira:
        yield jira


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def jira_settings(tmp_path: Path, fake: FakeJira, **changes: Any) -> Settings:
    values = {**fake.settings_changes(), "http_retries": RETRIES, "http_timeout_s": 5.0,
              **changes}
    return dataclasses.replace(make_settings(tmp_path), **values)


@pytest.fixture
def make_client(tmp_path: Path, fake: FakeJira, session: aiohttp.ClientSession,
                ) -> Callable[..., JiraClient]:
    def build(**changes: Any) -> JiraClient:
        return JiraClient(JiraConfig.of(jira_settings(tmp_path, fake, **changes)), session,
                          backoff_base_s=0.01, backoff_max_s=0.05)
    return build


@pytest.fixture
def client(make_client: Callable[..., JiraClient]) -> JiraClient:
    return make_client()


async def test_get_issue_reads_every_field(fake: FakeJira, client: JiraClient) -> None:
    parent = fake.create_issue(summary="Add login", description="## Goal\n\n- a form",
                               assignee=fake.ai_account_id, labels=["web", "ai"])
    sub = fake.create_issue(parent=parent, summary="Login form", status="In Progress")

    issue = await client.get_issue(parent)

    assert (issue.key, issue.summary, issue.status) == (parent, "Add login", "Backlog")
    assert issue.description == "## Goal\n\n- a form"
    assert (issue.issue_type, issue.is_subtask) == ("Story", False)
    assert issue.assignee_account_id == fake.ai_account_id
    assert issue.project_key == "PROJ" and issue.parent_key is None
    assert issue.labels == ("web", "ai") and issue.subtask_keys == (sub,)
    subtask = await client.get_issue(sub)
    assert subtask.is_subtask and subtask.parent_key == parent
    assert subtask.assignee_account_id is None and subtask.status == "In Progress"
    request = fake.calls("GET", f"/issue/{parent}")[0]
    assert request.path == f"/rest/api/3/issue/{parent}" and request.auth_ok
    assert request.query["fields"].split(",") == [
        "summary", "description", "status", "issuetype", "assignee", "parent", "project",
        "labels", "subtasks"]


async def test_comments_are_read_across_pages_oldest_first(
        fake: FakeJira, client: JiraClient) -> None:
    fake.max_page_size = 2  # the server caps pages below what the client asks for
    key = fake.create_issue()
    for number in range(5):
        fake.human_comment(key, f"comment {number}")

    comments = await client.get_comments(key)

    assert [c.body for c in comments] == [f"comment {n}" for n in range(5)]
    assert {c.author_account_id for c in comments} == {fake.human_account_id}
    assert all(c.created.endswith("+0000") for c in comments)
    pages = fake.calls("GET", f"/issue/{key}/comment")
    assert [p.query["startAt"] for p in pages] == ["0", "2", "4"]
    assert {p.query["orderBy"] for p in pages} == {"created"}


async def test_add_comment_posts_an_adf_document(fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue()

    comment_id = await client.add_comment(key, "Plan:\n\n- step **one**\n- step two")

    assert fake.comments_of(key) == ["Plan:\n\n- step **one**\n- step two"]
    assert fake.comment_records(key)[0].id == comment_id
    assert fake.comment_records(key)[0].author_account_id == fake.ai_account_id
    body = fake.calls("POST", "/comment")[0].json["body"]
    assert body["type"] == "doc" and body["version"] == 1
    assert [node["type"] for node in body["content"]] == ["paragraph", "bulletList"]
    assert (await client.get_comments(key))[0].body == "Plan:\n\n- step **one**\n- step two"


async def test_v3_comment_as_plain_string_is_rejected_like_jira(
        fake: FakeJira, session: aiohttp.ClientSession) -> None:
    key = fake.create_issue()
    async with session.post(f"{fake.url}/rest/api/3/issue/{key}/comment",
                            json={"body": "just text"}, headers=fake.auth_headers()) as answer:
        assert answer.status == 400
        assert (await answer.json())["errors"] == {"comment": COMMENT_NOT_VALID}
    async with session.post(f"{fake.url}/rest/api/3/issue", headers=fake.auth_headers(),
                            json={"fields": {"project": {"key": "PROJ"}, "summary": "s",
                                             "issuetype": {"name": "Task"},
                                             "description": "plain"}}) as answer:
        assert answer.status == 400
        assert (await answer.json())["errors"] == {"description": NOT_ADF}
    assert fake.comments_of(key) == [] and len(fake.issues) == 1


async def test_v2_mode_sends_and_reads_plain_strings(
        fake: FakeJira, make_client: Callable[..., JiraClient]) -> None:
    client = make_client(jira_api_version="2")
    parent = fake.create_issue(description="Plain description")
    fake.human_comment(parent, "human says hi")

    issue = await client.get_issue(parent)
    comment_id = await client.add_comment(parent, "- mwai answers")
    sub_key = await client.create_subtask(issue, "Do it", "Sub-task text")

    assert issue.description == "Plain description"
    assert [c.body for c in await client.get_comments(parent)] == [
        "human says hi", "- mwai answers"]
    assert comment_id == fake.comment_records(parent)[1].id
    assert fake.calls("POST", "/comment")[0].json == {"body": "- mwai answers"}
    assert fake.issue(sub_key).description == "Sub-task text"
    assert all(r.path.startswith("/rest/api/2/") for r in fake.requests)


async def test_transition_by_status_name_uses_the_workflow_transition(
        fake: FakeJira, client: JiraClient) -> None:
    reviewed = fake.create_issue(status="Plan Review")
    fresh = fake.create_issue(status="Backlog")

    await client.transition_to(reviewed, "In Progress")
    await client.transition_to(fresh, "in progress")  # status names compare case-blind

    assert fake.issue(reviewed).status == "In Progress"
    assert fake.issue(fresh).status == "In Progress"
    posted = [r.json for r in fake.calls("POST", "/transitions")]
    # "Approve plan" from Plan Review, "Start work" from Backlog.
    assert posted == [{"transition": {"id": "31"}}, {"transition": {"id": "41"}}]


async def test_transition_to_the_current_status_does_nothing(
        fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue(status="In Testing")
    await client.transition_to(key, "In Testing")
    await client.transition_to(key, "In Testing", current_status="In Testing")
    assert fake.calls("POST", "/transitions") == []
    assert fake.issue(key).status == "In Testing"


async def test_transition_to_an_unknown_status_names_the_choices(
        fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue(status="Backlog")
    with pytest.raises(PermanentError) as caught:
        await client.transition_to(key, "Shipped")
    message = str(caught.value)
    assert f"{key} cannot move from 'Backlog' to 'Shipped'" in message
    assert "'Send to plan review' -> Plan Review" in message and "JIRA_STATUS_" in message
    assert fake.issue(key).status == "Backlog"


async def test_assign_and_unassign(fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue(assignee=fake.ai_account_id)
    await client.assign(key, fake.human_account_id)
    assert fake.issue(key).assignee_account_id == fake.human_account_id
    await client.assign(key, None)
    assert fake.issue(key).assignee_account_id is None
    assert [r.json for r in fake.calls("PUT", "/assignee")] == [
        {"accountId": fake.human_account_id}, {"accountId": None}]
    with pytest.raises(HttpError) as caught:
        await client.assign(key, "someone@example.com")  # an email is not an accountId
    assert caught.value.status == 400 and "cannot be assigned" in str(caught.value)


async def test_create_subtask_finds_the_projects_subtask_type(
        session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with FakeJira(subtask_type_name="AI Sub-task") as fake:
        client = JiraClient(JiraConfig.of(jira_settings(tmp_path, fake)), session)
        parent_key = fake.create_issue(project="WEB", summary="Parent")
        parent = await client.get_issue(parent_key)

        first = await client.create_subtask(parent, "Form\nwith a newline", "Build **it**")
        second = await client.create_subtask(parent, "x" * 300, "")

        created = fake.issue(first)
        assert (created.issue_type, created.parent_key, created.project) == (
            "AI Sub-task", parent_key, "WEB")
        assert created.summary == "Form with a newline"
        assert len(fake.issue(second).summary) == 255
        assert fake.issue(parent_key).subtask_keys == [first, second]
        fields = fake.calls("POST", "/rest/api/3/issue")[0].json["fields"]
        assert fields["issuetype"] == {"id": "10005"}
        assert fields["project"] == {"key": "WEB"} and fields["parent"] == {"key": parent_key}
        assert fields["description"]["type"] == "doc"
        assert len(fake.calls("GET", "/createmeta/WEB/issuetypes")) == 1  # cached


async def test_create_subtask_without_a_subtask_type_is_a_clear_error(
        fake: FakeJira, client: JiraClient) -> None:
    parent = await client.get_issue(fake.create_issue())
    # A project whose issue type scheme has no sub-task type.
    fake.issue_types = lambda: [  # type: ignore[method-assign]
        {"id": "1", "name": "Task", "subtask": False}]
    with pytest.raises(PermanentError, match="PROJ has no sub-task issue type .*Task"):
        await client.create_subtask(parent, "s", "d")


async def test_list_subtasks_orders_by_key_number(fake: FakeJira, client: JiraClient) -> None:
    parent = fake.create_issue("PROJ-1")
    fake.create_issue("PROJ-10", parent=parent, summary="ten", status="Done")
    fake.create_issue("PROJ-9", parent=parent, summary="nine")

    subtasks = await client.list_subtasks(parent)

    assert [(s.key, s.summary, s.status) for s in subtasks] == [
        ("PROJ-9", "nine", "Backlog"), ("PROJ-10", "ten", "Done")]
    assert all(s.is_subtask and s.parent_key == parent for s in subtasks)


async def test_myself(fake: FakeJira, client: JiraClient) -> None:
    me = await client.myself()
    assert me["accountId"] == fake.ai_account_id and me["emailAddress"] == fake.email


async def test_429_with_retry_after_then_success(fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue()
    fake.fail_next(1, status=429, retry_after_s=0.1)
    assert (await client.get_issue(key)).key == key
    assert [r.status for r in fake.calls("GET")] == [429, 200]


async def test_html_page_with_200_is_retried(fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue()
    fake.html_next(1)
    assert (await client.get_issue(key)).key == key
    assert len(fake.calls("GET")) == 2


async def test_slow_answer_times_out_and_is_retried(
        fake: FakeJira, make_client: Callable[..., JiraClient]) -> None:
    client = make_client(http_timeout_s=0.2)
    key = fake.create_issue()
    fake.slow_next(1, delay_s=0.6)
    assert (await client.get_issue(key)).key == key
    assert len(fake.calls("GET")) == 2


async def test_500_until_retries_run_out_is_transient(
        fake: FakeJira, client: JiraClient) -> None:
    key = fake.create_issue()
    fake.fail_next(RETRIES + 1, status=500)
    with pytest.raises(TransientError, match="500"):
        await client.add_comment(key, "hello")
    assert len(fake.calls("POST", "/comment")) == RETRIES + 1
    assert fake.comments_of(key) == []
    assert await client.add_comment(key, "hello")  # the service is back


async def test_unknown_issue_is_permanent_with_jiras_message(client: JiraClient) -> None:
    with pytest.raises(PermanentError) as caught:
        await client.get_issue("NOPE-1")
    assert isinstance(caught.value, HttpError) and caught.value.status == 404
    assert NOT_FOUND in str(caught.value)


async def test_wrong_token_is_401_and_never_echoes_the_token(
        fake: FakeJira, make_client: Callable[..., JiraClient]) -> None:
    client = make_client(jira_api_token="wrong-token-value")
    with pytest.raises(HttpError) as caught:
        await client.myself()
    assert caught.value.status == 401
    assert "wrong-token-value" not in str(caught.value)
    assert fake.requests[0].auth_ok is False


async def test_a_comment_longer_than_jira_accepts_is_cut_not_refused(
        fake: FakeJira, client: JiraClient, session: aiohttp.ClientSession) -> None:
    key = fake.create_issue()
    too_long = {"body": {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "y" * 40_000}]}]}}
    async with session.post(f"{fake.url}/rest/api/3/issue/{key}/comment", json=too_long,
                            headers=fake.auth_headers()) as answer:
        assert answer.status == 400  # what the real site answers

    await client.add_comment(key, "agent output:\n" + "y" * 40_000)

    (stored,) = fake.comments_of(key)
    assert stored.startswith("agent output:\nyyy") and stored.endswith("than Jira accepts]")


async def test_a_long_plan_is_bounded_by_its_stored_adf_size_not_its_text(
        fake: FakeJira, client: JiraClient) -> None:
    """A list is several times larger as ADF than as text: 1,500 steps are ~30 KB of text
    but ~150 KB of ADF, which Jira refuses; mwai cuts it to what Jira stores."""
    key = fake.create_issue()
    plan = "## Plan\n\n" + "\n".join(f"- step {n}: change one file" for n in range(3000))

    await client.add_comment(key, plan)

    (record,) = fake.comment_records(key)
    assert isinstance(record.body, dict)
    assert stored_size(record.body) <= 32_767
    assert record.body["content"][1]["type"] == "bulletList"
    (text,) = fake.comments_of(key)
    assert text.startswith("## Plan\n\n- step 0: change one file\n- step 1:")
    assert text.endswith("than Jira accepts]") and "step 2999" not in text


async def test_rule_payloads_are_accepted_by_the_mwai_webhook(
        aiohttp_client: Any, settings: Settings) -> None:
    mwai = await aiohttp_client(create_app(settings))
    async with FakeJira(webhook_url=str(mwai.make_url("/webhook/jira")),
                        webhook_secret=SECRET) as fake:
        key = fake.create_issue(summary="Parent")
        fake.human_assign(key, fake.ai_account_id)
        await fake.wait_webhooks()

        assert [d.status for d in fake.webhook_deliveries] == [200]
        await wait_for(lambda: db_rows(settings.db, "SELECT issue_key, status FROM runs") == [
            (key, "completed")], what="the run of the rule's webhook")


async def test_a_retry_is_a_warning_line_naming_the_service(
        fake: FakeJira, client: JiraClient, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 19: a retried call is WARNING (`journalctl -p warning` shows it)."""
    key = fake.create_issue()
    fake.fail_next(1, status=503)
    with caplog.at_level("INFO", logger="mwai.http"):
        assert (await client.get_issue(key)).key == key
    retries = [r for r in caplog.records if r.name == "mwai.http"]
    assert [(r.levelname, r.getMessage()) for r in retries] == [
        ("WARNING", "Retrying jira request")], retries


@pytest.fixture
async def data_center() -> AsyncIterator[FakeJira]:
    async with FakeJira(data_center=True, ai_account_id="ai-runner",
                        human_account_id="jsmith") as jira:
        yield jira


async def test_data_center_users_by_username_with_a_personal_access_token(
        tmp_path: Path, data_center: FakeJira, session: aiohttp.ClientSession) -> None:
    """JIRA_API_VERSION=2 and JIRA_AUTH=bearer: what a Data Center team configures."""
    settings = jira_settings(tmp_path, data_center)
    assert (settings.jira_auth, settings.jira_api_version, settings.jira_email) == (
        "bearer", "2", "")
    client = JiraClient(JiraConfig.of(settings), session)
    key = data_center.create_issue(summary="SSO", assignee="ai-runner")
    data_center.human_comment(key, "please start")
    data_center.human_transition(key, "Plan Review")

    issue = await client.get_issue(key)
    await client.assign(key, "jsmith")
    (comment,) = await client.get_comments(key)
    changes = await client.status_changes(key, ("status", "assignee"))

    assert issue.assignee_account_id == "ai-runner"
    assert data_center.issue(key).assignee_account_id == "jsmith"
    assert data_center.calls("PUT", "/assignee")[0].json == {"name": "jsmith"}
    assert comment.author_account_id == "jsmith" and comment.body == "please start"
    assert [(c.field, c.author_account_id) for c in changes] == [
        ("status", "jsmith"), ("assignee", "ai-runner")]
    assert all(r.auth_ok and r.path.startswith("/rest/api/2/") for r in data_center.requests)
    assert (await client.myself())["name"] == "ai-runner"


async def test_data_center_refuses_what_only_cloud_accepts(
        data_center: FakeJira, fake: FakeJira, session: aiohttp.ClientSession) -> None:
    key = data_center.create_issue(assignee="ai-runner")
    url = f"{data_center.url}/rest/api/2/issue/{key}/assignee"
    async with session.put(url, json={"accountId": "jsmith"},
                           headers=data_center.auth_headers()) as answer:
        assert answer.status == 400
        assert "name" in (await answer.json())["errors"]["assignee"]
    async with session.get(f"{data_center.url}/rest/api/3/issue/{key}",
                           headers=data_center.auth_headers()) as answer:
        assert answer.status == 404  # no REST v3 on Data Center
    async with session.get(f"{fake.url}/rest/api/3/myself",
                           headers={"Authorization": f"Bearer {fake.api_token}"}) as answer:
        assert answer.status == 401  # Cloud's API tokens are basic auth only
    assert data_center.issue(key).assignee_account_id == "ai-runner"
