"""GitHub: open or update the draft pull request of a branch, and mark it ready.

REST for pull requests (create / list by head / update); GraphQL for
``markPullRequestReadyForReview`` because REST cannot turn a draft into a ready PR.

Auth: a token (GH_TOKEN), or a GitHub App: a JWT signed with the app's private key
buys a one-hour installation token, refreshed a few minutes before it expires.
``GitHubClient.token()`` gives the current one (also what git push should use).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mwai.clients.http import ApiClient, CallObserver, HttpError, Response, summarize_body
from mwai.errors import PermanentError, TransientError
from mwai.settings import Settings

GITHUB_API_VERSION = "2022-11-28"
ALREADY_EXISTS = "a pull request already exists"
READY_MUTATION = (
    "mutation($id:ID!){markPullRequestReadyForReview(input:{pullRequestId:$id})"
    "{pullRequest{isDraft}}}"
)

# GitHub's advice for a secondary rate limit that says nothing of when to come back.
SECONDARY_LIMIT_WAIT_S = 60.0
# GitHub's limits on a pull request (a longer title is refused with 422).
TITLE_MAX_CHARS = 256
BODY_MAX_CHARS = 65536
NO_DRAFTS = "draft pull requests are not supported"

# An installation token is renewed this long before GitHub says it expires.
TOKEN_REFRESH_MARGIN_S = 300.0
JWT_LIFETIME_S = 540  # GitHub allows at most 10 minutes


@dataclass(frozen=True)
class AppCredentials:
    app_id: str  # the app's ID or client ID (the JWT issuer)
    private_key_pem: str
    installation_id: str


def app_credentials(app_id: str, key_file: str, installation_id: str) -> AppCredentials | None:
    """The GitHub App of GH_APP_ID, GH_APP_PRIVATE_KEY_FILE and GH_APP_INSTALLATION_ID
    (the key read from its file), or None without an app ID: GH_TOKEN is used."""
    if not app_id:
        return None
    if not key_file or not installation_id:
        raise PermanentError("GH_APP_ID is set: GH_APP_PRIVATE_KEY_FILE and "
                             "GH_APP_INSTALLATION_ID are needed too")
    try:
        pem = Path(key_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise PermanentError(f"cannot read GH_APP_PRIVATE_KEY_FILE {key_file}: "
                             f"{exc.strerror}") from None
    return AppCredentials(app_id, pem, installation_id)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt(app: AppCredentials, now_s: float | None = None) -> str:
    """The RS256 JWT that authenticates as the app (iat 60 s in the past for clock drift)."""
    now = int(time.time() if now_s is None else now_s)
    try:
        key = serialization.load_pem_private_key(app.private_key_pem.encode(), password=None)
    except ValueError:
        raise PermanentError("the GitHub App private key is not an unencrypted PEM key: "
                             "download a new one from the app's settings page") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PermanentError("the GitHub App private key is not an RSA key")
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"iat": now - 60, "exp": now + JWT_LIFETIME_S,
                                 "iss": app.app_id}).encode())
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{_b64url(signature)}"


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    node_id: str
    draft: bool
    state: str
    head: str
    base: str

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> PullRequest:
        return cls(
            number=int(document["number"]),
            url=str(document.get("html_url") or document.get("url") or ""),
            node_id=str(document.get("node_id") or ""),
            draft=bool(document.get("draft")),
            state=str(document.get("state") or ""),
            head=str((document.get("head") or {}).get("ref") or ""),
            base=str((document.get("base") or {}).get("ref") or ""),
        )


def rate_limit_wait_s(status: int, headers: Mapping[str, str], body: bytes) -> float | None:
    """Whether a 403 or 429 of GitHub is a rate limit (None: it is not), and the least
    wait it asks for. GitHub answers its primary limit with x-ratelimit-remaining: 0
    and its secondary limits with retry-after or a message saying so; any other 403
    (a token without the permission, a blocked repository) is final."""
    if status not in (403, 429):
        return None
    if headers.get("retry-after") or headers.get("x-ratelimit-remaining", "").strip() == "0":
        return 0.0  # the headers say how long: server_wait_s reads them
    if "secondary rate limit" in body.decode("utf-8", "replace").lower():
        return SECONDARY_LIMIT_WAIT_S
    return 0.0 if status == 429 else None


def cut_title(title: str, limit: int = TITLE_MAX_CHARS) -> str:
    """The title within GitHub's limit, cut at a word boundary and marked with "..."."""
    title = " ".join(title.split())
    if len(title) <= limit:
        return title
    cut = title[: limit - 3]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "..."


