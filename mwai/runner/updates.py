"""The Jira updates a run makes, each at most once.

A transition, an assignment or a comment is journaled under a step name
(mwai.runner.journal), so a retried attempt of the same run skips what is done;
a comment is also looked for on the issue first (by its run marker), so it is not
posted twice even when the journal entry was lost. Starting the next sub-task and
reporting a failed run are made of these. The actions themselves (what to update
when) are in mwai.runner.flow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mwai.clients.jira import JiraClient
from mwai.logs import FLOW_LOGGER
from mwai.model import Comment, Issue
from mwai.queue.writes import dumps
from mwai.runner.agent.output import (
    QUOTED_SUMMARY_MAX_CHARS,
    AgentResult,
    blocked_comment,
    blocking_failures,
)
from mwai.runner.journal import RunJournal, run_marker
from mwai.runner.router import Action, same_status
from mwai.scrub import scrub
from mwai.settings import Settings

# The flow's warnings, under the flow's logger as before this module was split out of it.
log = logging.getLogger(FLOW_LOGGER)

ERROR_MAX_CHARS = 600


@dataclass(frozen=True)
class UpdatesConfig:
    """What the updates need of the settings: the two Jira accounts, the status names
    that mean a sub-task was started, and mwai's secrets (scrubbed from comments)."""

    ai_account_id: str  # JIRA_AI_ACCOUNT_ID
    human_account_id: str  # JIRA_HUMAN_ACCOUNT_ID; empty: a failed run stays assigned
    status_in_progress: str
    status_in_testing: str
    status_done: str
    status_blocked: str
    secrets: tuple[str, ...] = field(repr=False)  # kept out of reprs and tracebacks

    @classmethod
    def of(cls, settings: Settings) -> UpdatesConfig:
        return cls(ai_account_id=settings.jira_ai_account_id,
                   human_account_id=settings.jira_human_account_id,
                   status_in_progress=settings.jira_status_in_progress,
                   status_in_testing=settings.jira_status_in_testing,
                   status_done=settings.jira_status_done,
                   status_blocked=settings.jira_status_blocked,
                   secrets=tuple(settings.secret_values()))


