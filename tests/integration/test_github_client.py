"""GitHubClient against FakeGitHub over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.errors import PermanentError, TransientError
from mwai.github import GitHubClient, PullRequest, graphql_url
from mwai.http import HttpError, new_session
from mwai.testing.fake_github import FakeGitHub
from tests.conftest import make_settings

REPO = "acme/app"
BRANCH = "ai/PROJ-1-health-endpoint"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub((REPO,)) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as client_session:
        yield client_session


def client_for(tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession,
               **changes: Any) -> GitHubClient:
    values: dict[str, Any] = {"gh_token": fake.token, "github_api_url": fake.api_url,
                              "http_retries": 2}
    settings = make_settings(tmp_path, **{**values, **changes})
    return GitHubClient(settings, session)


async def test_opens_a_draft_pr_with_the_documented_request(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    github = client_for(tmp_path, fake, session)
    pr, created = await github.open_or_update_pr(REPO, BRANCH, "main", "PROJ-1: Health",
                                                 "body one")
    assert created
    assert pr.draft and pr.state == "open" and pr.head == BRANCH and pr.base == "main"
    assert pr.url.endswith(f"/{REPO}/pull/{pr.number}")
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/repos/{REPO}/pulls")
    assert request.headers["Authorization"] == f"Bearer {fake.token}"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.json == {"title": "PROJ-1: Health", "head": BRANCH, "base": "main",
                            "body": "body one", "draft": True}


async def test_existing_pr_is_found_and_updated_on_422(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    github = client_for(tmp_path, fake, session)
    first, _ = await github.open_or_update_pr(REPO, BRANCH, "main", "t1", "body one")
    fake.requests.clear()

    second, created = await github.open_or_update_pr(REPO, BRANCH, "main", "t2", "body two")

    assert not created
    assert second.number == first.number
    assert [(r.method, r.status) for r in fake.requests] == [
        ("POST", 422), ("GET", 200), ("PATCH", 200)]
    listing = fake.requests[1]
    assert listing.query["head"] == f"acme:{BRANCH}" and listing.query["state"] == "open"
    assert fake.requests[2].path == f"/repos/{REPO}/pulls/{first.number}"
    assert fake.requests[2].json == {"title": "t2", "body": "body two"}
    (pull,) = fake.pulls(REPO)
    assert (pull["title"], pull["body"]) == ("t2", "body two")


async def test_find_pr(tmp_path: Path, fake: FakeGitHub,
                       session: aiohttp.ClientSession) -> None:
    github = client_for(tmp_path, fake, session)
    assert await github.find_pr(REPO, BRANCH) is None
    fake.add_pull(REPO, "other-branch")
    existing = fake.add_pull(REPO, BRANCH)
    found = await github.find_pr(REPO, BRANCH)
    assert found is not None and found.number == existing["number"]


async def test_mark_ready_uses_the_graphql_mutation(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    github = client_for(tmp_path, fake, session)
    pr, _ = await github.open_or_update_pr(REPO, BRANCH, "main", "t", "b")
    await github.mark_ready(REPO, pr)
    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/graphql")
    assert "markPullRequestReadyForReview" in request.json["query"]
    assert request.json["variables"] == {"id": pr.node_id}
    assert fake.pulls(REPO)[0]["draft"] is False


async def test_mark_ready_of_unknown_node_is_a_permanent_error(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    github = client_for(tmp_path, fake, session)
    ghost = PullRequest(number=9, url="", node_id="PR_nothing", draft=True, state="open",
                        head=BRANCH, base="main")
    with pytest.raises(PermanentError, match="Could not resolve to a node"):
        await github.mark_ready(REPO, ghost)


async def test_enterprise_urls(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"
    async with FakeGitHub((REPO,), enterprise=True) as fake:
        github = client_for(tmp_path, fake, session)
        pr, _ = await github.open_or_update_pr(REPO, BRANCH, "main", "t", "b")
        await github.mark_ready(REPO, pr)
        assert [r.path for r in fake.requests] == [f"/api/v3/repos/{REPO}/pulls",
                                                   "/api/graphql"]
        assert fake.pulls(REPO)[0]["draft"] is False


async def test_429_then_success(tmp_path: Path, fake: FakeGitHub,
                                session: aiohttp.ClientSession) -> None:
    fake.fail_next("429", retry_after_s=0)
    pr, created = await client_for(tmp_path, fake, session).open_or_update_pr(
        REPO, BRANCH, "main", "t", "b")
    assert created and [r.status for r in fake.requests] == [429, 201]
    assert len(fake.pulls(REPO)) == 1


async def test_5xx_until_retries_run_out_is_transient(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    fake.fail_next("502", count=2)
    github = client_for(tmp_path, fake, session, http_retries=1)
    with pytest.raises(TransientError, match="github POST /repos/acme/app/pulls failed"):
        await github.open_or_update_pr(REPO, BRANCH, "main", "t", "b")
    assert fake.pulls(REPO) == []


async def test_bad_token_and_unknown_repo_are_permanent(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    wrong = GitHubClient(make_settings(tmp_path, gh_token="ghp_wrong", github_api_url=fake.api_url),
                         session)
    with pytest.raises(HttpError) as caught:
        await wrong.whoami()
    assert caught.value.status == 401 and "Bad credentials" in str(caught.value)
    assert "ghp_wrong" not in str(caught.value)
    github = client_for(tmp_path, fake, session)
    with pytest.raises(HttpError) as caught:
        await github.open_or_update_pr("acme/missing", BRANCH, "main", "t", "b")
    assert caught.value.status == 404
    with pytest.raises(PermanentError, match="not 'owner/name'"):
        await github.find_pr("just-a-name", BRANCH)


async def test_other_422_is_not_mistaken_for_an_existing_pr(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    github = client_for(tmp_path, fake, session)
    with pytest.raises(HttpError) as caught:
        await github.open_or_update_pr(REPO, BRANCH, "", "t", "b")
    assert caught.value.status == 422 and "missing_field" in str(caught.value)
    assert len(fake.requests) == 1


async def test_whoami(tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    assert (await client_for(tmp_path, fake, session).whoami())["login"] == "mwai-bot"
