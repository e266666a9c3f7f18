"""Branch names from hostile ticket text, the per-command git credentials, repo mapping."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mwai.errors import ConfigError, PermanentError
from mwai.runner.git_env import branch_name, git_environment, mirror_name
from mwai.runner.repos import RepoConfig, RepoSources, is_safe_branch, load_repos, resolve_repo
from tests.conftest import make_settings


def is_valid_branch(name: str) -> bool:
    result = subprocess.run(
        ["git", "check-ref-format", "--branch", name], capture_output=True, check=False
    )
    return result.returncode == 0


HOSTILE = [
    "../../etc/passwd",
    "fix ~^:?*[\\ everything",
    "a..b @{upstream} HEAD@{1}",
    "feature.lock",
    "trailing dot.",
    "/leading/slash/",
    "$(rm -rf /); `id` && echo pwned | tee x > y",
    "--upload-pack=touch /tmp/pwned",
    "Ünïcödé façade 日本語 🚀 emoji",
    "tab\there\nnewline\r\x00nul\x1b[31mansi\x7f",
    "",
    "   ",
    "x" * 500,
    "-",
    "@",
    ".git/config",
]


@pytest.mark.parametrize("summary", HOSTILE)
def test_hostile_summaries_give_safe_valid_branch_names(summary: str) -> None:
    name = branch_name("PROJ-12", summary)
    assert is_valid_branch(name), name
    assert name.startswith("ai/PROJ-12-")
    slug = name.removeprefix("ai/PROJ-12-")
    assert slug and set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert len(slug) <= 40 and not slug.startswith("-") and not slug.endswith("-")
    assert "--" not in slug


def test_readable_slug() -> None:
    assert branch_name("PROJ-7", "Add CSV export to the Reports page!") == (
        "ai/PROJ-7-add-csv-export-to-the-reports-page"
    )
    assert branch_name("PROJ-7", "Café crème") == "ai/PROJ-7-cafe-creme"


@settings(max_examples=150, deadline=None)
@given(key=st.text(max_size=40), summary=st.text(max_size=300))
def test_any_text_gives_a_valid_ref(key: str, summary: str) -> None:
    name = branch_name(key, summary)
    assert is_valid_branch(name), name
    assert is_safe_branch(name), name
    assert name.startswith("ai/") and len(name) <= 3 + 32 + 1 + 40
    assert all(ch.isascii() and (ch.isalnum() or ch in "/-") for ch in name)


def test_token_is_passed_as_a_per_command_header_for_https_only() -> None:
    base = {"PATH": "/usr/bin", "HOME": "/home/mwai", "GH_TOKEN": "leak", "OTHER": "x"}
    env = git_environment(base, "https://github.com/acme/app.git", "ghs_secret123")
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    scheme, _, encoded = env["GIT_CONFIG_VALUE_0"].partition("Basic ")
    assert scheme == "Authorization: "
    assert base64.b64decode(encoded).decode() == "x-access-token:ghs_secret123"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    # Nothing else of the service's environment leaks into git's.
    assert "GH_TOKEN" not in env and "OTHER" not in env
    assert not any("ghs_secret123" in value for value in env.values())

    for url in ("file:///srv/origin.git", "/srv/origin.git", "http://example.com/a.git",
                "git@github.com:acme/app.git"):
        assert "GIT_CONFIG_COUNT" not in git_environment(base, url, "ghs_secret123")
    assert "GIT_CONFIG_COUNT" not in git_environment(base, "https://github.com/a/b.git", "")


def test_mirror_names_are_safe_and_distinct() -> None:
    a = mirror_name("https://github.com/acme/app.git")
    b = mirror_name("https://github.com/other/app.git")
    assert a != b and a.startswith("app-") and a.endswith(".git")
    hostile = mirror_name("https://x/../../etc/ passwd;rm -rf")
    assert "/" not in hostile and " " not in hostile and ".." not in hostile


# -- repos ----------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def sources_of(tmp_path: Path, **changes: Any) -> RepoSources:
    return RepoSources.of(make_settings(tmp_path, **changes))


def test_repos_file_maps_projects(tmp_path: Path) -> None:
    file = write(tmp_path / "repos.toml", """
[projects.APP]
repo_url = "https://github.com/acme/app.git"
base_branch = "develop"
github_repo = "acme/app"

