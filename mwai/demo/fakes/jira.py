"""An in-process fake of Jira Cloud, or Data Center, for tests and ``mwai demo``.

It serves the REST v3 (and v2) subset the AI Runner uses, with the shapes and
failure modes of the real API:

* basic auth (email:api_token) or 401; unknown issue keys get Jira's 404 text;
* ``data_center=True``: Jira Data Center instead of Cloud: REST v2 only (v3 and
  Cloud's changelog resource are 404), users by ``name`` and ``key`` (no
  accountId), an assignment body without ``name`` refused with 400, and
  personal access tokens (``Authorization: Bearer``) as well as basic auth;
* v3 descriptions and comment bodies must be ADF documents (a plain string
  gets 400, as on a real site); v2 ones must be strings;
* a workflow Backlog / Plan Review / In Progress / In Testing / Done / Blocked
  whose transition names differ from the status names ("Approve plan" ->
  In Progress); an unknown transition id gets 400;
* sub-task issue type discovery (createmeta) with a configurable type name;
* comment pagination (``startAt`` / ``maxResults`` / ``total``), page size capped;
* each issue's history (who moved it to which status, who assigned it): Cloud's
  paginated ``/issue/{key}/changelog`` and ``expand=changelog`` on the issue;
  writes through the API are the AI account's, the human_* helpers a person's;
* Automation-style rules: when an issue's assignee or status changes, a flat
  JSON payload is POSTed to ``webhook_url`` with the X-Moveware-Webhook-Secret
  header (fire and forget, like Automation);
* fault injection (429 + Retry-After, 5xx, slow answers, an HTML 200 page) and
  a request log for assertions.

This module is the HTTP side (auth, faults, routes, request validation); the
site's state, workflow, rules and JSON shapes are in ``fake_jira_site``.

Usage::

    async with FakeJira(webhook_url=..., webhook_secret=...) as jira:
        settings = dataclasses.replace(settings, **jira.settings_changes())
        key = jira.create_issue(summary="Add login", assignee=jira.ai_account_id)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Self

import orjson
from aiohttp import web

from mwai.clients.adf import adf_problems, adf_to_text, stored_size
from mwai.demo.fakes.jira_faults import (
    Fault,
    JiraFail,
    JiraFaults,
    RequestRecord,
    fault_answer,
    json_answer,
)
from mwai.demo.fakes.jira_search import JqlError, search
from mwai.demo.fakes.jira_site import WORKFLOW, Body, FakeIssue, JiraSite, Transition
from mwai.demo.fakes.loopback import LoopbackServer

NOT_FOUND = "Issue does not exist or you do not have permission to see it."
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
COMMENT_NOT_VALID = "Comment body is not valid!"  # what v3 says about a plain-string comment
NOT_STRING = "Operation value must be a string"
MAX_TEXT_CHARS = 32_767
TOO_LONG = "The entered text is too long. It exceeds the allowed limit of 32,767 characters."


class FakeJira(JiraSite, JiraFaults, LoopbackServer):
    """The site's REST API on 127.0.0.1, as mwai's Jira client sees Jira Cloud."""

    def __init__(
        self,
        *,
        email: str = "ai-runner@example.com",
        api_token: str = "fake-jira-api-token",
        ai_account_id: str = "ai-account",
        human_account_id: str = "human-account",
        extra_account_ids: Iterable[str] = (),
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        rules_enabled: bool = True,
        subtask_type_name: str = "Sub-task",
        max_page_size: int = 100,
        initial_status: str = "Backlog",
        workflow: tuple[Transition, ...] = WORKFLOW,
        data_center: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            data_center=data_center,
            ai_account_id=ai_account_id, human_account_id=human_account_id,
            extra_account_ids=extra_account_ids, webhook_url=webhook_url,
            webhook_secret=webhook_secret, rules_enabled=rules_enabled,
            subtask_type_name=subtask_type_name, initial_status=initial_status,
            workflow=workflow)
        self.email = email
        self.api_token = api_token
        self.max_page_size = max_page_size
        self.host = host
        self.port = port
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []

    # ------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=2 * 1024 * 1024)
        self._routes(app)
        return app

    async def start(self) -> Self:
        await super().start()
        self._open_rules()
        return self

    async def stop(self) -> None:
        await self._close_rules()
        await super().stop()

    def settings_changes(self) -> dict[str, Any]:
        """Settings fields that point mwai at this fake (for dataclasses.replace).

        Data Center: REST v2, the personal access token as a Bearer token, no email.
        """
        changes = {
            "jira_base_url": self.url,
            "jira_email": self.email,
            "jira_api_token": self.api_token,
            "jira_ai_account_id": self.ai_account_id,
            "jira_human_account_id": self.human_account_id,
        }
        if self.data_center:
            changes.update(jira_email="", jira_api_version="2", jira_auth="bearer")
        return changes

    def auth_headers(self) -> dict[str, str]:
        """Headers of a request made with the AI account's valid credentials."""
        if self.data_center:
            return {"Authorization": f"Bearer {self.api_token}"}
        token = base64.b64encode(f"{self.email}:{self.api_token}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    # ------------------------------------------------------------ HTTP plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        body_bytes = await request.read()
        document: Any = None
        bad_json = False
        if body_bytes:
            try:
                document = orjson.loads(body_bytes)
            except orjson.JSONDecodeError:
                bad_json = True
        record = RequestRecord(request.method, request.path, dict(request.query), document,
                               self._auth_ok(request))
        self.requests.append(record)
        # Shielded: like a real server, it acts on a request it got even if the client died.
        response = await asyncio.shield(self._answer(request, handler, record, bad_json))
        record.status = response.status
        return response

    async def _answer(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        record: RequestRecord, bad_json: bool,
    ) -> web.StreamResponse:
        fault = self._take_fault(request.method, request.path)
        if fault is not None:
            faulty = await fault_answer(fault)
            if faulty is not None:
                return faulty
        if not record.auth_ok:
            return web.Response(
                status=401, headers={"WWW-Authenticate": 'Basic realm="protected-area"'},
                body=orjson.dumps({"errorMessages": [
                    "Client must be authenticated to access this resource."], "errors": {}}),
                content_type="application/json")
        if self.data_center and (request.path.startswith("/rest/api/3/")
                                 or request.path.endswith("/changelog")):
            return json_answer({"errorMessages": ["null for uri: " + request.path]}, 404)
        if request.method in ("POST", "PUT"):
            if request.content_type != "application/json":
                return json_answer({"errorMessages": ["Unsupported Media Type"], "errors": {}}, 415)
            if bad_json:
                return json_answer({"errorMessages": ["Unexpected character in the JSON body"],
                              "errors": {}}, 400)
        try:
            response = await handler(request)
        except JiraFail as failure:
            return json_answer(failure.body, failure.status)
        if fault is not None and fault.hold_s:
            await asyncio.sleep(fault.hold_s)
        return response

    def _auth_ok(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.data_center:
            # A Data Center personal access token (Cloud has none: API tokens are basic auth).
            return hmac.compare_digest(encoded.strip().encode(), self.api_token.encode())
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.email}:{self.api_token}".encode()
        return hmac.compare_digest(decoded, expected)

    def _routes(self, app: web.Application) -> None:
        base = "/rest/api/{version:[23]}"
        app.router.add_get(base + "/myself", self._myself)
        app.router.add_post(base + "/issue", self._create)
        app.router.add_get(base + "/issue/createmeta/{project}/issuetypes", self._createmeta)
        app.router.add_get(base + "/issue/{key}", self._get_issue)
        app.router.add_get(base + "/issue/{key}/comment", self._get_comments)
        app.router.add_get(base + "/issue/{key}/changelog", self._get_changelog)
        app.router.add_post(base + "/issue/{key}/comment", self._post_comment)
        app.router.add_get(base + "/issue/{key}/transitions", self._get_transitions)
        app.router.add_post(base + "/issue/{key}/transitions", self._post_transition)
        app.router.add_put(base + "/issue/{key}/assignee", self._put_assignee)
        app.router.add_post("/rest/api/{version:3}/search/jql", self._search)
        app.router.add_post("/rest/api/{version:2}/search", self._search)

    # ------------------------------------------------------------ reading requests

    def _found(self, request: web.Request) -> FakeIssue:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            raise JiraFail(404, [NOT_FOUND])
        return issue

    @staticmethod
    def _v3(request: web.Request) -> bool:
        return request.match_info["version"] == "3"

    def _check_body(self, value: Any, v3: bool, field_name: str) -> Body:
        """A rich-text field as the real API validates it (ADF in v3, string in v2)."""
        body: Body = value
        if v3:
            if not isinstance(value, dict):
                message = COMMENT_NOT_VALID if field_name == "comment" else NOT_ADF
                raise JiraFail(400, errors={field_name: message})
            if adf_problems(value):
                raise JiraFail(400, ["INVALID_INPUT"])
        elif not isinstance(value, str):
            raise JiraFail(400, errors={field_name: NOT_STRING})
        # Jira's limit counts what it stores: the ADF document's JSON, markup included.
        size = stored_size(body) if isinstance(body, dict) else len(adf_to_text(body))
        if size > MAX_TEXT_CHARS:
            raise JiraFail(400, errors={field_name: TOO_LONG})
        return body

    @staticmethod
    def _int_param(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise JiraFail(400, [f"The '{name}' parameter must be a number."]) from None
        if value < 0:
            raise JiraFail(400, [f"The '{name}' parameter must not be negative."])
        return value

    # ------------------------------------------------------------ handlers

    async def _myself(self, request: web.Request) -> web.Response:
        user = self._user(self.ai_account_id) or {}
        return json_answer({**user, "emailAddress": self.email, "timeZone": "UTC",
                            "locale": "en_US"})

    async def _get_issue(self, request: web.Request) -> web.Response:
        issue = self._found(request)
        raw = request.query.get("fields", "")
        names = {name.strip() for name in raw.split(",") if name.strip()}
        wanted = None if not names or names & {"*all", "*navigable"} else names
        document = self._issue_json(issue, self._v3(request), wanted)
        if "changelog" in request.query.get("expand", "").split(","):
            # Data Center's whole history (Cloud caps this one at 100 entries).
            histories = [self._history_json(h) for h in issue.history]
            document["changelog"] = {"startAt": 0, "maxResults": len(histories),
                                     "total": len(histories), "histories": histories}
        return json_answer(document)

    async def _get_changelog(self, request: web.Request) -> web.Response:
        """Cloud's paginated changelog, oldest first (Data Center has no such resource)."""
        issue = self._found(request)
        start_at = self._int_param(request, "startAt", 0)
        max_results = min(self._int_param(request, "maxResults", 100), self.max_page_size)
        page = issue.history[start_at:start_at + max_results]
        return json_answer({"self": f"{self.url}{request.path}", "maxResults": max_results,
                      "startAt": start_at, "total": len(issue.history),
                      "isLast": start_at + len(page) >= len(issue.history),
                      "values": [self._history_json(h) for h in page]})

    async def _get_comments(self, request: web.Request) -> web.Response:
        issue = self._found(request)
        start_at = self._int_param(request, "startAt", 0)
        max_results = min(self._int_param(request, "maxResults", 100), self.max_page_size)
        comments = list(issue.comments)
        if request.query.get("orderBy", "").startswith("-"):
            comments.reverse()
        page = comments[start_at:start_at + max_results]
        v3 = self._v3(request)
        return json_answer({"startAt": start_at, "maxResults": max_results, "total": len(comments),
                      "comments": [self._comment_json(c, v3) for c in page]})

    async def _post_comment(self, request: web.Request) -> web.Response:
        issue = self._found(request)
        document = await request.json(loads=orjson.loads)
        if not isinstance(document, dict) or "body" not in document:
            raise JiraFail(400, errors={"comment": "Comment body can not be empty!"})
        v3 = self._v3(request)
        body = self._check_body(document["body"], v3, "comment")
        if not adf_to_text(body).strip():
            raise JiraFail(400, errors={"comment": "Comment body can not be empty!"})
        comment = self._add_comment(issue, body, self.ai_account_id)
        return json_answer(self._comment_json(comment, v3), 201)

    async def _get_transitions(self, request: web.Request) -> web.Response:
        issue = self._found(request)
        transitions = [
            {"id": t.id, "name": t.name, "hasScreen": False, "isGlobal": t.sources is None,
             "isInitial": False, "isAvailable": True, "isConditional": False, "isLooped": False,
             "to": self._status(t.to)}
            for t in self.workflow if t.available_from(issue.status)
        ]
        return json_answer({"expand": "transitions", "transitions": transitions})

    async def _post_transition(self, request: web.Request) -> web.Response:
        issue = self._found(request)
        document = await request.json(loads=orjson.loads)
        transition = document.get("transition") if isinstance(document, dict) else None
        if not isinstance(transition, dict) or transition.get("id") is None:
            raise JiraFail(400, ["Missing 'transition' identifier"])
        wanted = str(transition["id"])
        for candidate in self.workflow:
            if candidate.id == wanted and candidate.available_from(issue.status):
                self._set_status(issue, candidate.to, self.ai_account_id)
                return web.Response(status=204)
        raise JiraFail(400, [f"Transition id '{wanted}' is not valid for this issue."])

    async def _put_assignee(self, request: web.Request) -> web.Response:
        issue = self._found(request)
        document = await request.json(loads=orjson.loads)
        if self.data_center:
            # Data Center names users by "name"; it knows no accountId.
            if not isinstance(document, dict) or "name" not in document:
                raise JiraFail(400, errors={"assignee": "Field 'name' is required: Jira Data "
                                                        "Center identifies users by username."})
            name = document["name"]
            if name is not None and name not in self.accounts:
                raise JiraFail(400, errors={"assignee": f"User '{name}' does not exist."})
            self._set_assignee(issue, name, self.ai_account_id)
            return web.Response(status=204)
        if not isinstance(document, dict) or "accountId" not in document:
            raise JiraFail(400, errors={"accountId": "accountId is required (or null to "
                                                     "unassign)."})
        account_id = document["accountId"]
        if account_id is not None and account_id not in self.accounts:
            raise JiraFail(400, errors={"assignee": f"User '{account_id}' cannot be assigned "
                                                    "issues."})
        self._set_assignee(issue, account_id, self.ai_account_id)
        return web.Response(status=204)

    async def _search(self, request: web.Request) -> web.Response:
        """Cloud's /search/jql (paged by nextPageToken) and Data Center's /search."""
        document = await request.json(loads=orjson.loads)
        query = document if isinstance(document, dict) else {}
        try:
            found = search(list(self.issues.values()), str(query.get("jql") or ""))
        except JqlError as exc:
            raise JiraFail(400, [str(exc)]) from None
        size = min(int(query.get("maxResults") or 50), self.max_page_size)
        token = str(query.get("nextPageToken") or query.get("startAt") or "0")
        start = int(token) if token.isdigit() else 0
        page = found[start:start + size]
        wanted = set(query.get("fields") or []) or None
        issues = [self._issue_json(issue, self._v3(request), wanted) for issue in page]
        more = start + size < len(found)
        if self._v3(request):
            return json_answer({"issues": issues, "isLast": not more,
                          **({"nextPageToken": str(start + size)} if more else {})})
        return json_answer({"issues": issues, "startAt": start, "maxResults": size,
                      "total": len(found)})

    async def _createmeta(self, request: web.Request) -> web.Response:
        project = request.match_info["project"]
        if project not in self.projects and project not in self.projects.values():
            raise JiraFail(404, [f"No project could be found with key '{project}'."])
        types = self.issue_types()
        start_at = self._int_param(request, "startAt", 0)
        max_results = min(self._int_param(request, "maxResults", 50), self.max_page_size)
        return json_answer({"maxResults": max_results, "startAt": start_at, "total": len(types),
                      "issueTypes": types[start_at:start_at + max_results]})

    async def _create(self, request: web.Request) -> web.Response:
        document = await request.json(loads=orjson.loads)
        fields = document.get("fields") if isinstance(document, dict) else None
        if not isinstance(fields, dict):
            raise JiraFail(400, ["Issue create request must have 'fields'."])
        v3 = self._v3(request)
        errors: dict[str, str] = {}
        project = fields.get("project")
        project_key = project.get("key") if isinstance(project, dict) else None
        if project_key not in self.projects:
            errors["project"] = "valid project is required"
        issue_type = self._requested_type(fields.get("issuetype"))
        if issue_type is None:
            errors["issuetype"] = "valid issue type is required"
        parent = fields.get("parent")
        parent_key = parent.get("key") if isinstance(parent, dict) else None
        if issue_type is not None and issue_type["subtask"]:
            parent_issue = self.issues.get(parent_key) if isinstance(parent_key, str) else None
            if parent_issue is None or self._is_subtask_type(parent_issue.issue_type):
                errors["parent"] = "Given parent issue does not belong to appropriate hierarchy."
        self._check_summary(fields.get("summary"), errors)
        description: Body = None
        if fields.get("description") is not None:
            description = self._check_body(fields["description"], v3, "description")
        if errors:
            raise JiraFail(400, errors=errors)
        assert isinstance(project_key, str) and issue_type is not None
        key = self.create_issue(
            project=project_key, summary=fields["summary"], issue_type=issue_type["name"],
            parent=parent_key if issue_type["subtask"] else None,
            labels=[label for label in fields.get("labels") or [] if isinstance(label, str)])
        self.issues[key].description = description
        issue = self.issues[key]
        return json_answer({"id": issue.id, "key": issue.key,
                      "self": f"{self.url}/rest/api/3/issue/{issue.id}"}, 201)

    def _is_subtask_type(self, name: str) -> bool:
        return name == self.subtask_type_name

    def _requested_type(self, value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        for issue_type in self.issue_types():
            if ("id" in value and str(value["id"]) == issue_type["id"]) or (
                    "id" not in value and value.get("name") == issue_type["name"]):
                return issue_type
        return None

    @staticmethod
    def _check_summary(summary: Any, errors: dict[str, str]) -> None:
        if not isinstance(summary, str) or not summary.strip():
            errors["summary"] = "You must specify a summary of the issue."
        elif "\n" in summary or "\r" in summary:
            errors["summary"] = "The summary is invalid because it contains newline characters."
        elif len(summary) > 255:
            errors["summary"] = "Summary must be less than 255 characters."
