"""FakeGitHub: the pull-request subset of the GitHub REST and GraphQL APIs on 127.0.0.1.

Serves ``GET /user``, ``POST/GET /repos/{o}/{r}/pulls``, ``GET/PATCH
/repos/{o}/{r}/pulls/{n}`` and ``POST /graphql`` (only the
``markPullRequestReadyForReview`` mutation). Like the real service it answers 401
"Bad credentials" without the right token, 404 for an unknown repository, and 422
"Validation Failed" for a second open pull request of the same head and base.
``enterprise=True`` serves REST under ``/api/v3`` and GraphQL at ``/api/graphql``
like GitHub Enterprise Server. Faults: 429 + Retry-After, 500/502/503, slow, HTML, and
403s with the real shapes: the primary rate limit (x-ratelimit-remaining: 0 and
x-ratelimit-reset), a secondary rate limit (retry-after and its message) and a 403
that is no rate limit. Like GitHub, a title over 256 characters is refused (422), and
``drafts=False`` plays a repository without draft pull requests (422 on a draft).
With ``app=FakeApp(...)`` it also plays a GitHub App: ``GET /app`` and
``POST /app/installations/{id}/access_tokens`` take an RS256 JWT (checked against the
app's public key, issuer and lifetime) and hand out expiring installation tokens that
the other endpoints accept.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mwai.demo.fakes.loopback import Fault, LoopbackServer

FAULT_KINDS = ("429", "500", "502", "503", "slow", "html", "403-primary", "403-secondary",
               "403")
DOCS = "https://docs.github.com/rest"
RATE_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
TITLE_MAX_CHARS = 256
BODY_MAX_CHARS = 65536
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes "
                     "before you try again. If you reach out to GitHub Support for help, "
                     "please include the request ID 0000:FAKE:0000.")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    status: int = 0


@dataclass
class FakeRepo:
    owner: str
    name: str
    pulls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FakeApp:
    app_id: str
    public_key_pem: str
    installation_id: str = "42"
    token_lifetime_s: float = 3600.0
    issued: dict[str, float] = field(default_factory=dict)  # token -> expiry (epoch s)


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_problem(app: FakeApp, token: str, now_s: float) -> str | None:
    """Why GitHub would refuse this app JWT, or None when it is valid."""
    parts = token.split(".")
    if len(parts) != 3:
        return "A JSON web token could not be decoded"
    try:
        header, claims = (json.loads(_b64decode(p)) for p in parts[:2])
        signature = _b64decode(parts[2])
    except ValueError:
        return "A JSON web token could not be decoded"
    if header.get("alg") != "RS256":
        return "JWT must be signed with RS256"
    key = serialization.load_pem_public_key(app.public_key_pem.encode())
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                   hashes.SHA256())
    except InvalidSignature:
        return "A JSON web token could not be decoded"
    if str(claims.get("iss")) != app.app_id:
        return "'Issuer' claim ('iss') must be an Integer"
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or iat > now_s + 5:
        return "'Issued at' claim ('iat') must be an Integer representing a time in the past"
    if not isinstance(exp, int) or exp <= now_s:
        return "'Expiration time' claim ('exp') must be a numeric value representing the " \
               "future time at which the assertion expires"
    if exp - iat > 660:
        return "'Expiration time' claim ('exp') is too far in the future"
    return None


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object sent (the middleware already refused anything else), or {}."""
    raw = await request.read()
    document: dict[str, Any] = json.loads(raw) if raw else {}
    return document


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"message": message, "documentation_url": DOCS, "status": str(status), **extra},
        status=status)


def _forbidden(fault: Fault) -> web.Response:
    """GitHub's 403s: the primary and secondary rate limits, or a refused permission."""
    if fault.kind == "403-primary":
        response = web.json_response({
            "message": "API rate limit exceeded for installation ID 42. If you reach out to "
                       "GitHub Support for help, please include the request ID 0000:FAKE.",
            "documentation_url": RATE_DOCS, "status": "403"}, status=403)
        response.headers.update({
            "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
            "x-ratelimit-used": "5000", "x-ratelimit-resource": "core",
            "x-ratelimit-reset": str(int(time.time() + fault.retry_after_s))})
        return response
    if fault.kind == "403-secondary":
        response = web.json_response({
            "message": SECONDARY_MESSAGE,
            "documentation_url": RATE_DOCS + "#about-secondary-rate-limits",
            "status": "403"}, status=403)
        response.headers["retry-after"] = f"{fault.retry_after_s:g}"
        return response
    return _error(403, "Resource not accessible by integration")


def _too_long(document: dict[str, Any]) -> web.Response | None:
    """GitHub's 422 for a title or body over its limit."""
    for name, limit in (("title", TITLE_MAX_CHARS), ("body", BODY_MAX_CHARS)):
        if len(str(document.get(name) or "")) > limit:
            return _error(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "code": "custom", "field": name,
                "message": f"{name} is too long (maximum is {limit} characters)"}])
    return None


