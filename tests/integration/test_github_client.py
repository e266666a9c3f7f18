"""GitHubClient against FakeGitHub over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mwai.clients.github import (
    AppCredentials,
    GitHubClient,
    GitHubConfig,
    PullRequest,
    app_credentials,
    app_jwt,
    graphql_url,
)
from mwai.clients.http import HttpError, new_session
from mwai.demo.fakes.github import FakeApp, FakeGitHub, jwt_problem
from mwai.errors import PermanentError, TransientError
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
    return GitHubClient(GitHubConfig.of(settings), session)


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
    wrong = GitHubClient(GitHubConfig.of(make_settings(tmp_path, gh_token="ghp_wrong",
                                                       github_api_url=fake.api_url)), session)
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


# -- GitHub App auth ---------------------------------------------------------------------


def rsa_key_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo
                                           ).decode()
    return private, public


async def test_github_app_installation_token_is_used_and_renewed(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    private, public = rsa_key_pair()
    now = [1_000.0]
    async with FakeGitHub((REPO,), token="static-token-unused",
                          app=FakeApp("12345", public, installation_id="77")) as fake:
        settings = make_settings(tmp_path, gh_token="", github_api_url=fake.api_url)
        config = replace(GitHubConfig.of(settings), app=AppCredentials("12345", private, "77"))
        github = GitHubClient(config, session, clock=lambda: now[0])
        pr, _ = await github.open_or_update_pr(REPO, BRANCH, "main", "t", "b")
        await github.find_pr(REPO, BRANCH)

        token_request, create, listing = fake.requests
        assert token_request.path == "/app/installations/77/access_tokens"
        assert token_request.status == 201
        jwt = token_request.headers["Authorization"].removeprefix("Bearer ")
        assert len(jwt.split(".")) == 3
        issued = next(iter(fake.github_app.issued))  # type: ignore[union-attr]
        assert create.headers["Authorization"] == f"Bearer {issued}"
        assert listing.headers["Authorization"] == f"Bearer {issued}"
        assert await github.token() == issued

        now[0] += 3600 - 200  # within the refresh margin of the one-hour token
        await github.mark_ready(REPO, pr)
        assert [r.path for r in fake.requests[3:]] == [
            "/app/installations/77/access_tokens", "/graphql"]
        assert await github.token() != issued
        assert (await github.whoami())["id"] == "12345"


async def test_github_app_with_the_wrong_key_is_refused(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    _, public = rsa_key_pair()
    other_private, _ = rsa_key_pair()
    async with FakeGitHub((REPO,), app=FakeApp("12345", public)) as fake:
        settings = make_settings(tmp_path, gh_token="", github_api_url=fake.api_url)
        config = replace(GitHubConfig.of(settings),
                         app=AppCredentials("12345", other_private, "42"))
        github = GitHubClient(config, session)
        with pytest.raises(HttpError) as caught:
            await github.find_pr(REPO, BRANCH)
    assert caught.value.status == 401 and "could not be decoded" in str(caught.value)


def test_app_settings_are_read_from_the_key_file(tmp_path: Path) -> None:
    private, public = rsa_key_pair()
    key_file = tmp_path / "app.pem"
    key_file.write_text(private)
    settings = make_settings(tmp_path)
    assert GitHubConfig.of(settings).app is None  # no GH_APP_ID: GH_TOKEN is used
    with_app = replace(settings, gh_app_id="9", gh_app_private_key_file=str(key_file),
                       gh_app_installation_id="5")
    credentials = GitHubConfig.of(with_app).app
    assert credentials == AppCredentials("9", private, "5")
    token = app_jwt(credentials, now_s=10_000)
    assert jwt_problem(FakeApp("9", public), token, now_s=10_000) is None
    assert "exp" in str(jwt_problem(FakeApp("9", public), token, now_s=20_000))
    with pytest.raises(PermanentError, match="cannot read GH_APP_PRIVATE_KEY_FILE"):
        app_credentials("9", str(tmp_path / "nope"), "5")
    with pytest.raises(PermanentError, match="GH_APP_INSTALLATION_ID are needed"):
        app_credentials("9", str(key_file), "")


@pytest.mark.parametrize("kind", ["403-primary", "403-secondary"])
async def test_a_403_rate_limit_is_waited_out_and_one_pr_opened(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession, kind: str) -> None:
    fake.fail_next(kind, retry_after_s=0)
    pr, created = await client_for(tmp_path, fake, session).open_or_update_pr(
        REPO, BRANCH, "main", "t", "b")
    assert created and [r.status for r in fake.requests] == [403, 201]
    assert [p["number"] for p in fake.pulls(REPO)] == [pr.number]


async def test_a_403_rate_limit_that_outlasts_the_retries_is_transient(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    fake.fail_next("403-primary", count=2, retry_after_s=0)
    github = client_for(tmp_path, fake, session, http_retries=1)
    with pytest.raises(TransientError, match="API rate limit exceeded"):
        await github.open_or_update_pr(REPO, BRANCH, "main", "t", "b")
    assert fake.pulls(REPO) == []


async def test_a_403_that_is_no_rate_limit_is_final_and_says_what_to_check(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    fake.fail_next("403")
    with pytest.raises(HttpError) as caught:
        await client_for(tmp_path, fake, session).open_or_update_pr(
            REPO, BRANCH, "main", "t", "b")
    assert caught.value.status == 403
    assert "Resource not accessible by integration" in str(caught.value)
    assert "pull requests write permissions" in str(caught.value)
    assert len(fake.requests) == 1 and fake.pulls(REPO) == []


async def test_a_300_character_title_is_cut_at_a_word_and_accepted(
        tmp_path: Path, fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    title = "PROJ-1: " + " ".join(f"part{i}" for i in range(60))
    assert len(title) > 300
    body = "x" * 70_000
    pr, created = await client_for(tmp_path, fake, session).open_or_update_pr(
        REPO, BRANCH, "main", title, body)
    (pull,) = fake.pulls(REPO)
    assert created and pull["number"] == pr.number
    assert len(pull["title"]) <= 256 and pull["title"].endswith("...")
    assert title.startswith(pull["title"].removesuffix("..."))
    assert title[len(pull["title"]) - 3] == " "  # cut where a word ends
    assert len(pull["body"]) <= 65_536


async def test_the_fake_refuses_a_title_over_256_like_github(
        fake: FakeGitHub, session: aiohttp.ClientSession) -> None:
    async with session.post(f"{fake.api_url}/repos/{REPO}/pulls",
                            headers={"Authorization": f"Bearer {fake.token}"},
                            json={"title": "t" * 257, "head": BRANCH, "base": "main"}) as answer:
        assert answer.status == 422
        document = await answer.json()
    assert document["message"] == "Validation Failed"
    assert document["errors"][0]["field"] == "title"
    assert "maximum is 256 characters" in document["errors"][0]["message"]
    assert fake.pulls(REPO) == []


async def test_a_repository_without_drafts_gets_a_normal_pr(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with FakeGitHub((REPO,), drafts=False) as fake:
        github = client_for(tmp_path, fake, session)
        pr, created = await github.open_or_update_pr(REPO, BRANCH, "main", "t", "b")
        assert created and not pr.draft
        assert [(r.status, r.json["draft"]) for r in fake.requests] == [(422, True),
                                                                        (201, False)]
        await github.mark_ready(REPO, pr)  # nothing to do: no GraphQL call
        assert len(fake.requests) == 2 and len(fake.pulls(REPO)) == 1
