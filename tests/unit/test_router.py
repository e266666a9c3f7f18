"""The router: the DESIGN table, row by row, plus the edges people get wrong."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mwai.model import Issue
from mwai.runner.router import Action, RoutingRules, route
from mwai.settings import Settings

AI = "ai-account"
HUMAN = "human-account"
SETTINGS = Settings.defaults(jira_ai_account_id=AI, jira_human_account_id=HUMAN)
RULES = RoutingRules.of(SETTINGS)


def issue(**changes: Any) -> Issue:
    base = Issue(
        key="PROJ-1", summary="Add a greeting", description="", status="Backlog",
        issue_type="Story", is_subtask=False, assignee_account_id=AI, parent_key=None,
        project_key="PROJ", labels=(), subtask_keys=(),
    )
    return dataclasses.replace(base, **changes)


def subtask(**changes: Any) -> Issue:
    fields: dict[str, Any] = {"key": "PROJ-2", "issue_type": "Sub-task", "is_subtask": True,
                              "parent_key": "PROJ-1", "status": "In Progress"}
    return issue(**{**fields, **changes})


@pytest.mark.parametrize(("given", "expected"), [
    (issue(), Action.PLAN),
    (issue(status="In Progress"), Action.START),
    (subtask(), Action.EXECUTE),
    (subtask(status="Done"), Action.SUBTASK_DONE),
    (subtask(status="Done", assignee_account_id=HUMAN), Action.SUBTASK_DONE),
    (subtask(status="Done", assignee_account_id=None), Action.SUBTASK_DONE),
])
def test_design_table_rows(given: Issue, expected: Action) -> None:
    decision = route(given, RULES)
    assert decision.action is expected
    assert given.key in decision.reason


@pytest.mark.parametrize("given", [
    issue(assignee_account_id=HUMAN),
    issue(assignee_account_id=None),
    issue(status="In Progress", assignee_account_id=HUMAN),
    issue(status="Plan Review"),
    issue(status="Done"),
    issue(status="Blocked"),
    issue(status="In Testing"),
    subtask(assignee_account_id=HUMAN),
    subtask(status="Backlog"),
    subtask(status="In Testing"),
    subtask(status="Blocked"),
    subtask(status="Plan Review"),
])
def test_everything_else_is_noop_with_a_reason(given: Issue) -> None:
    decision = route(given, RULES)
    assert decision.action is Action.NOOP
    assert given.key in decision.reason


def test_parent_done_is_not_subtask_done() -> None:
    assert route(issue(status="Done", assignee_account_id=HUMAN), RULES).action is Action.NOOP


def test_assignee_is_compared_by_account_id_not_by_name() -> None:
    # A display name equal to the account id's text must not count; only the id does.
    other = RoutingRules.of(Settings.defaults(jira_ai_account_id="557058:abc"))
    assert route(issue(assignee_account_id="557058:abc"), other).action is Action.PLAN
    assert route(issue(assignee_account_id="557058:ABC"), other).action is Action.NOOP
    assert route(issue(assignee_account_id="AI Runner"), other).action is Action.NOOP


def test_unset_ai_account_never_matches_an_unassigned_issue() -> None:
    unset = RoutingRules.of(Settings.defaults(jira_ai_account_id=""))
    decision = route(issue(assignee_account_id=None), unset)
    assert decision.action is Action.NOOP
    assert "JIRA_AI_ACCOUNT_ID" in decision.reason


def test_skip_label_wins_over_every_action() -> None:
    for given in (issue(), issue(status="In Progress"), subtask(), subtask(status="Done")):
        decision = route(dataclasses.replace(given, labels=("backend", "ai:ignore")), RULES)
        assert decision.action is Action.NOOP
        assert "ai:ignore" in decision.reason


def test_skip_labels_come_from_settings() -> None:
    custom = RoutingRules.of(dataclasses.replace(SETTINGS, skip_labels=("no-robots",)))
    assert route(issue(labels=("ai:ignore",)), custom).action is Action.PLAN
    assert route(issue(labels=("no-robots",)), custom).action is Action.NOOP


def test_status_names_come_from_settings() -> None:
    custom = RoutingRules.of(dataclasses.replace(
        SETTINGS, jira_status_backlog="To Do", jira_status_in_progress="Doing",
        jira_status_done="Closed",
    ))
    assert route(issue(status="To Do"), custom).action is Action.PLAN
    assert route(issue(status="Backlog"), custom).action is Action.NOOP
    assert route(issue(status="Doing"), custom).action is Action.START
    assert route(subtask(status="Doing"), custom).action is Action.EXECUTE
    assert route(subtask(status="In Progress"), custom).action is Action.NOOP
    assert route(subtask(status="Closed"), custom).action is Action.SUBTASK_DONE
    assert route(subtask(status="Done"), custom).action is Action.NOOP


def test_status_names_are_compared_case_insensitively() -> None:
    assert route(issue(status="BACKLOG"), RULES).action is Action.PLAN
    assert route(subtask(status="in progress"), RULES).action is Action.EXECUTE


def test_noop_reason_names_the_state() -> None:
    decision = route(issue(status="Plan Review"), RULES)
    assert "Plan Review" in decision.reason
    decision = route(issue(assignee_account_id=HUMAN), RULES)
    assert HUMAN in decision.reason