def cut_body(body: str, limit: int = BODY_MAX_CHARS) -> str:
    """The body within GitHub's limit, with a line saying it was cut."""
    if len(body) <= limit:
        return body
    note = "\n\n(cut at GitHub's limit of a pull request body)"
    return body[: limit - len(note)] + note


def graphql_url(api_url: str) -> str:
    """GitHub.com: https://api.github.com/graphql; Enterprise (…/api/v3): …/api/graphql."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"


def split_repo(repo: str) -> tuple[str, str]:
    owner, _, name = repo.strip().partition("/")
    if not owner or not name or "/" in name:
        raise PermanentError(
            f"GitHub repository {repo!r} is not 'owner/name': fix GH_REPO or the "
            "github_repo of the project in MWAI_REPOS_FILE"
        )
    return owner, name


@dataclass(frozen=True, slots=True)
class GitHubConfig:
    """The GitHub API a GitHubClient talks to, how it authenticates, its call limits."""

    api_url: str  # https://api.github.com, or GitHub Enterprise's .../api/v3
    token: str = field(repr=False)  # GH_TOKEN; unused when ``app`` is set
    app: AppCredentials | None = field(repr=False)  # a GitHub App authenticates instead
    timeout_s: float  # one HTTP request
    retries: int  # retries of a transient failure, then the run is retried later

    @classmethod
    def of(cls, settings: Settings) -> GitHubConfig:
        """Reads the app's private key file when GH_APP_ID is set (PermanentError if not
        readable)."""
        app = app_credentials(settings.gh_app_id, settings.gh_app_private_key_file,
                              settings.gh_app_installation_id)
        return cls(api_url=settings.github_api_url, token=settings.gh_token, app=app,
                   timeout_s=settings.http_timeout_s, retries=settings.http_retries)


class GitHubClient:
    def __init__(
        self,
        config: GitHubConfig,
        session: aiohttp.ClientSession,
        observer: CallObserver | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = ApiClient(
            "github",
            config.api_url,
            session,
            headers={
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
                "Accept": "application/vnd.github+json",
            },
            timeout_s=config.timeout_s,
            retries=config.retries,
            observer=observer,
            rate_limit=rate_limit_wait_s,
        )
        self.graphql_url = graphql_url(config.api_url)
        self.app = config.app
        self._static_token = config.token
        self._clock = clock
        self._installation_token = ""
        self._token_expires_s = 0.0
        self._token_lock = asyncio.Lock()

    async def token(self) -> str:
        """GH_TOKEN, or the GitHub App's installation token (renewed before it expires)."""
        if self.app is None:
            return self._static_token
        async with self._token_lock:
            if self._clock() < self._token_expires_s - TOKEN_REFRESH_MARGIN_S:
                return self._installation_token
            answer = await self._request(
                "POST", f"/app/installations/{self.app.installation_id}/access_tokens",
                headers={"Authorization": f"Bearer {app_jwt(self.app)}"},
            )
            document = answer.json()
            try:
                token = str(document["token"])
                expires = datetime.fromisoformat(str(document["expires_at"]).replace("Z",
                                                                                     "+00:00"))
            except (KeyError, TypeError, ValueError):
                raise PermanentError("github answered the installation token request without "
                                     "token and expires_at") from None
            # expires_at is in GitHub's clock; keep the same lifetime on ours.
            self._installation_token = token
            self._token_expires_s = self._clock() + (expires.timestamp() - time.time())
            return token

    async def _request(self, method: str, path: str, **options: Any) -> Response:
        """ApiClient.request; a 403 that is not a rate limit says what to check."""
        try:
            return await self.api.request(method, path, **options)
        except HttpError as exc:
            if exc.status != 403:
                raise
            raise HttpError("github", method, path, 403, f"{exc.detail} (GitHub refused: "
                            "give GH_TOKEN or the GitHub App the contents and pull requests "
                            "write permissions on the repository)") from None

    async def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    async def whoami(self) -> dict[str, Any]:
        """GET /user with a token; GET /app (the app itself) for a GitHub App."""
        if self.app is not None:
            answer = await self._request(
                "GET", "/app", headers={"Authorization": f"Bearer {app_jwt(self.app)}"})
        else:
            answer = await self._request("GET", "/user", headers=await self._auth())
        document = answer.json()
        return document if isinstance(document, dict) else {}

    async def find_pr(self, repo: str, branch: str) -> PullRequest | None:
        """The open pull request whose head is ``branch`` of the repo's owner, if any."""
        owner, name = split_repo(repo)
        answer = await self._request(
            "GET", f"/repos/{owner}/{name}/pulls",
            params={"head": f"{owner}:{branch}", "state": "open", "per_page": 10},
            headers=await self._auth(),
        )
        pulls = answer.json()
        if not isinstance(pulls, list):
            raise PermanentError(f"github GET /repos/{repo}/pulls did not answer a list")
        for document in pulls:
            if isinstance(document, dict) and (document.get("head") or {}).get("ref") == branch:
                return PullRequest.from_json(document)
        return None

    async def open_or_update_pr(
        self,
        repo: str,
        branch: str,
        base: str,
        title: str,
        body: str,
        draft: bool = True,
    ) -> tuple[PullRequest, bool]:
        """Create the PR (created=True) or, if one is open for the branch, update it.

        The title and body are cut to GitHub's limits; a repository without draft pull
        requests gets a ready one."""
        owner, name = split_repo(repo)
        path = f"/repos/{owner}/{name}/pulls"
        title, body = cut_title(title), cut_body(body)
        answer = await self._create_pr(path, title, branch, base, body, draft)
        if answer.status == 422 and draft and _mentions(answer.json(), NO_DRAFTS):
            answer = await self._create_pr(path, title, branch, base, body, False)
        if answer.status != 422:
            return PullRequest.from_json(answer.json()), True
        if not _mentions(answer.json(), ALREADY_EXISTS):
            raise HttpError("github", "POST", path, 422, summarize_body(answer.body))
        existing = await self.find_pr(repo, branch)
        if existing is None:
            # GitHub said it exists but does not list it: it was closed in between.
            raise TransientError(
                f"github says a pull request already exists for {owner}:{branch} but none "
                "is open; retrying later"
            )
        updated = await self._request(
            "PATCH", f"{path}/{existing.number}", json={"title": title, "body": body},
            headers=await self._auth(),
        )
        return PullRequest.from_json(updated.json()), False

    async def _create_pr(self, path: str, title: str, branch: str, base: str, body: str,
                         draft: bool) -> Response:
        return await self._request(
            "POST", path,
            json={"title": title, "head": branch, "base": base, "body": body, "draft": draft},
            ok=frozenset({422}), headers=await self._auth(),
        )

    async def mark_ready(self, repo: str, pr: PullRequest) -> None:
        """Turn a draft PR into one ready for review (GraphQL; REST cannot)."""
        if not pr.draft:
            return
        answer = await self._request(
            "POST", self.graphql_url,
            json={"query": READY_MUTATION, "variables": {"id": pr.node_id}},
            headers=await self._auth(),
        )
        document = answer.json()
        errors = document.get("errors") if isinstance(document, dict) else None
        if not errors:
            return
        messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e)
                             for e in errors)
        if any(isinstance(e, dict) and e.get("type") == "RATE_LIMITED" for e in errors):
            raise TransientError(f"github GraphQL rate limit: {messages}")
        raise PermanentError(
            f"github could not mark pull request #{pr.number} of {repo} ready for review: "
            f"{messages}"
        )


def _mentions(document: Any, text: str) -> bool:
    """Whether GitHub's 422 body says ``text`` (in its message or one of its errors)."""
    if not isinstance(document, dict):
        return False
    errors = document.get("errors") or []
    messages = [str(document.get("message", ""))] + [
        str(error.get("message", "")) for error in errors if isinstance(error, dict)]
    return any(text in message.lower() for message in messages)
