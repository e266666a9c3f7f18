"""Real-shaped Jira webhook bodies (tests/contracts/jira_webhooks, sources in SOURCES.md)
become the trigger a person would expect: the right issue, user ids by accountId on
Cloud and by name on Data Center, and empty smart values read as missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mwai.errors import WebhookError
from mwai.server import webhook as wh

BODIES = Path(__file__).parents[1] / "contracts" / "jira_webhooks"

EXPECTED = {
    "automation_issue_data.json": wh.Trigger(
        "PROJ-42", "automation", "automation", "Story", "Backlog", "712020:ai-account", None,
        "PROJ"),
    "automation_issue_data_jira_format.json": wh.Trigger(
        "PROJ-48", "automation", "automation", "Story", "Plan Review", None, None, "PROJ"),
    "automation_custom_empty_smart_values.json": wh.Trigger(
        "PROJ-43", "automation", "issue_assigned", "Story", "Backlog", None, None, "PROJ"),
    "automation_custom_camel_empty_key.json": wh.Trigger(
        "PROJ-44", "automation", "automation"),
    "cloud_issue_updated_assigned.json": wh.Trigger(
        "PROJ-45", "jira", "jira:issue_updated", "Story", "Backlog", "712020:ai-account", None,
        "PROJ"),
    "cloud_comment_created.json": wh.Trigger(
        "PROJ-46", "jira", "comment_created", "Story", "Plan Review", None, None, "PROJ"),
    "datacenter_issue_updated.json": wh.Trigger(
        "PROJ-47", "jira", "jira:issue_updated", "Sub-task", "In Progress", "ai-runner",
        "PROJ-40", "PROJ"),
}


def test_every_fixture_has_an_expectation_and_a_source() -> None:
    files = sorted(path.name for path in BODIES.glob("*.json"))
    assert files == sorted(EXPECTED)
    sources = (BODIES / "SOURCES.md").read_text()
    assert all(f"`{name}`" in sources for name in files)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_bodies_become_the_expected_trigger(name: str) -> None:
    document = wh.parse_body((BODIES / name).read_bytes())
    assert wh.to_trigger(document) == EXPECTED[name]


@pytest.mark.parametrize("body", [
    {"issue_key": ""},
    {"issue_key": "", "issueKey": ""},
    {"key": "", "fields": {}},
    {},
])
def test_an_empty_or_absent_key_is_a_clear_400(body: dict[str, object]) -> None:
    with pytest.raises(WebhookError) as caught:
        wh.to_trigger(body)
    assert caught.value.status == 400
    assert "no issue key" in caught.value.message


def test_a_parent_key_that_is_not_a_key_is_still_refused() -> None:
    with pytest.raises(WebhookError) as caught:
        wh.to_trigger({"issue_key": "P-1", "parent_key": "not a key"})
    assert caught.value.status == 422
