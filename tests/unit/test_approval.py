"""Only the human reviewer approves a plan: the rule on Jira's history, and its parser."""

from __future__ import annotations

import dataclasses

import pytest

from mwai.clients.jira import parse_status_changes
from mwai.model import Issue, StatusChange
from mwai.runner.router import Action, RoutingRules, approval, route
from mwai.settings import Settings

AI = "ai-account"
HUMAN = "human-account"
COLLEAGUE = "colleague-account"
RULES = RoutingRules.of(Settings.defaults(jira_ai_account_id=AI, jira_human_account_id=HUMAN))
APPROVED_LOOKING = Issue(
    key="PROJ-1", summary="Add a greeting", description="", status="In Progress",
    issue_type="Story", is_subtask=False, assignee_account_id=AI, parent_key=None,
    project_key="PROJ", labels=(), subtask_keys=())


def moves(*steps: tuple[str | None, str]) -> list[StatusChange]:
    return [StatusChange(10 + n, author, status) for n, (author, status) in enumerate(steps)]


def decide(changes: list[StatusChange], rules: RoutingRules = RULES) -> tuple[Action, str]:
    decision = approval(route(APPROVED_LOOKING, rules), APPROVED_LOOKING, changes, rules)
    return decision.action, decision.reason


def test_the_reviewers_move_to_in_progress_approves() -> None:
    action, reason = decide(moves((AI, "Plan Review"), (HUMAN, "In Progress")))
    assert action is Action.START
    assert f"the reviewer {HUMAN} moved it to In Progress" in reason


@pytest.mark.parametrize(("changes", "who"), [
    (moves((AI, "Plan Review"), (COLLEAGUE, "In Progress")), f"by {COLLEAGUE}"),
    (moves((AI, "Plan Review"), (AI, "In Progress")), f"by {AI}"),
    (moves((AI, "Plan Review"), (None, "In Progress")), "by an anonymous user"),
    # The reviewer approved once, then someone else moved it out and back: not approved.
    (moves((HUMAN, "In Progress"), (COLLEAGUE, "Blocked"), (COLLEAGUE, "in progress")),
     f"by {COLLEAGUE}"),
    ([], "does not show who moved it there"),  # created or imported straight into it
    (moves((HUMAN, "Plan Review")), "does not show who moved it there"),
])
def test_anyone_else_moving_it_is_no_approval(changes: list[StatusChange], who: str) -> None:
    action, reason = decide(changes)
    assert action is Action.NOOP
    assert who in reason and "only the reviewer approves a plan" in reason
    assert reason.startswith("PROJ-1 ")


def test_the_latest_move_counts_whatever_order_jira_lists_them_in() -> None:
    changes = moves((COLLEAGUE, "In Progress"), (HUMAN, "Plan Review"), (HUMAN, "In Progress"))
    assert decide(list(reversed(sorted(changes, key=lambda c: c.history_id))))[0] is Action.NOOP
    # approval() takes the history in Jira's order (parse_status_changes sorts it).
    assert decide(changes)[0] is Action.START


def test_an_empty_reviewer_setting_approves_nothing() -> None:
    rules = dataclasses.replace(RULES, human_account_id="")
    action, reason = decide(moves((None, "In Progress")), rules)
    assert action is Action.NOOP and "JIRA_HUMAN_ACCOUNT_ID is empty" in reason


def test_other_actions_pass_through_untouched() -> None:
    planned = route(dataclasses.replace(APPROVED_LOOKING, status="Backlog"), RULES)
    assert planned.action is Action.PLAN
    assert approval(planned, APPROVED_LOOKING, [], RULES) is planned


def test_status_changes_parsed_from_cloud_and_data_center_histories() -> None:
    histories = [
        {"id": "10210", "author": {"name": "jdoe", "key": "JIRAUSER1"},  # Data Center
         "items": [{"field": "status", "toString": "In Progress"},
                   {"field": "assignee", "toString": "AI Runner"}]},
        {"id": "10200", "author": {"accountId": HUMAN},
         "items": [{"field": "status", "toString": "Plan Review"}]},
        {"id": "10205", "author": None, "items": [{"field": "labels", "toString": "x"}]},
        {"id": "not-a-number", "author": {"accountId": COLLEAGUE},
         "items": [{"field": "status", "toString": "Done"}]},
        "garbage",
    ]
    assert parse_status_changes(histories) == [
        StatusChange(10200, HUMAN, "Plan Review"), StatusChange(10210, "jdoe", "In Progress")]
    assert parse_status_changes(None) == []
