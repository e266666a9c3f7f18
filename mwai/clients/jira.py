"""Async Jira REST client: issues, comments, transitions, assignment, sub-tasks.

Jira Cloud REST v3 by default (descriptions and comment bodies are ADF
documents); ``JIRA_API_VERSION=2`` for Data Center / older sites, where they
are plain strings. Everything goes through ``mwai.clients.http.ApiClient``: 429 honours
Retry-After, 5xx and timeouts are retried and then raise ``TransientError``,
other 4xx raise ``HttpError`` (a ``PermanentError``) carrying Jira's message.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from mwai.clients.adf import adf_to_text, text_to_adf_within
from mwai.clients.http import ApiClient, CallObserver
from mwai.errors import PermanentError
from mwai.model import Comment, Issue, StatusChange
from mwai.settings import Settings

ISSUE_FIELDS = "summary,description,status,issuetype,assignee,parent,project,labels,subtasks"
MAX_SUMMARY_CHARS = 255  # Jira refuses longer summaries
# Jira refuses comment bodies and descriptions over 32,767 characters; keep a margin
# for the ADF markup of what we send.
MAX_TEXT_CHARS = 30_000
# The same limit counts an ADF body's stored JSON, markup included (a list item is ~80
# characters of it): v3 bodies are bounded by that size, not by their text's.
MAX_ADF_CHARS = 32_000
TRUNCATION_NOTE = "\n\n[... truncated by mwai: the text was longer than Jira accepts]"
MAX_PAGES = 200  # a bound on pagination, whatever the server says about totals

# 3: Jira Cloud, ADF bodies, users by accountId; 2: Data Center and older sites,
# plain-text bodies, users by name (username).
JiraApiVersion = Literal["2", "3"]
# basic: email (or username) and API token; bearer: a Data Center personal access token.
JiraAuth = Literal["basic", "bearer"]


@dataclass(frozen=True, slots=True)
class JiraConfig:
    """The Jira site and account a JiraClient talks to, and its call limits."""

    base_url: str
    email: str
    api_token: str = field(repr=False)  # a secret: kept out of reprs and tracebacks
    api_version: JiraApiVersion
    timeout_s: float  # one HTTP request
    retries: int  # retries of a transient failure, then the run is retried later
    auth: JiraAuth = "basic"

    @classmethod
    def of(cls, settings: Settings) -> JiraConfig:
        return cls(base_url=settings.jira_base_url, email=settings.jira_email,
                   api_token=settings.jira_api_token,
                   api_version="2" if settings.jira_api_version == "2" else "3",
                   timeout_s=settings.http_timeout_s, retries=settings.http_retries,
                   auth="bearer" if settings.jira_auth == "bearer" else "basic")

    def authorization(self) -> str:
        """The Authorization header's value for this account."""
        if self.auth == "bearer":
            return f"Bearer {self.api_token}"
        credentials = f"{self.email}:{self.api_token}".encode()
        return "Basic " + base64.b64encode(credentials).decode()


def key_number(key: str) -> int:
    """The number of an issue key (PROJ-12 -> 12), for ordering; 0 when there is none."""
    match = re.search(r"-(\d+)$", key)
    return int(match.group(1)) if match else 0


def one_line_summary(summary: str) -> str:
    """Jira summaries are one line of at most 255 characters."""
    text = " ".join(summary.split())
    if len(text) > MAX_SUMMARY_CHARS:
        text = text[:MAX_SUMMARY_CHARS - 1].rstrip() + "…"
    return text or "(no summary)"


def fit_text(text: str, limit_chars: int = MAX_TEXT_CHARS) -> str:
    """Cut a comment or description to what Jira accepts, saying so at the end."""
    if len(text) <= limit_chars:
        return text
    return text[:limit_chars - len(TRUNCATION_NOTE)].rstrip() + TRUNCATION_NOTE


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _user_id(user: Any) -> str | None:
    """A user's id: accountId on Cloud, name or key on Data Center."""
    fields = _dict(user)
    return (_str_or_none(fields.get("accountId")) or _str_or_none(fields.get("name"))
            or _str_or_none(fields.get("key")))


