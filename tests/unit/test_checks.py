"""Which checks run (configured, detected), the repos file's lists, and a missing sandbox."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mwai.cli.check import extra_problems
from mwai.errors import ConfigError, PermanentError
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.run import run_agent
from mwai.runner.flow import JiraProcessor
from mwai.runner.repos import RepoSources, load_repos
from mwai.runner.verify.checks import detect_checks, plan_checks, split_commands
from mwai.runner.verify.sandbox import Sandbox, SandboxConfig, SandboxUnavailable
from tests.conftest import make_settings


def test_split_commands_unset_none_and_list() -> None:
    assert split_commands("") is None  # detect
    assert split_commands(" none ") == ()
    assert split_commands("pytest -q;; ruff check --select E,F .;;") == (
        "pytest -q", "ruff check --select E,F .")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(("files", "expected"), [
    ({"package.json": json.dumps({"scripts": {"test": "jest", "lint": "eslint ."}})},
     ("npm run lint", "npm test")),
    ({"package.json": json.dumps({"scripts": {"test": "x", "build": "y"}}),
      "pnpm-lock.yaml": ""}, ("pnpm run build", "pnpm test")),
    ({"package.json": json.dumps({"scripts": {"test": "x"}}), "yarn.lock": ""},
     ("yarn run test",)),
    ({"pyproject.toml": "[tool.ruff]\nline-length = 100\n", "tests/test_a.py": ""},
     ("ruff check .", "python3 -m pytest -q")),
    ({"tox.ini": "[tox]\n"}, ("tox",)),
    ({"go.mod": "module x\n"}, ("go test ./...",)),
    ({"Cargo.toml": "[package]\n"}, ("cargo test",)),
    ({"Makefile": "all:\n\ttrue\ntest:\n\ttrue\n"}, ("make test",)),
    ({"Makefile": "all:\n\ttrue\n", "README.md": "x"}, ()),
])
def test_detection_of_common_stacks(tmp_path: Path, files: dict[str, str],
                                    expected: tuple[str, ...]) -> None:
    assert detect_checks(write(tmp_path, files)) == expected


def test_configured_checks_win_over_detection(tmp_path: Path) -> None:
    write(tmp_path, {"go.mod": "module x\n"})
    plan = plan_checks(tmp_path, ("make lint",), ("make deps",))
    assert [(c.command, c.kind) for c in (*plan.setup, *plan.checks)] == [
        ("make deps", "setup"), ("make lint", "check")]
    assert plan.source == "configured"
    assert plan_checks(tmp_path, (), None).checks == ()
    assert plan_checks(tmp_path, None, None).source == "detected"


def test_repos_file_checks_and_setup_lists(tmp_path: Path) -> None:
    repos = tmp_path / "repos.toml"
    repos.write_text('[projects.APP]\nrepo_url = "https://github.com/acme/app.git"\n'
                     'checks = ["npm test", "npm run lint"]\nsetup = ["npm ci"]\n'
                     '[projects.WEB]\nrepo_url = "https://github.com/acme/web.git"\n')
    loaded = load_repos(RepoSources(str(repos), "", "main", ""))
    assert loaded["APP"].checks == ("npm test", "npm run lint")
    assert loaded["APP"].setup == ("npm ci",)
    assert loaded["WEB"].checks is None and loaded["WEB"].setup is None
    repos.write_text('[projects.APP]\nrepo_url = "https://github.com/acme/app.git"\n'
                     'checks = "npm test"\n')
    with pytest.raises(ConfigError, match=r'checks must be a list of commands'):
        load_repos(RepoSources(str(repos), "", "main", ""))


async def test_a_missing_bubblewrap_refuses_the_agent_and_says_how_to_fix(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path, agent_command="/bin/true")
    config = AgentConfig.of(settings)
    assert config.sandbox is not None and config.sandbox.enabled
    missing = dataclasses.replace(config.sandbox, tool_path=str(tmp_path))
    problem = Sandbox(missing).problem()
    assert problem and "bwrap" in problem and "apt-get install bubblewrap" in problem
    worktree = tmp_path / "wt"
    worktree.mkdir()
    with pytest.raises(SandboxUnavailable, match="install bubblewrap") as caught:
        await run_agent(dataclasses.replace(config, sandbox=missing), worktree, "task", None)
    assert isinstance(caught.value, PermanentError)
    assert Sandbox(SandboxConfig.of(settings)).problem() is None  # installed here


def test_the_sandbox_hides_mwai_files_and_never_the_system(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sandbox_hide=("/etc/mwai", "/", "/usr"))
    hide = SandboxConfig.of(settings).hide
    assert str(tmp_path / "work") in hide and str(tmp_path) in hide  # work dir, db dir
    assert "/etc/mwai" in hide and "/root" in hide and "/run" in hide
    assert "/" not in hide and "/usr" not in hide


def test_mwai_check_reports_an_unconfined_agent(tmp_path: Path) -> None:
    jira = make_settings(tmp_path, processor="jira")
    assert not [w for w in extra_problems(jira)[1] if "MWAI_SANDBOX" in w]
    problems, warnings = extra_problems(dataclasses.replace(jira, sandbox="off"))
    assert any(w.startswith("MWAI_SANDBOX=off: the agent and the checks run unconfined")
               for w in warnings)
    assert not [p for p in problems if "MWAI_SANDBOX" in p]


async def test_the_service_start_warns_when_the_sandbox_is_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for mode, expected in (("off", ["MWAI_SANDBOX=off"]), ("bwrap", [])):
        caplog.clear()
        processor = JiraProcessor(make_settings(tmp_path, processor="jira", sandbox=mode))
        await processor.start()
        await processor.close()
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert [w.split(":")[0] for w in warned if "MWAI_SANDBOX" in w] == expected