[projects.web]
repo_url = "https://github.com/acme/web.git"
""")
    sources = sources_of(tmp_path, repos_file=file, base_branch="main")
    repos = load_repos(sources)
    assert repos["APP"] == RepoConfig("https://github.com/acme/app.git", "develop", "acme/app")
    # base_branch defaults to BASE_BRANCH, github_repo is derived from a github.com URL.
    assert repos["WEB"] == RepoConfig("https://github.com/acme/web.git", "main", "acme/web")
    assert resolve_repo(sources, "app").github_repo == "acme/app"


def test_unmapped_project_falls_back_to_the_single_repo(tmp_path: Path) -> None:
    file = write(tmp_path / "repos.toml", '[projects.APP]\nrepo_url = "/srv/app.git"\n'
                 'github_repo = "acme/app"\n')
    sources = sources_of(tmp_path, repos_file=file, repo_url="/srv/main.git",
                         gh_repo="acme/main", base_branch="trunk")
    assert resolve_repo(sources, "OTHER") == RepoConfig("/srv/main.git", "trunk", "acme/main")
    assert resolve_repo(sources, "APP").url == "/srv/app.git"


def test_no_repository_is_a_permanent_error_saying_what_to_add(tmp_path: Path) -> None:
    file = write(tmp_path / "repos.toml", '[projects.APP]\nrepo_url = "/srv/app.git"\n'
                 'github_repo = "acme/app"\n')
    sources = sources_of(tmp_path, repos_file=file, repo_url="")
    with pytest.raises(PermanentError) as caught:
        resolve_repo(sources, "NOPE")
    assert "NOPE" in str(caught.value) and "[projects.NOPE]" in str(caught.value)
    assert file in str(caught.value)
    with pytest.raises(PermanentError, match="MWAI_REPO_URL"):
        resolve_repo(sources_of(tmp_path, repo_url=""), "NOPE")


def test_single_repo_needs_an_owner_name(tmp_path: Path) -> None:
    sources = sources_of(tmp_path, repo_url="/srv/main.git", gh_repo="")
    with pytest.raises(PermanentError, match="GH_REPO"):
        resolve_repo(sources, "APP")
    derived = sources_of(tmp_path, repo_url="git@github.com:acme/tool.git", gh_repo="")
    assert resolve_repo(derived, "APP").github_repo == "acme/tool"


def test_bad_repos_files_name_file_project_and_what_is_missing(tmp_path: Path) -> None:
    file = write(tmp_path / "repos.toml", """
[projects.APP]
base_branch = "main"
github_repo = "acme/app"

[projects.WEB]
repo_url = "/srv/web.git"
github_repo = "not a repo"
repo = "typo"
""")
    with pytest.raises(ConfigError) as caught:
        load_repos(sources_of(tmp_path, repos_file=file))
    problems = caught.value.problems
    assert any(file in p and "[projects.APP]" in p and "repo_url" in p for p in problems)
    assert any("[projects.WEB]" in p and "github_repo" in p for p in problems)
    assert any("[projects.WEB]" in p and "'repo'" in p for p in problems)
    # A run on a project of a broken file fails with the file's problems.
    with pytest.raises(PermanentError, match="repo_url is missing"):
        resolve_repo(sources_of(tmp_path, repos_file=file), "APP")


@pytest.mark.parametrize("text, expected", [
    ("[projects.APP\nrepo_url=", "invalid TOML"),
    ("[other]\nx = 1\n", "no [projects.KEY] table"),
])
def test_unparsable_repos_file(tmp_path: Path, text: str, expected: str) -> None:
    file = write(tmp_path / "repos.toml", text)
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[")) as caught:
        load_repos(sources_of(tmp_path, repos_file=file))
    assert file in str(caught.value)


def test_missing_repos_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot read it") as caught:
        load_repos(sources_of(tmp_path, repos_file=missing))
    assert missing in str(caught.value)


@pytest.mark.parametrize("url", ["-uhttps://x", "ext::sh -c touch% /tmp/pwned",
                                 "https://x/\nrepo"])
def test_option_like_or_helper_urls_are_refused(tmp_path: Path, url: str) -> None:
    file = write(tmp_path / "repos.toml", f"[projects.APP]\nrepo_url = {url!r}\n"
                 'github_repo = "acme/app"\n'.replace("'", '"'))
    with pytest.raises((ConfigError, PermanentError)):
        resolve_repo(sources_of(tmp_path, repos_file=file), "APP")
    with pytest.raises(PermanentError):
        resolve_repo(sources_of(tmp_path, repo_url=url, gh_repo="acme/app"), "APP")


@pytest.mark.parametrize("base", ["--force", "a..b", "main.lock", "x y", "HEAD@{1}"])
def test_odd_base_branches_are_refused(tmp_path: Path, base: str) -> None:
    with pytest.raises(PermanentError, match="BASE_BRANCH"):
        resolve_repo(sources_of(tmp_path, repo_url="/srv/a.git", gh_repo="a/b",
                                base_branch=base), "APP")


def test_branch_names_pass_the_workspace_check() -> None:
    for summary in HOSTILE:
        assert is_safe_branch(branch_name("PROJ-1", summary))
