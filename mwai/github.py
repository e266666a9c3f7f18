"""GitHub: open or update the draft pull request of a branch, and mark it ready.

REST for pull requests (create / list by head / update); GraphQL for
``markPullRequestReadyForReview`` because REST cannot turn a draft into a ready PR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from mwai.errors import PermanentError, TransientError
from mwai.http import ApiClient, CallObserver, HttpError, summarize_body
from mwai.settings import Settings

GITHUB_API_VERSION = "2022-11-28"
ALREADY_EXISTS = "a pull request already exists"
READY_MUTATION = (
    "mutation($id:ID!){markPullRequestReadyForReview(input:{pullRequestId:$id})"
    "{pullRequest{isDraft}}}"
)


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


class GitHubClient:
    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        observer: CallObserver | None = None,
    ) -> None:
        self.api = ApiClient(
            "github",
            settings.github_api_url,
            session,
            headers={
                "Authorization": f"Bearer {settings.gh_token}",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
                "Accept": "application/vnd.github+json",
            },
            timeout_s=settings.http_timeout_s,
            retries=settings.http_retries,
            observer=observer,
        )
        self.graphql_url = graphql_url(settings.github_api_url)

    async def whoami(self) -> dict[str, Any]:
        document = (await self.api.request("GET", "/user")).json()
        return document if isinstance(document, dict) else {}

    async def find_pr(self, repo: str, branch: str) -> PullRequest | None:
        """The open pull request whose head is ``branch`` of the repo's owner, if any."""
        owner, name = split_repo(repo)
        answer = await self.api.request(
            "GET", f"/repos/{owner}/{name}/pulls",
            params={"head": f"{owner}:{branch}", "state": "open", "per_page": 10},
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
        """Create the PR (created=True) or, if one is open for the branch, update it."""
        owner, name = split_repo(repo)
        path = f"/repos/{owner}/{name}/pulls"
        answer = await self.api.request(
            "POST", path,
            json={"title": title, "head": branch, "base": base, "body": body, "draft": draft},
            ok=frozenset({422}),
        )
        if answer.status != 422:
            return PullRequest.from_json(answer.json()), True
        if not _already_exists(answer.json()):
            raise HttpError("github", "POST", path, 422, summarize_body(answer.body))
        existing = await self.find_pr(repo, branch)
        if existing is None:
            # GitHub said it exists but does not list it: it was closed in between.
            raise TransientError(
                f"github says a pull request already exists for {owner}:{branch} but none "
                "is open; retrying later"
            )
        updated = await self.api.request(
            "PATCH", f"{path}/{existing.number}", json={"title": title, "body": body},
        )
        return PullRequest.from_json(updated.json()), False

    async def mark_ready(self, repo: str, pr: PullRequest) -> None:
        """Turn a draft PR into one ready for review (GraphQL; REST cannot)."""
        if not pr.draft:
            return
        answer = await self.api.request(
            "POST", self.graphql_url,
            json={"query": READY_MUTATION, "variables": {"id": pr.node_id}},
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


def _already_exists(document: Any) -> bool:
    if not isinstance(document, dict):
        return False
    errors = document.get("errors") or []
    return any(
        isinstance(error, dict) and ALREADY_EXISTS in str(error.get("message", "")).lower()
        for error in errors
    )
