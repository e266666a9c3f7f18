"""Pure routing: what a run should do, decided from the issue's *current* state.

The webhook is only a trigger; the run re-reads the issue from Jira and calls
``route``. Because the answer depends only on the present state, duplicates and
late deliveries are harmless: a stale trigger finds nothing to do (NOOP, with
the reason recorded on the run).

| current state                                   | action       |
|-------------------------------------------------|--------------|
| parent, Backlog, assigned to AI                 | PLAN         |
| parent, In Progress, assigned to AI (approved)  | START        |
| sub-task, In Progress, assigned to AI           | EXECUTE      |
| sub-task, Done                                  | SUBTASK_DONE |
| anything else (or a skip label)                 | NOOP         |

START also needs the approval, read from Jira's history (``approval``): the
issue's latest move to In Progress was made by the human reviewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from mwai.model import Issue, StatusChange
from mwai.settings import Settings


class Action(StrEnum):
    PLAN = "plan"
    START = "start"
    EXECUTE = "execute"
    SUBTASK_DONE = "subtask_done"
    NOOP = "noop"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def same_status(actual: str, configured: str) -> bool:
    """Jira status names compared the way Jira shows them to people: case-insensitively."""
    return actual.strip().casefold() == configured.strip().casefold()


@dataclass(frozen=True, slots=True)
class RoutingRules:
    """What ``route`` holds an issue against: the AI's Jira account, the workflow's
    status names and the labels that keep mwai away."""

    ai_account_id: str  # JIRA_AI_ACCOUNT_ID; empty matches no issue, not the unassigned
    human_account_id: str  # JIRA_HUMAN_ACCOUNT_ID: the one who approves plans
    status_backlog: str
    status_in_progress: str
    status_done: str
    skip_labels: tuple[str, ...]  # MWAI_SKIP_LABELS

    @classmethod
    def of(cls, settings: Settings) -> RoutingRules:
        return cls(ai_account_id=settings.jira_ai_account_id,
                   human_account_id=settings.jira_human_account_id,
                   status_backlog=settings.jira_status_backlog,
                   status_in_progress=settings.jira_status_in_progress,
                   status_done=settings.jira_status_done,
                   skip_labels=settings.skip_labels)


def route(issue: Issue, rules: RoutingRules) -> Decision:
    kind = "sub-task" if issue.is_subtask else "parent"
    skipped = sorted(set(issue.labels) & set(rules.skip_labels))
    if skipped:
        return Decision(Action.NOOP, f"{issue.key} has the label {skipped[0]!r} "
                                     "(MWAI_SKIP_LABELS): mwai leaves it alone")
    if issue.is_subtask and same_status(issue.status, rules.status_done):
        return Decision(Action.SUBTASK_DONE, f"sub-task {issue.key} is {rules.status_done}")
    ai = rules.ai_account_id
    if not ai or issue.assignee_account_id != ai:
        who = issue.assignee_account_id or "nobody"
        return Decision(Action.NOOP, f"{kind} {issue.key} is assigned to {who}, not to the "
                                     "AI account (JIRA_AI_ACCOUNT_ID)")
    if issue.is_subtask:
        if same_status(issue.status, rules.status_in_progress):
            return Decision(Action.EXECUTE, f"sub-task {issue.key} is "
                                            f"{rules.status_in_progress} and assigned to AI")
    elif same_status(issue.status, rules.status_backlog):
        return Decision(Action.PLAN, f"{issue.key} is {rules.status_backlog} and "
                                     "assigned to AI")
    elif same_status(issue.status, rules.status_in_progress):
        return Decision(Action.START, f"{issue.key} is {rules.status_in_progress} "
                                      "and assigned to AI (plan approved)")
    return Decision(Action.NOOP, f"{kind} {issue.key} is in status {issue.status!r} assigned "
                                 "to AI: nothing to do in that state")


def approval(decision: Decision, issue: Issue, changes: Sequence[StatusChange],
             rules: RoutingRules) -> Decision:
    """START only when the human reviewer approved the plan; otherwise NOOP, saying why.

    Approving is moving the parent to In Progress, and in Jira anyone who may edit
    the ticket may also move it: the history says who did. The latest move to In
    Progress must be the reviewer's (JIRA_HUMAN_ACCOUNT_ID); a colleague, a
    service-desk customer or an automation moving it is no approval.
    """
    if decision.action is not Action.START:
        return decision
    status = rules.status_in_progress
    moves = [change for change in changes if same_status(change.to_status, status)]
    approver = moves[-1].author_account_id if moves else None
    reviewer = rules.human_account_id
    if moves and reviewer and approver == reviewer:
        return Decision(Action.START, f"{decision.reason}; the reviewer {reviewer} moved it to "
                                      f"{status}")
    mover = (f"was moved to {status} by {approver or 'an anonymous user'}" if moves else
             f"is {status} but Jira's history does not show who moved it there")
    return Decision(Action.NOOP, f"{issue.key} {mover}, not by the plan reviewer "
                                 f"({reviewer or 'JIRA_HUMAN_ACCOUNT_ID is empty'}): only the "
                                 "reviewer approves a plan; the reviewer approves by moving it "
                                 f"out of {status} and back")
