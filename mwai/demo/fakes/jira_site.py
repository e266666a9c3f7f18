"""The state of the fake Jira site that mwai/demo/fake_jira.py serves over HTTP.

Accounts, projects, issues and their comments, the workflow, the Automation rules
that POST a flat webhook to mwai when an issue's assignee or status changes, and
the site's records in Jira's JSON shapes (ADF in v3, strings in v2). FakeJira adds
the REST API on top (auth, faults, routes, request validation); tests and the demo
story act as people through the human_* helpers.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from mwai.clients.adf import adf_to_text, text_to_adf
from mwai.logs import DEMO_JIRA_LOGGER

# Logged as the fake that tests and the demo start (FakeJira), not as this module.
log = logging.getLogger(DEMO_JIRA_LOGGER)

SECRET_HEADER = "X-Moveware-Webhook-Secret"

Body = dict[str, Any] | str | None  # ADF document (stored as sent in v3) or v2 string


@dataclass(frozen=True)
class Transition:
    id: str
    name: str
    to: str
    # Statuses it is available from; None: from every other status.
    sources: frozenset[str] | None = None

    def available_from(self, status: str) -> bool:
        if status == self.to:
            return False
        return self.sources is None or status in self.sources


STATUSES: dict[str, tuple[str, str]] = {
    # name: (id, status category key)
    "Backlog": ("10000", "new"),
    "Plan Review": ("10001", "indeterminate"),
    "In Progress": ("3", "indeterminate"),
    "In Testing": ("10002", "indeterminate"),
    "Done": ("10003", "done"),
    "Blocked": ("10004", "new"),
}

WORKFLOW: tuple[Transition, ...] = (
    Transition("11", "Back to backlog", "Backlog"),
    Transition("21", "Send to plan review", "Plan Review"),
    Transition("31", "Approve plan", "In Progress", frozenset({"Plan Review"})),
    Transition("41", "Start work", "In Progress",
               frozenset(STATUSES) - {"Plan Review", "In Progress"}),
    Transition("51", "Ready for testing", "In Testing"),
    Transition("61", "Mark done", "Done"),
    Transition("71", "Block", "Blocked"),
)


@dataclass
class FakeComment:
    id: str
    author_account_id: str | None
    body: Body
    created: str


@dataclass
class FakeHistory:
    """One entry of an issue's changelog: who changed which field from what to what."""

    id: str
    author_account_id: str | None
    created: str
    field: str  # "status" or "assignee"
    before: str | None
    after: str | None


@dataclass
class FakeIssue:
    key: str
    id: str
    project: str
    summary: str
    description: Body
    status: str
    issue_type: str
    assignee_account_id: str | None
    parent_key: str | None
    labels: list[str] = field(default_factory=list)
    comments: list[FakeComment] = field(default_factory=list)
    subtask_keys: list[str] = field(default_factory=list)
    history: list[FakeHistory] = field(default_factory=list)
    updated_s: float = field(default_factory=time.time)  # Jira's "updated"


@dataclass
class WebhookDelivery:
    payload: dict[str, Any]
    status: int | None
    error: str | None


def _now_jira() -> str:
    return _jira_time(time.time())


