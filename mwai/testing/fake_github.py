"""FakeGitHub: the pull-request subset of the GitHub REST and GraphQL APIs on 127.0.0.1.

Serves ``GET /user``, ``POST/GET /repos/{o}/{r}/pulls``, ``GET/PATCH
/repos/{o}/{r}/pulls/{n}`` and ``POST /graphql`` (only the
``markPullRequestReadyForReview`` mutation). Like the real service it answers 401
"Bad credentials" without the right token, 404 for an unknown repository, and 422
"Validation Failed" for a second open pull request of the same head and base.
``enterprise=True`` serves REST under ``/api/v3`` and GraphQL at ``/api/graphql``
like GitHub Enterprise Server. Faults: 429 + Retry-After, 500/502, slow, HTML.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAULT_KINDS = ("429", "500", "502", "slow", "html")
DOCS = "https://docs.github.com/rest"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class Fault:
    kind: str
    retry_after_s: float = 0.0
    delay_s: float = 0.0


@dataclass
class FakeRepo:
    owner: str
    name: str
    pulls: list[dict[str, Any]] = field(default_factory=list)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"message": message, "documentation_url": DOCS, "status": str(status), **extra},
        status=status)


class FakeGitHub:
    def __init__(
        self,
        repos: tuple[str, ...] = ("acme/app",),
        *,
        token: str = "test-gh-token",
        login: str = "mwai-bot",
        enterprise: bool = False,
    ) -> None:
        self.token = token
        self.login = login
        self.repos = {repo: FakeRepo(repo.partition("/")[0], repo.partition("/")[2])
                      for repo in repos}
        self.rest_prefix = "/api/v3" if enterprise else ""
        self.graphql_path = "/api/graphql" if enterprise else "/graphql"
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        self._numbers = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What GITHUB_API_URL should be set to."""
        return self.url + self.rest_prefix

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        prefix = self.rest_prefix
        app.router.add_get(f"{prefix}/user", self._user)
        app.router.add_post(f"{prefix}/repos/{{owner}}/{{name}}/pulls", self._create)
        app.router.add_get(f"{prefix}/repos/{{owner}}/{{name}}/pulls", self._list)
        app.router.add_get(f"{prefix}/repos/{{owner}}/{{name}}/pulls/{{number}}", self._get)
        app.router.add_patch(f"{prefix}/repos/{{owner}}/{{name}}/pulls/{{number}}", self._update)
        app.router.add_post(self.graphql_path, self._graphql)
        return app

    async def start(self) -> FakeGitHub:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGitHub:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- test helpers ---------------------------------------------------------------------

    def fail_next(
        self, kind: str, count: int = 1, retry_after_s: float = 0.0, delay_s: float = 2.0
    ) -> None:
        """The next ``count`` requests get this fault (429, 500, 502, slow, html)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}")
        self.faults.extend(Fault(kind, retry_after_s, delay_s) for _ in range(count))

    def pulls(self, repo: str) -> list[dict[str, Any]]:
        return self.repos[repo].pulls

    def open_pulls(self, repo: str, branch: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self.repos[repo].pulls
                if p["state"] == "open" and (branch is None or p["head"]["ref"] == branch)]

    def add_pull(self, repo: str, head: str, base: str = "main", title: str = "existing",
                 body: str = "", draft: bool = True) -> dict[str, Any]:
        """A pull request that exists before the test (opened by someone else)."""
        return self._new_pull(self.repos[repo], head, base, title, body, draft)

    def requests_to(self, method: str, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests
                if r.method == method and r.path.endswith(path_suffix)]

    # -- plumbing -------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            document: Any = json.loads(raw) if raw else None
        except ValueError:
            document = raw.decode("utf-8", "replace")
        recorded = RecordedRequest(request.method, request.path, dict(request.query),
                                   dict(request.headers), document)
        self.requests.append(recorded)
        response = await self._answer(request, handler, recorded)
        recorded.status = response.status
        return response

    async def _answer(self, request: web.Request, handler: Any, recorded: RecordedRequest
                      ) -> web.StreamResponse:
        if not self._authorized(request.headers.get("Authorization", "")):
            return _error(401, "Bad credentials")
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        elif fault is not None and fault.kind == "html":
            return web.Response(status=200, content_type="text/html",
                                text="<html><body>Unicorn! (proxy error page)</body></html>")
        elif fault is not None and fault.kind == "429":
            limited = _error(429, "API rate limit exceeded")
            limited.headers["Retry-After"] = f"{fault.retry_after_s:g}"
            return limited
        elif fault is not None:
            return _error(int(fault.kind), "Server Error")
        if request.method in ("POST", "PATCH") and not isinstance(recorded.json, dict):
            return _error(400, "Problems parsing JSON")
        response: web.StreamResponse = await handler(request)
        return response

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() in ("bearer", "token"):
            return credentials == self.token
        if scheme.lower() == "basic":  # git-style x-access-token:<token>
            decoded = base64.b64decode(credentials.encode()).decode("utf-8", "replace")
            return decoded.partition(":")[2] == self.token
        return False

    def _repo(self, request: web.Request) -> FakeRepo | None:
        return self.repos.get(f"{request.match_info['owner']}/{request.match_info['name']}")

    def _new_pull(self, repo: FakeRepo, head: str, base: str, title: str, body: str,
                  draft: bool) -> dict[str, Any]:
        number = next(self._numbers)
        full = f"{repo.owner}/{repo.name}"
        api = f"{self.api_url}/repos/{full}/pulls/{number}"
        pull = {
            "id": 1000 + number,
            "node_id": f"PR_kwFake{number:04d}",
            "number": number,
            "url": api,
            "html_url": f"{self.url}/{full}/pull/{number}",
            "state": "open",
            "draft": draft,
            "title": title,
            "body": body,
            "merged": False,
            "user": {"login": self.login},
            "head": {"ref": head, "label": f"{repo.owner}:{head}",
                     "repo": {"full_name": full}},
            "base": {"ref": base, "label": f"{repo.owner}:{base}",
                     "repo": {"full_name": full}},
        }
        repo.pulls.append(pull)
        return pull

    # -- REST -----------------------------------------------------------------------------

    async def _user(self, request: web.Request) -> web.Response:
        return web.json_response({"login": self.login, "id": 1, "type": "User"})

    async def _create(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Not Found")
        document = await request.json()
        missing = [name for name in ("head", "base") if not document.get(name)]
        if not document.get("title") and not document.get("issue"):
            missing.insert(0, "title")
        if missing:
            return _error(422, "Validation Failed", errors=[
                {"resource": "PullRequest", "code": "missing_field", "field": name}
                for name in missing])
        head = str(document["head"])
        owner, _, branch = head.rpartition(":")
        if owner and owner != repo.owner:
            return _error(422, "Validation Failed", errors=[
                {"resource": "PullRequest", "code": "invalid", "field": "head"}])
        base = str(document["base"])
        if any(p["base"]["ref"] == base for p in self.open_pulls(f"{repo.owner}/{repo.name}",
                                                                 branch)):
            return _error(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "code": "custom",
                "message": f"A pull request already exists for {repo.owner}:{branch}."}])
        pull = self._new_pull(repo, branch, base, str(document.get("title") or ""),
                              str(document.get("body") or ""), bool(document.get("draft")))
        return web.json_response(pull, status=201)

    async def _list(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Not Found")
        state = request.query.get("state", "open")
        head = request.query.get("head")
        base = request.query.get("base")
        pulls = [p for p in repo.pulls
                 if (state == "all" or p["state"] == state)
                 and (head is None or ":" not in head or p["head"]["label"] == head)
                 and (base is None or p["base"]["ref"] == base)]
        per_page = int(request.query.get("per_page", "30"))
        return web.json_response(pulls[:per_page])

    def _find(self, request: web.Request) -> dict[str, Any] | None:
        repo = self._repo(request)
        if repo is None or not re.fullmatch(r"\d+", request.match_info["number"]):
            return None
        number = int(request.match_info["number"])
        return next((p for p in repo.pulls if p["number"] == number), None)

    async def _get(self, request: web.Request) -> web.Response:
        pull = self._find(request)
        return web.json_response(pull) if pull else _error(404, "Not Found")

    async def _update(self, request: web.Request) -> web.Response:
        pull = self._find(request)
        if pull is None:
            return _error(404, "Not Found")
        document = await request.json()
        for name in ("title", "body", "state"):
            if name in document:
                pull[name] = document[name]
        if "base" in document:
            pull["base"]["ref"] = document["base"]
        # Like the real API, "draft" is not updatable through REST: it is ignored.
        return web.json_response(pull)

    # -- GraphQL --------------------------------------------------------------------------

    async def _graphql(self, request: web.Request) -> web.Response:
        document = await request.json()
        query = str(document.get("query", ""))
        variables = document.get("variables") or {}
        if "markPullRequestReadyForReview" not in query:
            return web.json_response({"errors": [{
                "message": "FakeGitHub only supports the markPullRequestReadyForReview "
                           "mutation"}]})
        node_id = variables.get("id")
        pull = next((p for r in self.repos.values() for p in r.pulls
                     if p["node_id"] == node_id), None)
        if pull is None:
            return web.json_response({
                "data": {"markPullRequestReadyForReview": None},
                "errors": [{"type": "NOT_FOUND", "path": ["markPullRequestReadyForReview"],
                            "message": f"Could not resolve to a node with the global id of "
                                       f"'{node_id}'"}]})
        pull["draft"] = False
        return web.json_response(
            {"data": {"markPullRequestReadyForReview": {"pullRequest": {"isDraft": False}}}})
