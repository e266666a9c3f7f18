"""Which git repository a Jira project's tickets are worked on.

Single-repo setups use MWAI_REPO_URL / BASE_BRANCH / GH_REPO. Multi-repo setups
map Jira project keys to repositories in a TOML file (MWAI_REPOS_FILE)::

    [projects.PROJ]
    repo_url = "https://github.com/acme/app.git"
    base_branch = "main"          # optional, default BASE_BRANCH
    github_repo = "acme/app"      # optional when repo_url is a github.com URL
    checks = ["pytest -q", "ruff check ."]   # optional; default MWAI_CHECKS or detected
    setup = ["pip install -e ."]             # optional; default MWAI_SETUP

The file is read on every call so an edit takes effect without a restart.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mwai.errors import ConfigError, PermanentError
from mwai.settings import Settings

_GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_GITHUB_URL = re.compile(
    r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$"
)
_PROJECT_KEYS = {"repo_url", "base_branch", "github_repo", "checks", "setup"}
_BRANCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


def is_safe_branch(name: str) -> bool:
    """A plain branch name: no option-like start, no "..", "//", "/.", ".lock" end."""
    return bool(_BRANCH.match(name)) and not (
        ".." in name or "//" in name or "/." in name
        or name.endswith((".lock", "/", "."))
    )


def is_safe_url(url: str) -> bool:
    """A git URL that cannot be mistaken for an option or a remote-helper command."""
    return bool(url) and not url.startswith("-") and "::" not in url and not any(
        ord(ch) < 32 for ch in url
    )


@dataclass(frozen=True)
class RepoConfig:
    url: str
    base_branch: str
    github_repo: str  # owner/name
    checks: tuple[str, ...] | None = None  # None: MWAI_CHECKS, else detected
    setup: tuple[str, ...] | None = None  # None: MWAI_SETUP


def github_repo_from_url(url: str) -> str:
    """owner/name of a github.com clone URL, or "" when the URL is not one."""
    match = _GITHUB_URL.match(url.strip())
    return f"{match.group(1)}/{match.group(2)}" if match else ""


@dataclass(frozen=True)
class RepoSources:
    """Where a project's repository comes from: the MWAI_REPOS_FILE mapping, else the
    single repository (MWAI_REPO_URL, BASE_BRANCH, GH_REPO)."""

    repos_file: str  # empty: no mapping, every project uses the single repository
    repo_url: str
    base_branch: str  # also the default of a mapped project without base_branch
    gh_repo: str  # owner/name; empty: derived from a github.com repo_url

    @classmethod
    def of(cls, settings: Settings) -> RepoSources:
        return cls(repos_file=settings.repos_file, repo_url=settings.repo_url,
                   base_branch=settings.base_branch, gh_repo=settings.gh_repo)


def load_repos(sources: RepoSources) -> dict[str, RepoConfig]:
    """The project -> repository mapping of MWAI_REPOS_FILE ({} when unset).

    Raises ConfigError listing every problem of the file at once.
    """
    if not sources.repos_file:
        return {}
    path = Path(sources.repos_file)
    where = f"MWAI_REPOS_FILE {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read it ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: invalid TOML ({exc})"]) from None
    projects = data.get("projects")
    if not isinstance(projects, dict) or not projects:
        raise ConfigError([
            f"{where}: no [projects.KEY] table; add one per Jira project, e.g. "
            '[projects.PROJ] repo_url = "https://github.com/owner/name.git"'
        ])
    repos: dict[str, RepoConfig] = {}
    problems: list[str] = []
    for key, table in projects.items():
        repo = _parse_project(where, str(key), table, sources.base_branch, problems)
        if repo is not None:
            repos[str(key).upper()] = repo
    if problems:
        raise ConfigError(problems)
    return repos


def _parse_project(
    where: str, key: str, table: Any, default_base_branch: str, problems: list[str]
) -> RepoConfig | None:
    name = f"{where}: [projects.{key}]"
    if not isinstance(table, dict):
        problems.append(f"{name}: expected a table with repo_url, base_branch, github_repo")
        return None
    before = len(problems)
    for unknown in sorted(set(table) - _PROJECT_KEYS):
        problems.append(f"{name}: unknown key {unknown!r} (allowed: {sorted(_PROJECT_KEYS)})")
    url = table.get("repo_url")
    if not isinstance(url, str) or not url.strip():
        problems.append(f'{name}: repo_url is missing; add repo_url = "<git clone URL>"')
        url = ""
    elif not is_safe_url(url.strip()):
        problems.append(f"{name}: repo_url {url!r} is not a plain git URL or path")
    base = table.get("base_branch", default_base_branch)
    if not isinstance(base, str) or not is_safe_branch(base.strip()):
        problems.append(f'{name}: base_branch must be a branch name, e.g. "main" '
                        f"(got {base!r})")
        base = ""
    github = table.get("github_repo", "") or github_repo_from_url(url)
    if not isinstance(github, str) or not _GITHUB_REPO.match(github):
        problems.append(
            f'{name}: github_repo is missing or not "owner/name" (got {github!r}); '
            'add github_repo = "owner/name"'
        )
    commands = {name: _commands(name, table.get(name), problems) for name in ("checks", "setup")}
    if len(problems) > before:
        return None
    return RepoConfig(url=url.strip(), base_branch=base.strip(), github_repo=str(github),
                      checks=commands["checks"], setup=commands["setup"])


def _commands(name: str, value: Any, problems: list[str]) -> tuple[str, ...] | None:
    """A ``checks`` / ``setup`` list of shell commands (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) and c.strip() for c in value):
        problems.append(f'{name} must be a list of commands, e.g. {name} = ["make test"] '
                        f"(got {value!r})")
        return None
    return tuple(c.strip() for c in value)


def resolve_repo(sources: RepoSources, project_key: str) -> RepoConfig:
    """The repository for a Jira project: the TOML mapping, else the single repo.

    Raises PermanentError (the run fails with this message) when there is none
    or the mapping file is broken.
    """
    try:
        repos = load_repos(sources)
    except ConfigError as exc:
        raise PermanentError(str(exc)) from None
    repo = repos.get(project_key.upper())
    if repo is not None:
        return repo
    if not sources.repo_url:
        where = (
            f"add [projects.{project_key}] to MWAI_REPOS_FILE {sources.repos_file}"
            if sources.repos_file
            else "set MWAI_REPO_URL (and GH_REPO) or MWAI_REPOS_FILE"
        )
        raise PermanentError(
            f"no git repository is configured for Jira project {project_key}: {where}"
        )
    if not is_safe_url(sources.repo_url):
        raise PermanentError(f"MWAI_REPO_URL {sources.repo_url!r} is not a plain git URL or "
                             "path")
    if not is_safe_branch(sources.base_branch):
        raise PermanentError(f"BASE_BRANCH {sources.base_branch!r} is not a branch name")
    github = sources.gh_repo or github_repo_from_url(sources.repo_url)
    if not _GITHUB_REPO.match(github):
        raise PermanentError(
            f"GH_REPO is not set (or not owner/name: {github!r}) and cannot be derived from "
            f"MWAI_REPO_URL {sources.repo_url}: set GH_REPO=owner/name"
        )
    return RepoConfig(url=sources.repo_url, base_branch=sources.base_branch,
                      github_repo=github)
