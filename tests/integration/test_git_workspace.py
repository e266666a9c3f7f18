"""GitWorkspace with real git against a local bare origin holding the sample project."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mwai.demo.sample_repo import git_branches, git_log, git_show, make_sample_origin
from mwai.errors import PermanentError, TransientError
from mwai.runner.git import GitWorkspace, Worktree
from mwai.runner.git_env import auth_header_value, basic_credential, branch_name
from mwai.runner.repos import RepoConfig

BRANCH = branch_name("PROJ-1", "Add a subtract function")
TOKEN = "ghs_TopSecretToken0123456789"


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_sample_origin(tmp_path / "origin.git")


@pytest.fixture
def repo(origin: Path) -> RepoConfig:
    return RepoConfig(url=str(origin), base_branch="main", github_repo="acme/sample")


def run_git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def author_of(origin: Path, ref: str) -> str:
    return run_git("log", "-1", "--format=%an <%ae>|%cn <%ce>", ref, cwd=origin).strip()


async def test_first_run_creates_the_branch_from_base_and_pushes(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=1)
    assert wt.created_branch and wt.branch == BRANCH
    assert wt.path == tmp_path / "work" / "worktrees" / "run-1"
    assert (wt.path / "sample" / "calc.py").exists()
    assert run_git("symbolic-ref", "--short", "HEAD", cwd=wt.path).strip() == BRANCH
    assert await ws.head_commit_on_remote(wt) is None

    (wt.path / "sample" / "calc.py").write_text("def subtract(a, b):\n    return a - b\n")
    (wt.path / "docs").mkdir()
    (wt.path / "docs" / "new.md").write_text("new file\n")
    message = "PROJ-2: Add subtract\n\nDone by the agent.\n\nMwai-Run: 1\n"
    sha = await ws.commit_all(wt, message)
    assert sha and len(sha) == 40
    await ws.push(wt)

    assert BRANCH in git_branches(origin)
    assert git_log(origin, BRANCH) == ["PROJ-2: Add subtract", "Initial sample project"]
    assert run_git("rev-parse", BRANCH, cwd=origin).strip() == sha
    assert author_of(origin, BRANCH) == "mwai <mwai@localhost>|mwai <mwai@localhost>"
    body = run_git("log", "-1", "--format=%B", BRANCH, cwd=origin)
    assert "Mwai-Run: 1" in body
    assert git_show(origin, BRANCH, "docs/new.md") == "new file\n"
    assert await ws.head_commit_on_remote(wt) == sha
    assert git_log(origin, "main") == ["Initial sample project"]

    await ws.remove(wt)
    assert not wt.path.exists()
    listing = run_git("worktree", "list", "--porcelain", cwd=ws.mirror_path(repo))
    assert "run-1" not in listing


async def test_second_run_reuses_the_branch_and_adds_a_commit(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    first = await ws.prepare(repo, BRANCH, run_id=1)
    (first.path / "one.txt").write_text("one\n")
    await ws.commit_all(first, "PROJ-2: first")
    await ws.push(first)
    await ws.remove(first)

    # A new workspace object, as after a restart: state comes from origin, not memory.
    ws2 = GitWorkspace(tmp_path / "work")
    second = await ws2.prepare(repo, BRANCH, run_id=2)
    assert not second.created_branch
    assert (second.path / "one.txt").read_text() == "one\n"
    (second.path / "two.txt").write_text("two\n")
    await ws2.commit_all(second, "PROJ-3: second")
    await ws2.push(second)
    assert git_log(origin, BRANCH) == ["PROJ-3: second", "PROJ-2: first",
                                       "Initial sample project"]


async def test_nothing_changed_gives_none(tmp_path: Path, repo: RepoConfig) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=5)
    assert await ws.commit_all(wt, "PROJ-2: nothing") is None
    # An ignored or reverted edit is no change either.
    calc = wt.path / "sample" / "calc.py"
    original = calc.read_text()
    calc.write_text("changed\n")
    calc.write_text(original)
    assert await ws.commit_all(wt, "PROJ-2: nothing") is None


async def test_hostile_commit_message_is_kept_verbatim_and_never_run(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=6)
    (wt.path / "x.txt").write_text("x\n")
    canary = tmp_path / "pwned"
    message = f"--amend $(touch {canary}) `touch {canary}`; touch {canary} \"'\n\n-m x"
    await ws.commit_all(wt, message)
    await ws.push(wt)
    assert run_git("log", "-1", "--format=%B", BRANCH, cwd=origin).strip() == message
    assert not canary.exists()


async def test_push_after_a_concurrent_update_rebases_once(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    seed = await ws.prepare(repo, BRANCH, run_id=1)
    (seed.path / "seed.txt").write_text("seed\n")
    await ws.commit_all(seed, "seed")
    await ws.push(seed)
    await ws.remove(seed)

    wt = await ws.prepare(repo, BRANCH, run_id=2)
    # Someone else pushes to the branch meanwhile (a human fixing something).
    other = tmp_path / "other"
    run_git("clone", "--quiet", "--branch", BRANCH, str(origin), str(other), cwd=tmp_path)
    (other / "human.txt").write_text("human\n")
    run_git("add", "human.txt", cwd=other)
    run_git("-c", "user.name=H", "-c", "user.email=h@x", "commit", "-qm", "human", cwd=other)
    run_git("push", "--quiet", "origin", BRANCH, cwd=other)

    (wt.path / "agent.txt").write_text("agent\n")
    await ws.commit_all(wt, "agent")
    await ws.push(wt)
    assert git_log(origin, BRANCH) == ["agent", "human", "seed", "Initial sample project"]

    # A conflicting concurrent change cannot be rebased: a clear error, nothing pushed.
    wt3 = await ws.prepare(repo, BRANCH, run_id=3)
    run_git("pull", "--quiet", "--ff-only", cwd=other)
    (other / "human.txt").write_text("human 3\n")
    run_git("-c", "user.name=H", "-c", "user.email=h@x", "commit", "-qam", "human 3",
            cwd=other)
    run_git("push", "--quiet", "origin", BRANCH, cwd=other)
    (wt3.path / "human.txt").write_text("agent's version\n")
    await ws.commit_all(wt3, "agent 3")
    with pytest.raises(PermanentError, match="does not rebase"):
        await ws.push(wt3)
    assert git_log(origin, BRANCH)[0] == "human 3"


async def test_missing_base_branch_is_permanent(tmp_path: Path, origin: Path) -> None:
    ws = GitWorkspace(tmp_path / "work")
    repo = RepoConfig(url=str(origin), base_branch="develop", github_repo="acme/sample")
    with pytest.raises(PermanentError, match="base branch 'develop'"):
        await ws.prepare(repo, BRANCH, run_id=1)


async def test_unreachable_remote_is_transient_and_missing_repo_permanent(
    tmp_path: Path,
) -> None:
    ws = GitWorkspace(tmp_path / "work", token=TOKEN, network_timeout_s=20)
    refused = RepoConfig(url="https://127.0.0.1:9/acme/app.git", base_branch="main",
                         github_repo="acme/app")
    with pytest.raises(TransientError) as caught:
        await ws.prepare(refused, BRANCH, run_id=1)
    assert "fetch" in str(caught.value) and TOKEN not in str(caught.value)

    missing = RepoConfig(url=str(tmp_path / "nope.git"), base_branch="main",
                         github_repo="acme/app")
    with pytest.raises(PermanentError, match="does not appear to be a git repository"):
        await ws.prepare(missing, BRANCH, run_id=2)


async def test_cleanup_stale_removes_worktrees_left_by_a_crash(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    crashed = GitWorkspace(tmp_path / "work")
    wt = await crashed.prepare(repo, BRANCH, run_id=7)
    (wt.path / "half-done.txt").write_text("partial work\n")
    locked = wt.path / "readonly"
    locked.mkdir()
    (locked / "f.txt").write_text("x")
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)  # the agent may leave read-only dirs behind
    # ... the service is killed here; a new process starts:
    fresh = GitWorkspace(tmp_path / "work")
    removed = await fresh.cleanup_stale()
    assert removed == [wt.path]
    assert not wt.path.exists()
    listing = run_git("worktree", "list", "--porcelain", cwd=fresh.mirror_path(repo))
    assert "run-7" not in listing
    # The same run (retried) and the branch are usable again.
    again = await fresh.prepare(repo, BRANCH, run_id=7)
    await fresh.remove(again)

    # git killed in the middle of a fetch leaves lock files behind; startup removes them.
    mirror = fresh.mirror_path(repo)
    (mirror / "refs" / "remotes" / "origin" / "main.lock").write_text("")
    (mirror / "packed-refs.lock").write_text("")
    human = tmp_path / "human"
    run_git("clone", "--quiet", str(origin), str(human), cwd=tmp_path)
    run_git("-c", "user.name=H", "-c", "user.email=h@x", "commit", "-q", "--allow-empty",
            "-m", "moves main", cwd=human)
    run_git("push", "--quiet", "origin", "main", cwd=human)
    with pytest.raises(PermanentError, match="lock"):
        await fresh.prepare(repo, BRANCH, run_id=8)
    await fresh.cleanup_stale()
    assert not list(mirror.rglob("*.lock"))
    again = await fresh.prepare(repo, BRANCH, run_id=7)
    assert not (again.path / "half-done.txt").exists()
    assert await fresh.cleanup_stale() == [again.path]


async def test_a_retried_run_gets_a_clean_worktree(
    tmp_path: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=9)
    (wt.path / "junk.txt").write_text("junk\n")
    again = await ws.prepare(repo, BRANCH, run_id=9)
    assert again.path == wt.path and not (again.path / "junk.txt").exists()


async def test_two_live_runs_on_one_branch_both_push(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    a = await ws.prepare(repo, BRANCH, run_id=1)
    b = await ws.prepare(repo, BRANCH, run_id=2)  # the branch is checked out by run 1
    (a.path / "a.txt").write_text("a\n")
    (b.path / "b.txt").write_text("b\n")
    await ws.commit_all(a, "run a")
    await ws.commit_all(b, "run b")
    await ws.push(a)
    await ws.push(b)
    assert git_log(origin, BRANCH) == ["run b", "run a", "Initial sample project"]


GIT_SPY = """#!{python}
import json, os, sys
env = {{k: v for k, v in os.environ.items() if k.startswith("GIT_CONFIG")}}
with open({log!r}, "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "env": env}}) + "\\n")
os.execv({git!r}, ["git", *sys.argv[1:]])
"""


async def test_token_only_in_the_environment_of_network_commands(
    tmp_path: Path, origin: Path
) -> None:
    """An https remote (rewritten to the local origin by the user's git config, so this
    runs offline) gets the token as a per-command header: never in argv, URL or config."""
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True,
                              check=True).stdout.strip()
    spy_dir = tmp_path / "bin"
    spy_dir.mkdir()
    log = tmp_path / "git-calls.jsonl"
    spy = spy_dir / "git"
    spy.write_text(GIT_SPY.format(python=sys.executable, log=str(log), git=real_git))
    spy.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    url = "https://git.example.invalid/acme/sample.git"
    (home / ".gitconfig").write_text(f'[url "{origin}"]\n\tinsteadOf = {url}\n')
    env = {"PATH": f"{spy_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(home)}
    ws = GitWorkspace(tmp_path / "work", token=TOKEN, base_env=env)
    repo = RepoConfig(url=url, base_branch="main", github_repo="acme/sample")

    wt = await ws.prepare(repo, BRANCH, run_id=1)
    (wt.path / "f.txt").write_text("f\n")
    await ws.commit_all(wt, "PROJ-2: token test")
    await ws.push(wt)
    assert git_log(origin, BRANCH)[0] == "PROJ-2: token test"

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    network = [c for c in calls if {"fetch", "push"} & set(c["argv"])]
    assert {"fetch", "push"} <= {a for c in network for a in c["argv"]}
    for call in calls:
        assert not any(TOKEN in arg for arg in call["argv"]), call["argv"]
        header = call["env"].get("GIT_CONFIG_VALUE_0", "")
        if call in network:
            assert call["env"]["GIT_CONFIG_KEY_0"] == "http.extraHeader"
            assert header.startswith("Authorization: Basic ")
        else:  # local commands never see the token
            assert header == "", call["argv"]

    mirror = ws.mirror_path(repo)
    assert run_git("config", "remote.origin.url", cwd=mirror).strip() == url
    encoded_marker = "Authorization"
    for root in (mirror, wt.path, home):
        for file in root.rglob("*"):
            if file.is_file() and file.stat().st_size < 1_000_000:
                data = file.read_bytes()
                assert TOKEN.encode() not in data, file
                if file.name == "config" or file.suffix == ".gitconfig":
                    assert encoded_marker.encode() not in data, file
                    assert b"extraheader" not in data.lower(), file


async def test_worktree_dataclass_is_what_the_flow_needs(
    tmp_path: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=3)
    assert isinstance(wt, Worktree) and wt.repo == repo and wt.start_commit


async def test_agent_that_deletes_or_repoints_its_worktree_gets_a_clear_error(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=1)
    shutil.rmtree(wt.path)
    with pytest.raises(PermanentError, match="did the agent delete"):
        await ws.commit_all(wt, "PROJ-2: gone")
    await ws.remove(wt)  # still cleans up

    # A .git file pointing at another repository (here: a repo around the work dir).
    wt2 = await ws.prepare(repo, BRANCH, run_id=2)
    other = tmp_path / "other"
    run_git("init", "--quiet", str(other), cwd=tmp_path)
    (wt2.path / ".git").write_text(f"gitdir: {other / '.git'}\n")
    (wt2.path / "x.txt").write_text("x\n")
    with pytest.raises(PermanentError, match="not to mwai's mirror"):
        await ws.commit_all(wt2, "PROJ-2: elsewhere")
    assert run_git("status", "--porcelain", cwd=other) == ""
    await ws.remove(wt2)
    assert not wt2.path.exists()


async def test_markdown_lines_survive_and_a_retry_finds_its_pushed_commit(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=12)
    (wt.path / "x.txt").write_text("x\n")
    message = "PROJ-2: Add x\n\n# Changes\n- added x\n\nMwai-Run: 12\n"
    sha = await ws.commit_all(wt, message)
    await ws.push(wt)
    assert run_git("log", "-1", "--format=%B", BRANCH, cwd=origin).strip() == message.strip()
    await ws.remove(wt)
    # The run is retried after a crash that followed the push:
    again = await ws.prepare(repo, BRANCH, run_id=12)
    assert await ws.find_commit(again, "^Mwai-Run: (12)$") == sha
    assert await ws.find_commit(again, "^Mwai-Run: (13)$") is None


async def test_a_push_refused_by_a_server_hook_says_why(
    tmp_path: Path, origin: Path, repo: RepoConfig
) -> None:
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch: ask an admin' >&2\nexit 1\n")
    hook.chmod(0o755)
    ws = GitWorkspace(tmp_path / "work")
    wt = await ws.prepare(repo, BRANCH, run_id=1)
    (wt.path / "x.txt").write_text("x\n")
    await ws.commit_all(wt, "PROJ-2: x")
    with pytest.raises(PermanentError) as caught:
        await ws.push(wt)
    assert "protected branch: ask an admin" in str(caught.value)
    assert "pre-receive hook declined" in str(caught.value)


async def test_git_messages_never_carry_the_token_nor_its_auth_header(
    tmp_path: Path, repo: RepoConfig
) -> None:
    """git echoes what it is given (here a pathspec): the token, and the credential of
    the auth header built from it, are hidden from the error, also after a renewal."""
    ws = GitWorkspace(tmp_path / "work", token="ghs_first_token_0000")
    wt = await ws.prepare(repo, BRANCH, run_id=1)
    ws.use_token(TOKEN)  # an installation token renewed while the service runs
    with pytest.raises(PermanentError) as caught:
        await ws._git(["checkout", TOKEN], wt.path)
    assert "pathspec '***' did not match" in str(caught.value)
    assert TOKEN not in str(caught.value)
    with pytest.raises(PermanentError) as caught:
        await ws._git(["checkout", auth_header_value(TOKEN)], wt.path)
    assert "pathspec 'Authorization: Basic ***' did not match" in str(caught.value)
    assert basic_credential(TOKEN) not in str(caught.value)
    result = await ws._git(["checkout", f"x{TOKEN}y"], wt.path, check=False)
    assert result.returncode != 0 and "x***y" in result.stderr and TOKEN not in result.stderr