class FakeGitHub(LoopbackServer):
    def __init__(
        self,
        repos: tuple[str, ...] = ("acme/app",),
        *,
        token: str = "test-gh-token",
        login: str = "mwai-bot",
        enterprise: bool = False,
        app: FakeApp | None = None,
        drafts: bool = True,
    ) -> None:
        self.token = token
        self.drafts = drafts  # False: the repositories refuse draft pull requests
        self.github_app = app
        self.login = login
        self.repos = {repo: FakeRepo(repo.partition("/")[0], repo.partition("/")[2])
                      for repo in repos}
        self.rest_prefix = "/api/v3" if enterprise else ""
        self.graphql_path = "/api/graphql" if enterprise else "/graphql"
        self.requests: list[RecordedRequest] = []
        self.faults: deque[Fault] = deque()
        self._numbers = itertools.count(1)
        self._token_numbers = itertools.count(1)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """What GITHUB_API_URL should be set to."""
        return self.url + self.rest_prefix

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        prefix = self.rest_prefix
        app.router.add_get(f"{prefix}/user", self._user)
        app.router.add_get(f"{prefix}/app", self._app)
        app.router.add_post(f"{prefix}/app/installations/{{installation}}/access_tokens",
                            self._access_token)
        app.router.add_post(f"{prefix}/repos/{{owner}}/{{name}}/pulls", self._create)
        app.router.add_get(f"{prefix}/repos/{{owner}}/{{name}}/pulls", self._list)
        app.router.add_get(f"{prefix}/repos/{{owner}}/{{name}}/pulls/{{number}}", self._get)
        app.router.add_patch(f"{prefix}/repos/{{owner}}/{{name}}/pulls/{{number}}", self._update)
        app.router.add_post(self.graphql_path, self._graphql)
        return app

    # -- test helpers ---------------------------------------------------------------------

    def fail_next(
        self, kind: str, count: int = 1, retry_after_s: float = 0.0, delay_s: float = 2.0
    ) -> None:
        """The next ``count`` requests get this fault (one of FAULT_KINDS); a rate limit
        asks to come back in ``retry_after_s``."""
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
        app_path = f"{self.rest_prefix}/app"
        if request.path == app_path or request.path.startswith(app_path + "/"):
            problem = self._app_problem(request.headers.get("Authorization", ""))
            if problem:
                return _error(401, problem)
        elif not self._authorized(request.headers.get("Authorization", "")):
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
        elif fault is not None and fault.kind.startswith("403"):
            return _forbidden(fault)
        elif fault is not None:
            return _error(int(fault.kind), "Server Error")
        if recorded.json is not None and not isinstance(recorded.json, dict):
            return _error(400, "Problems parsing JSON")
        response: web.StreamResponse = await handler(request)
        return response

    def _app_problem(self, header: str) -> str | None:
        if self.github_app is None:
            return "Bad credentials"
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return "A JSON web token could not be decoded"
        return jwt_problem(self.github_app, credentials, time.time())

    def _valid_token(self, token: str) -> bool:
        if token == self.token:
            return True
        expiry = self.github_app.issued.get(token) if self.github_app else None
        return expiry is not None and expiry > time.time()

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() in ("bearer", "token"):
            return self._valid_token(credentials)
        if scheme.lower() == "basic":  # git-style x-access-token:<token>
            decoded = base64.b64decode(credentials.encode()).decode("utf-8", "replace")
            return self._valid_token(decoded.partition(":")[2])
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

    async def _app(self, request: web.Request) -> web.Response:
        assert self.github_app is not None
        return web.json_response({"id": self.github_app.app_id, "slug": "mwai-fake",
                                  "name": "mwai (fake)"})

    async def _access_token(self, request: web.Request) -> web.Response:
        app = self.github_app
        assert app is not None
        if request.match_info["installation"] != app.installation_id:
            return _error(404, "Not Found")
        token = f"ghs_fake{next(self._token_numbers):04d}"
        expiry = time.time() + app.token_lifetime_s
        app.issued[token] = expiry
        expires_at = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"token": token, "expires_at": expires_at,
                                  "permissions": {"contents": "write",
                                                  "pull_requests": "write"},
                                  "repository_selection": "selected"}, status=201)

    async def _create(self, request: web.Request) -> web.Response:
        repo = self._repo(request)
        if repo is None:
            return _error(404, "Not Found")
        document = await _body(request)
        missing = [name for name in ("head", "base") if not document.get(name)]
        if not document.get("title") and not document.get("issue"):
            missing.insert(0, "title")
        if missing:
            return _error(422, "Validation Failed", errors=[
                {"resource": "PullRequest", "code": "missing_field", "field": name}
                for name in missing])
        refused = _too_long(document)
        if refused is not None:
            return refused
        if document.get("draft") and not self.drafts:
            return _error(422, "Validation Failed", errors=[{
                "resource": "PullRequest", "code": "custom",
                "message": "Draft pull requests are not supported in this repository."}])
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
        document = await _body(request)
        refused = _too_long(document)
        if refused is not None:
            return refused
        for name in ("title", "body", "state"):
            if name in document:
                pull[name] = document[name]
        if "base" in document:
            pull["base"]["ref"] = document["base"]
        # Like the real API, "draft" is not updatable through REST: it is ignored.
        return web.json_response(pull)

    # -- GraphQL --------------------------------------------------------------------------

    async def _graphql(self, request: web.Request) -> web.Response:
        document = await _body(request)
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
