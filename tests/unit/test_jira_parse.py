"""Reading Jira's JSON into Issue / Comment, and the text limits Jira enforces."""

from __future__ import annotations

import pytest

from mwai.clients.jira import (
    MAX_TEXT_CHARS,
    TRUNCATION_NOTE,
    fit_text,
    key_number,
    one_line_summary,
    parse_comment,
    parse_issue,
)
from mwai.errors import PermanentError

ADF = {"type": "doc", "version": 1, "content": [
    {"type": "paragraph", "content": [{"type": "text", "text": "Do the thing"}]}]}


def test_cloud_v3_issue() -> None:
    issue = parse_issue({"id": "1", "key": "WEB-7", "fields": {
        "summary": "Sub", "description": ADF, "status": {"name": "In Progress"},
        "issuetype": {"name": "Subtask", "subtask": True},
        "assignee": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "AI"},
        "parent": {"key": "WEB-6"}, "project": {"key": "WEB"}, "labels": ["x", 3],
        "subtasks": []}})
    assert issue.description == "Do the thing"
    assert issue.is_subtask and issue.parent_key == "WEB-6" and issue.project_key == "WEB"
    assert issue.assignee_account_id == "5b10ac8d82e05b22cc7d4ef5"
    assert issue.labels == ("x",)


def test_data_center_v2_issue_uses_the_user_name_and_a_string_description() -> None:
    issue = parse_issue({"key": "OPS-1", "fields": {
        "description": "wiki *text*", "assignee": {"name": "ai.runner", "key": "JIRAUSER1"},
        "issuetype": {"name": "Story", "subtask": False},
        "subtasks": [{"key": "OPS-2"}, {"nokey": 1}, "junk"]}})
    assert issue.description == "wiki *text*"
    assert issue.assignee_account_id == "ai.runner"
    assert issue.subtask_keys == ("OPS-2",)
    assert issue.project_key == "OPS"  # from the key when the project field is missing


def test_issue_with_null_fields() -> None:
    issue = parse_issue({"key": "A-1", "fields": {
        "summary": None, "description": None, "status": None, "issuetype": None,
        "assignee": None, "parent": None, "labels": None, "subtasks": None}})
    assert (issue.summary, issue.description, issue.status, issue.issue_type) == ("", "", "", "")
    assert not issue.is_subtask and issue.assignee_account_id is None
    assert issue.labels == () and issue.subtask_keys == ()


@pytest.mark.parametrize("document", [None, [], "<html>", {"fields": {}}, {"key": 5}])
def test_something_that_is_not_an_issue_is_a_clear_error(document: object) -> None:
    with pytest.raises(PermanentError, match="not an issue.*JIRA_BASE_URL"):
        parse_issue(document)


def test_comments() -> None:
    comment = parse_comment({"id": 10010, "author": {"accountId": "abc"}, "body": ADF,
                             "created": "2024-01-02T03:04:05.678+0000"})
    assert comment is not None
    assert (comment.id, comment.author_account_id, comment.body, comment.created) == (
        "10010", "abc", "Do the thing", "2024-01-02T03:04:05.678+0000")
    anonymous = parse_comment({"id": "1", "author": None, "body": 7})
    assert anonymous is not None and anonymous.author_account_id is None
    assert anonymous.body == ""
    assert parse_comment({"body": "no id"}) is None and parse_comment("x") is None


def test_summaries_are_one_line_within_jiras_limit() -> None:
    assert one_line_summary("  Add\nlogin\tpage ") == "Add login page"
    long = one_line_summary("word " * 100)
    assert len(long) == 255 and long.endswith("…")
    assert one_line_summary("\n") == "(no summary)"


def test_key_numbers_order_keys_numerically() -> None:
    assert sorted(["P-10", "P-9", "P-100"], key=key_number) == ["P-9", "P-10", "P-100"]
    assert key_number("weird") == 0


def test_long_text_is_cut_with_a_note() -> None:
    assert fit_text("short") == "short"
    cut = fit_text("x" * (MAX_TEXT_CHARS * 2))
    assert len(cut) <= MAX_TEXT_CHARS and cut.endswith(TRUNCATION_NOTE)