class IssueUpdates:
    """Journaled writes to the issue tracker on behalf of one processor."""

    def __init__(self, config: UpdatesConfig, jira: JiraClient) -> None:
        self.config = config
        self.jira = jira

    async def transition(self, run: RunJournal, key: str, status: str, step: str) -> None:
        async def move() -> dict[str, Any]:
            await self.jira.transition_to(key, status)
            return {"issue_key": key, "status": status}
        await run.once(step, f"{key} moved to {status}", move)

    async def assign(self, run: RunJournal, key: str, account_id: str, step: str) -> None:
        who = "AI" if account_id == self.config.ai_account_id else "the human"

        async def assign() -> dict[str, Any]:
            await self.jira.assign(key, account_id)
            return {"issue_key": key, "account_id": account_id}
        await run.once(step, f"{key} assigned to {who}", assign)

    async def comment(self, run: RunJournal, key: str, text: str, step: str,
                      existing: list[Comment] | None = None, marker: str | None = None
                      ) -> dict[str, Any]:
        """Post a comment once: not if this run journaled it or Jira already shows it
        (after a restart, read again once a request of the killed attempt can no longer
        land)."""
        ai = self.config.ai_account_id

        def ours(comments: list[Comment]) -> dict[str, Any] | None:
            for comment in comments:
                mine = marker in comment.body if marker else run.marked(comment.body)
                if mine and comment.author_account_id in (ai, None):
                    return {"issue_key": key, "comment_id": comment.id, "found": True}
            return None

        async def find() -> dict[str, Any] | None:
            return ours(await self.jira.get_comments(key))

        async def post() -> dict[str, Any]:
            found = ours(existing or [])
            if found is not None:
                return found
            body = text if marker else f"{text}\n{run_marker(run.id)}"
            body = scrub(body, self.config.secrets)
            return {"issue_key": key, "comment_id": await self.jira.add_comment(key, body)}
        return await run.once(step, f"Comment posted on {key}", post, find=find)

    async def create_subtask(self, run: RunJournal, parent: Issue, summary: str,
                             description: str, step: str, known: list[str]) -> dict[str, Any]:
        """Create a planned sub-task, labelled with the run and step that made it; after a
        restart, first look for the one a killed attempt asked for (its request may have
        landed after the listing): by that label, or by its summary."""
        labels = [subtask_label(run_id, step) for run_id in run.ids]

        async def find() -> dict[str, Any] | None:
            for sub in await self.jira.list_subtasks(parent.key):
                if sub.key not in known and (set(labels) & set(sub.labels)
                                             or sub.summary.strip() == summary.strip()):
                    return {"key": sub.key, "summary": summary}
            return None

        async def create() -> dict[str, Any]:
            key = await self.jira.create_subtask(parent, summary, description,
                                                 labels=(subtask_label(run.id, step),))
            return {"key": key, "summary": summary}
        return await run.once(step, "Sub-task created", create, find=find)

    async def blocked(self, run: RunJournal, sub: Issue, text: str,
                      comments: list[Comment]) -> None:
        """Nothing was committed: say why (``text``) on the sub-task, hand it to the human."""
        await self.comment(run, sub.key, text, "blocked_comment", comments)
        await self.transition(run, sub.key, self.config.status_blocked, "blocked_transition")
        await self.assign(run, sub.key, self.config.human_account_id, "blocked_assign")

    async def agent_blocked(self, run: RunJournal, sub: Issue, result: AgentResult,
                            comments: list[Comment]) -> None:
        """The agent left no change: each cause with its fix, as an event and on Jira (the
        agent's summary, output and failures come scrubbed of mwai's secrets)."""
        failures = blocking_failures(result)
        first = failures[0]
        await run.ctx.event(f"Agent blocked: {first.reason}", level="warning",
                            reason=first.reason, detail=first.detail, fix=first.fix,
                            reasons=[f.reason for f in failures])
        await self.blocked(run, sub, blocked_comment(
            sub.key, result, failures, self.config.status_in_progress, QUOTED_SUMMARY_MAX_CHARS),
            comments)

    async def start_next(self, run: RunJournal, siblings: list[Issue], current_key: str | None,
                         candidates: list[str] | None = None) -> str | None:
        """Move the next sub-task not started yet to In Progress, assign AI, queue it.

        ``candidates``: only these may be started (START: the plan's sub-tasks, not
        those of an older plan).
        """
        config = self.config
        started = (config.status_in_progress, config.status_in_testing,
                   config.status_done, config.status_blocked)
        busy = [s for s in siblings if s.key != current_key
                and same_status(s.status, config.status_in_progress)]
        # One this run (or a killed attempt of it) began to start: finish starting it,
        # unless a person has taken it meanwhile.
        half = [s for s in busy if (f"start_{s.key}" in run.intents
                                    or run.result(f"start_{s.key}") is not None)
                and run.result(f"enqueue_{s.key}") is None
                and s.assignee_account_id in (None, config.ai_account_id)]
        if busy and not half:
            await run.ctx.event("Next sub-task not started: another one is in progress",
                                in_progress=[s.key for s in busy])
            return None
        following = half[0] if half else next(
            (s for s in siblings if s.key != current_key
             and (candidates is None or s.key in candidates)
             and not any(same_status(s.status, name) for name in started)), None)
        if following is None:
            return None
        key = following.key
        if run.result(f"start_{key}") is None and f"start_{key}" not in run.intents:
            await run.ctx.event(f"Intent: start_{key}", intent=f"start_{key}")
        await self.transition(run, key, config.status_in_progress, f"start_{key}")
        if following.assignee_account_id != config.ai_account_id:
            await self.assign(run, key, config.ai_account_id, f"start_assign_{key}")

        async def enqueue() -> dict[str, Any]:
            payload = dumps({"event_type": "mwai:start_subtask", "issue_key": key,
                             "source": "mwai", "started_by_run": run.id})
            result = await run.ctx.enqueue(key, payload, "mwai:start_subtask")
            return {"issue_key": key, "queued_run_id": result.run_id,
                    "coalesced": result.coalesced}
        await run.once(f"enqueue_{key}", f"Run queued for {key}", enqueue)
        return key

    async def report_failure(self, run: RunJournal, error: str) -> None:
        """One short comment on the issue: what failed and how to retry."""
        if run.result("failure_comment") is not None:
            return
        key, run_id = run.ctx.run.issue_key, run.id
        short = error if len(error) <= ERROR_MAX_CHARS else error[:ERROR_MAX_CHARS] + "..."
        # Handing the issue to the human stops queued duplicate triggers from running
        # the failing action again; assigning it back to AI is the way to retry.
        hand_over = run.action in (Action.PLAN, Action.START, Action.EXECUTE)
        text = (
            f"mwai could not finish run {run_id} on {key}: {short}\n\n"
            "To retry once the cause is fixed: assign this ticket to the AI account again, "
            f"or run `mwai requeue {run_id}` on the mwai server.\n"
            f"{run_marker(run_id)}"
        )
        try:
            comment_id = await self.jira.add_comment(key, text)
            await run.journal("failure_comment", "Failure reported on Jira",
                              comment_id=comment_id)
            if hand_over and self.config.human_account_id:
                await self.assign(run, key, self.config.human_account_id, "failure_assign")
        except Exception as exc:  # the original error matters more than this one
            log.warning("Could not report the failure on Jira", extra={
                "error": scrub(str(exc), self.config.secrets)})


def subtask_label(run_id: int, step: str) -> str:
    """The label of a sub-task mwai created: which run and step made it (Jira labels
    have no spaces); a restarted run finds its sub-task by it even when renamed."""
    return f"mwai-run-{run_id}-{step.replace('_', '-')}"