def parse_issue(document: Any) -> Issue:
    """An issue from Jira's JSON (v2 or v3); PermanentError if it is not an issue at all."""
    if not isinstance(document, dict) or not isinstance(document.get("key"), str):
        raise PermanentError("Jira answered with something that is not an issue "
                             "(no 'key'): check JIRA_BASE_URL points at the Jira site")
    fields = _dict(document.get("fields"))
    issuetype = _dict(fields.get("issuetype"))
    labels = fields.get("labels")
    subtasks = fields.get("subtasks")
    key: str = document["key"]
    project = _str_or_none(_dict(fields.get("project")).get("key")) or key.rsplit("-", 1)[0]
    return Issue(
        key=key,
        summary=str(fields.get("summary") or ""),
        description=adf_to_text(fields.get("description")
                                if isinstance(fields.get("description"), dict | str) else None),
        status=str(_dict(fields.get("status")).get("name") or ""),
        issue_type=str(issuetype.get("name") or ""),
        is_subtask=issuetype.get("subtask") is True,
        assignee_account_id=_user_id(fields.get("assignee")),
        parent_key=_str_or_none(_dict(fields.get("parent")).get("key")),
        project_key=project,
        labels=tuple(label for label in labels if isinstance(label, str))
        if isinstance(labels, list) else (),
        subtask_keys=tuple(
            sub["key"] for sub in subtasks if isinstance(sub, dict) and isinstance(
                sub.get("key"), str)
        ) if isinstance(subtasks, list) else (),
        updated=str(fields.get("updated") or ""),
    )


def parse_comment(document: Any) -> Comment | None:
    if not isinstance(document, dict) or document.get("id") is None:
        return None
    body = document.get("body")
    return Comment(
        id=str(document["id"]),
        author_account_id=_user_id(document.get("author")),
        body=adf_to_text(body if isinstance(body, dict | str) else None),
        created=str(document.get("created") or ""),
    )


def parse_status_changes(histories: Any, fields: tuple[str, ...] = ("status",)
                         ) -> list[StatusChange]:
    """The moves (status, and assignee when asked) in a list of Jira history entries, in
    the order Jira made them. An assignee change carries the new accountId."""
    changes: list[StatusChange] = []
    for history in histories if isinstance(histories, list) else []:
        history = _dict(history)
        history_id = str(history.get("id") or "")
        items = history.get("items")
        for item in items if isinstance(items, list) else []:
            item = _dict(item)
            name = item.get("field")
            if name in fields and history_id.isdigit():
                to = item.get("toString") if name == "status" else item.get("to")
                changes.append(StatusChange(int(history_id), _user_id(history.get("author")),
                                            str(to or ""), str(name)))
    return sorted(changes, key=lambda change: change.history_id)