def _jira_time(epoch_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


class JiraSite:
    """What a Jira Cloud site knows: one AI account, one human, any number of projects."""

    def __init__(
        self,
        *,
        ai_account_id: str,
        human_account_id: str,
        extra_account_ids: Iterable[str],
        webhook_url: str | None,
        webhook_secret: str | None,
        rules_enabled: bool,
        subtask_type_name: str,
        initial_status: str,
        workflow: tuple[Transition, ...],
        data_center: bool = False,
    ) -> None:
        # Data Center: users by name (the ids given here are usernames) and key.
        self.data_center = data_center
        self.ai_account_id = ai_account_id
        self.human_account_id = human_account_id
        self.accounts = {ai_account_id: "AI Runner", human_account_id: "Human Reviewer"}
        self.accounts.update({account: account for account in extra_account_ids})
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.rules_enabled = rules_enabled
        self.subtask_type_name = subtask_type_name
        self.initial_status = initial_status
        self.workflow = workflow
        self.issues: dict[str, FakeIssue] = {}
        self.projects: dict[str, str] = {}  # key -> id
        self.webhook_deliveries: list[WebhookDelivery] = []
        self._next_number: dict[str, int] = {}
        self._ids = itertools.count(10001)
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.url = ""  # where the site is served, once it is: its JSON links to it

    # ------------------------------------------------------------ rule deliveries

    def _open_rules(self) -> None:
        """The HTTP client the rules post with (it needs the running event loop)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

    async def _close_rules(self) -> None:
        await self.wait_webhooks(timeout_s=2.0)
        for task in list(self._webhook_tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------ test helpers

    def add_project(self, key: str) -> None:
        if key not in self.projects:
            self.projects[key] = str(next(self._ids))
            self._next_number.setdefault(key, 1)

    def create_issue(
        self,
        key: str | None = None,
        *,
        project: str = "PROJ",
        summary: str = "A test issue",
        description: str | dict[str, Any] = "",
        status: str | None = None,
        assignee: str | None = None,
        issue_type: str | None = None,
        parent: str | None = None,
        labels: Iterable[str] = (),
    ) -> str:
        """Create an issue directly (no webhook, like an import); return its key."""
        if key is not None:
            project, _, digits = key.rpartition("-")
            if not project or not digits.isdigit():
                raise ValueError(f"issue key must look like PROJ-123, got {key!r}")
        self.add_project(project)
        if key is None:
            key = f"{project}-{self._next_number[project]}"
        if key in self.issues:
            raise ValueError(f"issue {key} exists already")
        number = int(key.rpartition("-")[2])
        self._next_number[project] = max(self._next_number[project], number + 1)
        if parent is not None and parent not in self.issues:
            raise ValueError(f"parent {parent} does not exist")
        issue_type = issue_type or (self.subtask_type_name if parent else "Story")
        status = status or self.initial_status
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        issue = FakeIssue(
            key=key, id=str(next(self._ids)), project=project, summary=summary,
            description=description or None, status=status, issue_type=issue_type,
            assignee_account_id=assignee, parent_key=parent, labels=list(labels))
        self.issues[key] = issue
        if parent is not None:
            self.issues[parent].subtask_keys.append(key)
        return key

    def issue(self, key: str) -> FakeIssue:
        return self.issues[key]

    def human_comment(self, key: str, text: str, author: str | None = None) -> str:
        """A comment written by a person in the Jira UI; returns its id."""
        return self._add_comment(self.issues[key], text,
                                 author or self.human_account_id).id

    def human_transition(self, key: str, status: str, assignee: str | None | object = ...,
                         author: str | None = None) -> None:
        """A person (``author``, the human reviewer unless given) moves the issue (any
        status, like a board drag) and maybe reassigns it; the history records who."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; known: {', '.join(STATUSES)}")
        issue = self.issues[key]
        who = author or self.human_account_id
        self._set_status(issue, status, who)
        if assignee is not ...:
            self._set_assignee(issue, assignee if isinstance(assignee, str) else None, who)

    def human_assign(self, key: str, account_id: str | None, author: str | None = None) -> None:
        self._set_assignee(self.issues[key], account_id, author or self.human_account_id)

    def comments_of(self, key: str) -> list[str]:
        """The issue's comments as plain text, oldest first."""
        return [adf_to_text(comment.body) for comment in self.issues[key].comments]

    def comment_records(self, key: str) -> list[FakeComment]:
        return list(self.issues[key].comments)

    def subtasks_of(self, key: str) -> list[FakeIssue]:
        return [self.issues[sub] for sub in self.issues[key].subtask_keys]

    async def wait_webhooks(self, timeout_s: float = 5.0) -> None:
        """Wait until every rule delivery started so far has finished."""
        pending = [task for task in self._webhook_tasks if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    # ------------------------------------------------------------ state changes

    def _add_comment(self, issue: FakeIssue, body: Body, author: str | None) -> FakeComment:
        comment = FakeComment(id=str(next(self._ids)), author_account_id=author, body=body,
                              created=_now_jira())
        issue.comments.append(comment)
        issue.updated_s = time.time()
        return comment

    def _set_status(self, issue: FakeIssue, status: str, author: str | None) -> None:
        if issue.status != status:
            self._record(issue, author, "status", issue.status, status)
            issue.status = status
            self._fire_rule("issue_transitioned", issue)

    def _set_assignee(self, issue: FakeIssue, account_id: str | None,
                      author: str | None) -> None:
        if issue.assignee_account_id != account_id:
            self._record(issue, author, "assignee", issue.assignee_account_id, account_id)
            issue.assignee_account_id = account_id
            self._fire_rule("issue_assigned", issue)

    def _record(self, issue: FakeIssue, author: str | None, field_name: str,
                before: str | None, after: str | None) -> None:
        issue.updated_s = time.time()
        issue.history.append(FakeHistory(str(next(self._ids)), author, _now_jira(), field_name,
                                         before, after))

    def _fire_rule(self, event_type: str, issue: FakeIssue) -> None:
        if not self.rules_enabled or not self.webhook_url:
            return
        payload = {
            "event_type": event_type,
            "issue_key": issue.key,
            "issue_type": issue.issue_type,
            "status": issue.status,
            "assignee_account_id": issue.assignee_account_id,
            "parent_key": issue.parent_key,
            "project_key": issue.project,
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("Fake Jira rule not fired (no event loop): %s %s", event_type, issue.key)
            return
        task = loop.create_task(self._deliver(payload))
        self._webhook_tasks.add(task)
        task.add_done_callback(self._webhook_tasks.discard)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        headers = {"Content-Type": "application/json"}
        if self.webhook_secret:
            headers[SECRET_HEADER] = self.webhook_secret
        status: int | None = None
        error: str | None = None
        try:
            if self._session is None or self.webhook_url is None:
                raise RuntimeError("fake Jira is not started")
            async with self._session.post(self.webhook_url, data=orjson.dumps(payload),
                                          headers=headers) as answer:
                await answer.read()
                status = answer.status
        except Exception as exc:  # Automation only logs failed web requests
            error = f"{type(exc).__name__}: {exc}"
            log.warning("Fake Jira rule delivery failed: %s", error)
        self.webhook_deliveries.append(WebhookDelivery(payload, status, error))

    # ------------------------------------------------------------ Jira's JSON shapes

    def issue_types(self) -> list[dict[str, Any]]:
        """The issue types createmeta lists (the sub-task type's name is configurable)."""
        types = [("10001", "Task", False, 0), ("10002", "Story", False, 0),
                 ("10003", "Bug", False, 0), ("10000", "Epic", False, 1),
                 ("10005", self.subtask_type_name, True, -1)]
        return [{"id": type_id, "name": name, "subtask": subtask, "hierarchyLevel": level,
                 "description": f"A {name.lower()}.", "iconUrl": f"{self.url}/icons/{type_id}.svg",
                 "self": f"{self.url}/rest/api/3/issuetype/{type_id}"}
                for type_id, name, subtask, level in types]

    @staticmethod
    def _render_body(body: Body, v3: bool) -> Any:
        if body is None:
            return None
        if v3:
            return body if isinstance(body, dict) else text_to_adf(body)
        return body if isinstance(body, str) else adf_to_text(body)

    def _user(self, account_id: str | None) -> dict[str, Any] | None:
        if account_id is None:
            return None
        if self.data_center:
            # Data Center's user: a username, and a key that is not the username.
            key = f"JIRAUSER{10100 + list(self.accounts).index(account_id)}" \
                if account_id in self.accounts else account_id
            return {"name": account_id, "key": key,
                    "displayName": self.accounts.get(account_id, account_id),
                    "active": True, "self": f"{self.url}/rest/api/2/user?username={account_id}"}
        return {"accountId": account_id, "displayName": self.accounts.get(account_id, account_id),
                "active": True, "accountType": "atlassian",
                "self": f"{self.url}/rest/api/3/user?accountId={account_id}"}

    def _status(self, name: str) -> dict[str, Any]:
        status_id, category = STATUSES.get(name, ("1", "new"))
        return {"self": f"{self.url}/rest/api/3/status/{status_id}", "name": name,
                "id": status_id, "description": "",
                "statusCategory": {"key": category, "name": category.title()}}

    def _issuetype(self, name: str) -> dict[str, Any]:
        for issue_type in self.issue_types():
            if issue_type["name"] == name:
                return issue_type
        return {"id": "10009", "name": name, "subtask": False, "hierarchyLevel": 0}

    def _brief(self, issue: FakeIssue) -> dict[str, Any]:
        return {"id": issue.id, "key": issue.key,
                "self": f"{self.url}/rest/api/3/issue/{issue.id}",
                "fields": {"summary": issue.summary, "status": self._status(issue.status),
                           "issuetype": self._issuetype(issue.issue_type)}}

    def _issue_json(self, issue: FakeIssue, v3: bool, wanted: set[str] | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "summary": issue.summary,
            "description": self._render_body(issue.description, v3),
            "status": self._status(issue.status),
            "issuetype": self._issuetype(issue.issue_type),
            "assignee": self._user(issue.assignee_account_id),
            "project": {"id": self.projects[issue.project], "key": issue.project,
                        "name": f"Project {issue.project}"},
            "labels": list(issue.labels),
            "subtasks": [self._brief(self.issues[key]) for key in issue.subtask_keys],
            "updated": _jira_time(issue.updated_s),
        }
        if issue.parent_key is not None:
            fields["parent"] = self._brief(self.issues[issue.parent_key])
        if wanted is not None:
            fields = {name: value for name, value in fields.items() if name in wanted}
        return {"expand": "renderedFields,names,schema,operations", "id": issue.id,
                "key": issue.key, "self": f"{self.url}/rest/api/3/issue/{issue.id}",
                "fields": fields}

    def _history_json(self, history: FakeHistory) -> dict[str, Any]:
        """A changelog entry as Jira shows it: statuses by id and name, users by accountId."""
        def value(text: str | None) -> str | None:
            if text is None or history.field != "status":
                return text
            return STATUSES.get(text, ("1", ""))[0]

        def shown(text: str | None) -> str | None:
            if history.field == "assignee" and text is not None:
                return self.accounts.get(text, text)
            return text

        return {"id": history.id, "author": self._user(history.author_account_id),
                "created": history.created,
                "items": [{"field": history.field, "fieldtype": "jira", "fieldId": history.field,
                           "from": value(history.before), "fromString": shown(history.before),
                           "to": value(history.after), "toString": shown(history.after)}]}

    def _comment_json(self, comment: FakeComment, v3: bool) -> dict[str, Any]:
        return {"id": comment.id, "self": f"{self.url}/rest/api/3/comment/{comment.id}",
                "author": self._user(comment.author_account_id),
                "updateAuthor": self._user(comment.author_account_id),
                "body": self._render_body(comment.body, v3), "created": comment.created,
                "updated": comment.created, "jsdPublic": True}