class JiraClient:
    """The Jira calls of the AI Runner flow, for one site and one account."""

    def __init__(
        self,
        config: JiraConfig,
        session: aiohttp.ClientSession,
        observer: CallObserver | None = None,
        *,
        page_size: int = 50,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_wait_s: float = 60.0,
    ) -> None:
        self.api_version: JiraApiVersion = config.api_version
        self.page_size = page_size
        self.api = ApiClient(
            "jira",
            config.base_url,
            session,
            headers={"Authorization": config.authorization()},
            timeout_s=config.timeout_s,
            retries=config.retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            max_wait_s=max_wait_s,
            observer=observer,
        )
        self._subtask_type_ids: dict[str, str] = {}

    def _path(self, *parts: str) -> str:
        quoted = "/".join(quote(part, safe="") for part in parts)
        return f"/rest/api/{self.api_version}/{quoted}"

    def _rich_text(self, text: str) -> dict[str, Any] | str:
        text = fit_text(text)
        if self.api_version == "2":
            return text
        return text_to_adf_within(text, MAX_ADF_CHARS, TRUNCATION_NOTE)

    async def _get_json(self, path: str, params: dict[str, str | int] | None = None) -> Any:
        response = await self.api.request("GET", path, params=params)
        return response.json()

    # ------------------------------------------------------------ issues

    async def get_issue(self, key: str) -> Issue:
        document = await self._get_json(self._path("issue", key), {"fields": ISSUE_FIELDS})
        return parse_issue(document)

    async def search(self, jql: str, max_issues: int = 1000) -> list[Issue]:
        """Issues matching ``jql``, with their ``updated`` time, at most ``max_issues``.

        Cloud: POST /rest/api/3/search/jql, paged by ``nextPageToken`` (the older
        /search with startAt is gone there); Data Center: POST /rest/api/2/search.
        """
        fields = [*ISSUE_FIELDS.split(","), "updated"]
        issues: list[Issue] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            body: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": self.page_size}
            if self.api_version == "3":
                body.update({"nextPageToken": token} if token else {})
                path = self._path("search", "jql")
            else:
                body["startAt"] = len(issues)
                path = self._path("search")
            page = _dict((await self.api.request("POST", path, json=body)).json())
            items = page.get("issues")
            items = items if isinstance(items, list) else []
            issues += [parse_issue(item) for item in items]
            next_token = page.get("nextPageToken")
            total = page.get("total")
            if not items or len(issues) >= max_issues or page.get("isLast") is True:
                break
            if self.api_version == "3":
                if not isinstance(next_token, str) or not next_token:
                    break
                token = next_token
            elif isinstance(total, int) and len(issues) >= total:
                break
        return issues[:max_issues]

    async def list_subtasks(self, parent_key: str) -> list[Issue]:
        """The parent's sub-tasks, read one by one (full fields), ordered by key number."""
        parent = await self.get_issue(parent_key)
        subtasks = [await self.get_issue(key) for key in parent.subtask_keys]
        return sorted(subtasks, key=lambda issue: key_number(issue.key))

    async def create_subtask(self, parent: Issue, summary: str, description: str,
                             labels: tuple[str, ...] = ()) -> str:
        """Create a sub-task of ``parent`` with the project's own sub-task issue type."""
        type_id = await self.subtask_type_id(parent.project_key)
        fields: dict[str, Any] = {
            "project": {"key": parent.project_key},
            "parent": {"key": parent.key},
            "issuetype": {"id": type_id},
            "summary": one_line_summary(summary),
            "description": self._rich_text(description),
            **({"labels": list(labels)} if labels else {}),
        }
        response = await self.api.request("POST", self._path("issue"), json={"fields": fields})
        created = response.json()
        if not isinstance(created, dict) or not isinstance(created.get("key"), str):
            raise PermanentError(f"Jira created a sub-task of {parent.key} but did not "
                                 "answer with its key")
        return str(created["key"])

    async def subtask_type_id(self, project_key: str) -> str:
        """The id of the project's sub-task issue type (``subtask: true``), cached per project."""
        cached = self._subtask_type_ids.get(project_key)
        if cached is not None:
            return cached
        names: list[str] = []
        start_at = 0
        for _ in range(MAX_PAGES):
            page = _dict(await self._get_json(
                self._path("issue", "createmeta", project_key, "issuetypes"),
                {"startAt": start_at, "maxResults": self.page_size}))
            # Cloud answers "issueTypes", Data Center "values".
            types = page.get("issueTypes", page.get("values"))
            types = types if isinstance(types, list) else []
            for issue_type in types:
                if not isinstance(issue_type, dict):
                    continue
                names.append(str(issue_type.get("name")))
                if issue_type.get("subtask") is True and issue_type.get("id") is not None:
                    type_id = str(issue_type["id"])
                    self._subtask_type_ids[project_key] = type_id
                    return type_id
            start_at += len(types)
            total = page.get("total")
            if not types or page.get("isLast") is True or (
                    isinstance(total, int) and start_at >= total):
                break
        shown = ", ".join(names) or "none"
        raise PermanentError(
            f"Jira project {project_key} has no sub-task issue type (its issue types: {shown}); "
            "enable sub-tasks in the project's issue type scheme, and make sure the AI Runner "
            "account may create issues there")

    # ------------------------------------------------------------ comments

    async def get_comments(self, key: str) -> list[Comment]:
        """Every comment of the issue, oldest first, following Jira's pagination."""
        comments: list[Comment] = []
        start_at = 0
        for _ in range(MAX_PAGES):
            page = _dict(await self._get_json(
                self._path("issue", key, "comment"),
                {"startAt": start_at, "maxResults": self.page_size, "orderBy": "created"}))
            items = page.get("comments")
            items = items if isinstance(items, list) else []
            comments.extend(c for c in map(parse_comment, items) if c is not None)
            start_at += len(items)
            total = page.get("total")
            if not items or not isinstance(total, int) or start_at >= total:
                break
        return comments

    async def add_comment(self, key: str, text: str) -> str:
        """Post a comment (ADF in v3, plain text in v2); return its id."""
        response = await self.api.request(
            "POST", self._path("issue", key, "comment"), json={"body": self._rich_text(text)})
        created = response.json()
        if not isinstance(created, dict) or created.get("id") is None:
            raise PermanentError(f"Jira accepted a comment on {key} but did not answer "
                                 "with its id")
        return str(created["id"])

    # ------------------------------------------------------------ workflow

    async def get_transitions(self, key: str) -> list[dict[str, Any]]:
        """The transitions available to this account on the issue now."""
        document = _dict(await self._get_json(self._path("issue", key, "transitions")))
        transitions = document.get("transitions")
        return [t for t in transitions if isinstance(t, dict)] if isinstance(
            transitions, list) else []

    async def transition_to(self, key: str, status_name: str,
                            current_status: str | None = None) -> None:
        """Move the issue to the status named ``status_name`` (no-op if it is there).

        Transition names differ from status names ("Approve plan" -> In
        Progress), so the transition is found by its target status.
        ``current_status`` saves a request when the caller just read the issue.
        """
        if current_status is None:
            document = await self._get_json(self._path("issue", key), {"fields": "status"})
            current_status = str(_dict(_dict(_dict(document).get("fields")).get("status"))
                                 .get("name") or "")
        if current_status.casefold() == status_name.casefold():
            return
        transitions = await self.get_transitions(key)
        for transition in transitions:
            target = _dict(transition.get("to"))
            if str(target.get("name", "")).casefold() == status_name.casefold():
                try:
                    await self.api.request(
                        "POST", self._path("issue", key, "transitions"),
                        json={"transition": {"id": str(transition.get("id"))}},
                        expect_json=False)
                except PermanentError:
                    # A retry of a request that timed out but was applied is refused
                    # (the issue is there already): that is success, not an error.
                    if (await self.get_issue(key)).status.casefold() != status_name.casefold():
                        raise
                return
        available = ", ".join(
            f"'{t.get('name')}' -> {_dict(t.get('to')).get('name')}" for t in transitions
        ) or "none"
        raise PermanentError(
            f"Jira issue {key} cannot move from '{current_status}' to '{status_name}': the "
            f"available transitions are {available}. Fix the workflow or the JIRA_STATUS_* "
            "settings")

    async def status_changes(self, key: str, fields: tuple[str, ...] = ("status",)
                             ) -> list[StatusChange]:
        """Every status move (and assignee change, when asked) with who made it, oldest first.

        Cloud pages through the issue's changelog; Data Center has no such resource
        (REST v2 there), so v2 reads the whole history with ``expand=changelog``.
        """
        if self.api_version == "2":
            document = _dict(await self._get_json(
                self._path("issue", key), {"fields": "status", "expand": "changelog"}))
            return parse_status_changes(_dict(document.get("changelog")).get("histories"),
                                        fields)
        histories: list[Any] = []
        for _ in range(MAX_PAGES):
            page = _dict(await self._get_json(
                self._path("issue", key, "changelog"),
                {"startAt": len(histories), "maxResults": self.page_size}))
            values = page.get("values")
            values = values if isinstance(values, list) else []
            histories += values
            total = page.get("total")
            if not values or page.get("isLast") is True or (
                    isinstance(total, int) and len(histories) >= total):
                break
        return parse_status_changes(histories, fields)

    async def assign(self, key: str, account_id: str | None) -> None:
        """Assign by accountId (Cloud) or username (Data Center, v2); None unassigns.

        Data Center names users by ``name``: it refuses an ``accountId`` body, or reads
        it as no user at all and unassigns.
        """
        field_name = "name" if self.api_version == "2" else "accountId"
        await self.api.request("PUT", self._path("issue", key, "assignee"),
                               json={field_name: account_id}, expect_json=False)

    async def myself(self) -> dict[str, Any]:
        """The account the client authenticates as (for ``mwai check --connect``)."""
        document = await self._get_json(self._path("myself"))
        if not isinstance(document, dict):
            raise PermanentError("Jira /myself did not answer with an object: check "
                                 "JIRA_BASE_URL points at the Jira site")
        return document
