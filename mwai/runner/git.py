"""git through asyncio subprocesses: one bare mirror per repo, one worktree per run.

Every git command is an argument list (never a shell). Ticket text reaches git
only as a commit message on stdin (``commit -F -``) and as a branch name made
by ``git_env.branch_name`` (a safe slug). The push token is given to the one command
that needs it through GIT_CONFIG_COUNT/KEY/VALUE environment variables as an
``http.extraHeader``: it never appears in a URL, an argument or a config file.
Git runs with LC_ALL=C so its messages can be recognised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mwai.errors import PermanentError, TransientError
from mwai.logs import GIT_LOGGER
from mwai.runner.git_env import JUNK_PATTERNS, basic_credential, git_environment, mirror_name
from mwai.runner.repos import RepoConfig, is_safe_branch, is_safe_url
from mwai.scrub import Scrubber

log = logging.getLogger(GIT_LOGGER)

LOCAL_TIMEOUT_S = 120.0
NETWORK_TIMEOUT_S = 600.0
STDERR_KEPT_CHARS = 2000

# Lower-case fragments of git/curl/ssh messages that mean "try again later".
_NETWORK_HINTS = (
    "could not resolve host",
    "connection refused",
    "connection timed out",
    "connection reset",
    "operation timed out",
    "timed out",
    "failed to connect",
    "network is unreachable",
    "unable to access",
    "early eof",
    "the remote end hung up",
    "rpc failed",
    "tls",
    "ssl",
    "gnutls",
    "returned error: 5",
    "returned error: 429",
    "temporary failure",
    "could not read from remote repository",
)
# These look like network trouble but retrying will not fix them.
_AUTH_HINTS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "returned error: 401",
    "returned error: 403",
    "permission denied",
    "repository not found",
)
_NOT_A_REPO_HINTS = ("does not appear to be a git repository", "not found")
_REJECTED_HINTS = ("[rejected]", "non-fast-forward", "fetch first")
# Two pushes of one branch at once: one of them loses the ref update.
_RACE_HINTS = ("cannot lock ref", "reference already exists", "stale info",
               "failed to update ref")


@dataclass
class Worktree:
    path: Path
    branch: str
    repo: RepoConfig
    created_branch: bool
    start_commit: str = ""
    mirror: Path | None = None


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


class GitWorkspace:
    """Bare mirrors under work_dir/mirrors, run worktrees under work_dir/worktrees."""

    def __init__(
        self,
        work_dir: str | Path,
        token: str = "",
        *,
        base_env: Mapping[str, str] | None = None,
        local_timeout_s: float = LOCAL_TIMEOUT_S,
        network_timeout_s: float = NETWORK_TIMEOUT_S,
    ) -> None:
        self.work_dir = Path(work_dir).absolute()
        self.mirrors_dir = self.work_dir / "mirrors"
        self.worktrees_dir = self.work_dir / "worktrees"
        self.use_token(token)
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._local_timeout_s = local_timeout_s
        self._network_timeout_s = network_timeout_s
        # One lock per mirror: concurrent fetches into one repository fight over ref locks.
        self._locks: dict[Path, asyncio.Lock] = {}

    def use_token(self, token: str) -> None:
        """Use this token from now on (a GitHub App's installation token is renewed hourly)."""
        self._token = token
        # git's messages may echo the token, as itself or inside the auth header.
        self._scrubber = Scrubber([token, basic_credential(token)] if token else [])

    # -- commands --------------------------------------------------------

    def command_environment(self, url: str = "") -> dict[str, str]:
        """The environment of a command talking to ``url`` (auth only for https)."""
        env = git_environment(self._base_env, url, self._token)
        # Never search above a worktree for a repository (e.g. a checkout around work_dir).
        env["GIT_CEILING_DIRECTORIES"] = os.pathsep.join(
            [str(self.worktrees_dir), str(self.mirrors_dir)]
        )
        return env

    async def _git(
        self,
        args: Sequence[str],
        cwd: Path,
        *,
        url: str = "",
        stdin: bytes | None = None,
        check: bool = True,
        network: bool = False,
    ) -> GitResult:
        """Run ``git <args>`` in ``cwd``; PermanentError/TransientError on failure."""
        argv = ["git", "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", *args]
        timeout_s = self._network_timeout_s if network else self._local_timeout_s
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=self.command_environment(url if network else ""),
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except (FileNotFoundError, NotADirectoryError):
            if not cwd.is_dir():
                raise PermanentError(
                    f"{cwd} does not exist any more (did the agent delete its worktree?)"
                ) from None
            raise PermanentError("git is not installed (not found on PATH)") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            # The group: git's helpers (git-remote-https, ssh) hold the pipes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            message = f"git {args[0]} timed out after {timeout_s:g} s"
            if network:
                raise TransientError(message) from None
            raise PermanentError(message) from None
        result = GitResult(
            proc.returncode or 0,
            out.decode("utf-8", "replace"),
            self._scrubber.text(err.decode("utf-8", "replace")),
        )
        if check and result.returncode != 0:
            raise self._error(args, result, network)
        return result

    def _error(self, args: Sequence[str], result: GitResult, network: bool) -> Exception:
        # push --porcelain reports each refused ref on stdout ("!<tab>ref<tab>[reason]").
        refused = [line for line in result.stdout.splitlines() if line.startswith("!")]
        detail = "\n".join([*refused, result.stderr.strip()]).strip()
        stderr = self._scrubber.text(detail)[-STDERR_KEPT_CHARS:] or "(no message)"
        message = f"git {args[0]} failed (exit {result.returncode}): {stderr}"
        lowered = stderr.lower()
        if network and any(hint in lowered for hint in _AUTH_HINTS):
            return PermanentError(
                message + "\nCheck GH_TOKEN (contents: write) and the repository URL."
            )
        if network and any(hint in lowered for hint in _NOT_A_REPO_HINTS):
            return PermanentError(message + "\nCheck the repository URL.")
        if network and any(hint in lowered for hint in _NETWORK_HINTS):
            return TransientError(message)
        return PermanentError(message)

    # -- mirror ----------------------------------------------------------

    def mirror_path(self, repo: RepoConfig) -> Path:
        return self.mirrors_dir / mirror_name(repo.url)

    def _lock(self, mirror: Path) -> asyncio.Lock:
        return self._locks.setdefault(mirror, asyncio.Lock())

    async def _ensure_mirror(self, repo: RepoConfig) -> Path:
        mirror = self.mirror_path(repo)
        if (mirror / "HEAD").exists():
            return mirror
        self.mirrors_dir.mkdir(parents=True, exist_ok=True)
        partial = mirror.with_name(mirror.name + ".partial")
        _rmtree(partial)
        partial.mkdir()
        # init + remote config instead of clone: the refs/heads of the mirror are then
        # only the run branches, and the URL stays a plain URL without credentials.
        await self._git(["init", "--quiet", "--bare"], partial)
        await self._git(["config", "remote.origin.url", repo.url], partial)
        await self._git(
            ["config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"], partial
        )
        partial.rename(mirror)
        return mirror

    async def _fetch(self, repo: RepoConfig, mirror: Path) -> None:
        await self._git(
            ["fetch", "--quiet", "--prune", "origin"], mirror, url=repo.url, network=True
        )

    async def _remote_sha(self, mirror: Path, branch: str) -> str | None:
        result = await self._git(
            ["rev-parse", "--verify", "--quiet", f"refs/remotes/origin/{branch}^{{commit}}"],
            mirror,
            check=False,
        )
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    # -- worktrees -------------------------------------------------------

    async def prepare(self, repo: RepoConfig, branch: str, run_id: int,
                      attempt: str = "") -> Worktree:
        """A fresh worktree for the run on ``branch`` (reused from origin if it exists).

        ``attempt`` names the attempt in the path: a new attempt never writes where an
        older one (or an agent it left behind) did."""
        if not is_safe_url(repo.url):
            raise PermanentError(f"refusing the repository URL {repo.url!r}: not a plain URL")
        for name in (branch, repo.base_branch):
            if not is_safe_branch(name):
                raise PermanentError(f"refusing the branch name {name!r}: not a plain name")
        mirror = self.mirror_path(repo)
        path = self.worktrees_dir / f"run-{int(run_id)}{'-' + attempt if attempt else ''}"
        async with self._lock(mirror):
            await self._ensure_mirror(repo)
            await self._fetch(repo, mirror)
            await self._drop_worktree(mirror, path)
            start = await self._remote_sha(mirror, branch)
            created = start is None
            if start is None:
                start = await self._remote_sha(mirror, repo.base_branch)
                if start is None:
                    raise PermanentError(
                        f"base branch {repo.base_branch!r} does not exist in {repo.url}: "
                        "fix base_branch (BASE_BRANCH or MWAI_REPOS_FILE)"
                    )
            self.worktrees_dir.mkdir(parents=True, exist_ok=True)
            if await self._checked_out_elsewhere(mirror, branch):
                # Another live run holds the branch; work detached, push HEAD:branch anyway.
                args = ["worktree", "add", "--quiet", "--detach", str(path), start]
            else:
                args = ["worktree", "add", "--quiet", "--no-track", "-B", branch, str(path), start]
            await self._git(args, mirror)
        return Worktree(path, branch, repo, created, start_commit=start, mirror=mirror)

    async def _checked_out_elsewhere(self, mirror: Path, branch: str) -> bool:
        listing = await self._git(["worktree", "list", "--porcelain"], mirror)
        return f"branch refs/heads/{branch}" in listing.stdout.splitlines()

    async def _drop_worktree(self, mirror: Path, path: Path) -> None:
        if path.exists():
            await self._git(["worktree", "remove", "--force", "--force", str(path)], mirror,
                            check=False)
            _rmtree(path)
        await self._git(["worktree", "prune"], mirror, check=False)

    async def commit_all(self, wt: Worktree, message: str) -> str | None:
        """Commit every change of the worktree; the new sha, or None if nothing changed.

        When the agent committed by itself, its commits count as the change.
        """
        self._check_worktree(wt)
        exclude = self.work_dir / "commit-exclude"  # hidden from the sandbox with work_dir
        exclude.write_text("\n".join(JUNK_PATTERNS) + "\n", encoding="utf-8")
        await self._git(["-c", f"core.excludesFile={exclude}", "add", "--all"], wt.path)
        staged = await self._git(["diff", "--cached", "--quiet"], wt.path, check=False)
        if staged.returncode == 0:
            head = await self.head(wt)
            return head if wt.start_commit and head != wt.start_commit else None
        if staged.returncode != 1:
            raise self._error(["diff"], staged, network=False)
        await self._git(
            ["commit", "--quiet", "--no-verify", "--cleanup=whitespace", "-F", "-"],
            wt.path,
            stdin=message.encode("utf-8"),
        )
        return await self.head(wt)

    async def changed_files(self, wt: Worktree) -> list[str]:
        """``STATUS path`` of each file the run's commits changed since it started."""
        if not wt.start_commit:
            return []
        out = await self._git(["diff", "--name-status", "--no-renames", wt.start_commit,
                               "HEAD", "--"], wt.path)
        return [" ".join(line.split("\t", 1)) for line in out.stdout.splitlines() if line]

    def _check_worktree(self, wt: Worktree) -> None:
        """Refuse to commit when the agent deleted the worktree or re-pointed its .git.

        Without this, git would look for a repository in the parent directories, or
        follow the agent's .git file into another repository.
        """
        mirror = (wt.mirror or self.mirror_path(wt.repo)).resolve()
        dot_git = wt.path / ".git"
        try:
            pointer = dot_git.read_text(encoding="utf-8").strip() if dot_git.is_file() else ""
        except (OSError, UnicodeDecodeError):
            pointer = ""
        gitdir = Path(pointer.removeprefix("gitdir:").strip()) if pointer else None
        if gitdir is None or not gitdir.is_absolute():
            raise PermanentError(
                f"the worktree {wt.path} or its .git file is gone (did the agent delete it?); "
                "nothing was committed"
            )
        if mirror / "worktrees" not in gitdir.resolve().parents:
            raise PermanentError(
                f"the .git file of {wt.path} points to {gitdir}, not to mwai's mirror (was it "
                "changed by the agent?); nothing was committed"
            )

    async def find_commit(self, wt: Worktree, message_regex: str) -> str | None:
        """Newest commit of the worktree's start commit whose message matches (git -E grep).

        Lets a retried run find the commit an earlier attempt already pushed, e.g.
        ``find_commit(wt, "^Mwai-Run: (12|13)$")``.
        """
        if not wt.start_commit:
            return None
        return await self._find_on(wt, wt.start_commit, message_regex)

    async def head(self, wt: Worktree) -> str:
        return (await self._git(["rev-parse", "HEAD"], wt.path)).stdout.strip()

    async def head_commit_on_remote(self, wt: Worktree) -> str | None:
        """sha of origin/<branch> after a fetch, or None when origin has no such branch."""
        mirror = wt.mirror or self.mirror_path(wt.repo)
        async with self._lock(mirror):
            await self._fetch(wt.repo, mirror)
            return await self._remote_sha(mirror, wt.branch)

    async def push(self, wt: Worktree, mine: str | None = None) -> str:
        """Push HEAD to origin/<branch> (fast-forward only); the commit now on origin.

        A push rejected because someone else pushed meanwhile, or that lost a race
        (ref lock, reference already exists, stale info: e.g. the push of a killed
        mwai that outlived it), fetches first: a commit on origin whose message
        matches ``mine`` (the run's trailer) is this change, pushed already. Otherwise
        HEAD is rebased onto the new origin/<branch> once and pushed again.
        """
        self._check_worktree(wt)
        result = await self._push_once(wt)
        if result.returncode == 0:
            return await self.head(wt)
        if not (_rejected(result) or _raced(result)):
            raise self._error(["push"], result, network=True)
        remote = await self.head_commit_on_remote(wt)
        if remote is not None and mine is not None:
            pushed = await self._find_on(wt, remote, mine)
            if pushed is not None:
                log.info("push of %s raced; origin has this run's commit already", wt.branch)
                return pushed
        if _raced(result) and not _rejected(result):
            # The race was lost to a push of the same commit: nothing to rebase.
            if remote == await self.head(wt):
                return remote
            raise TransientError(f"{self._error(['push'], result, network=True)} (another "
                                 "push to the branch raced this one; retry)")
        log.info("push of %s rejected (origin moved); rebasing once", wt.branch)
        await self.head_commit_on_remote(wt)
        rebase = await self._git(
            ["rebase", "--quiet", f"refs/remotes/origin/{wt.branch}"], wt.path, check=False
        )
        if rebase.returncode != 0:
            await self._git(["rebase", "--abort"], wt.path, check=False)
            raise PermanentError(
                f"push of {wt.branch} was rejected and the change does not rebase onto the "
                f"new origin/{wt.branch}: {rebase.stderr.strip()[-STDERR_KEPT_CHARS:]}"
            )
        result = await self._push_once(wt)
        if result.returncode != 0:
            error = self._error(["push"], result, network=True)
            if _rejected(result) or _raced(result):
                raise TransientError(f"{error} (origin/{wt.branch} keeps moving; retry later)")
            raise error
        return await self.head(wt)

    async def _find_on(self, wt: Worktree, start: str, message_regex: str) -> str | None:
        result = await self._git(
            ["log", "-n", "1", "--format=%H", "--extended-regexp",
             f"--grep={message_regex}", start, "--"], wt.path, check=False)
        return result.stdout.strip() or None if result.returncode == 0 else None

    async def _push_once(self, wt: Worktree) -> GitResult:
        return await self._git(
            ["push", "--porcelain", "--no-verify", "origin", f"HEAD:refs/heads/{wt.branch}"],
            wt.path,
            url=wt.repo.url,
            network=True,
            check=False,
        )

    async def remove(self, wt: Worktree) -> None:
        """Delete the run's worktree (its commits stay in the mirror and on origin)."""
        mirror = wt.mirror or self.mirror_path(wt.repo)
        if mirror.exists():
            async with self._lock(mirror):
                await self._drop_worktree(mirror, wt.path)
        else:
            _rmtree(wt.path)

    async def cleanup_stale(self) -> list[Path]:
        """Remove every worktree directory (left by a crash) and prune the mirrors.

        Also deletes the *.lock files a killed git left in the mirrors (they would
        make every later fetch fail). Call at startup, before any run prepares a
        worktree.
        """
        removed: list[Path] = []
        if self.worktrees_dir.is_dir():
            for path in sorted(self.worktrees_dir.iterdir()):
                _rmtree(path)
                removed.append(path)
        if self.mirrors_dir.is_dir():
            for mirror in sorted(self.mirrors_dir.iterdir()):
                if mirror.name.endswith(".partial"):
                    _rmtree(mirror)
                elif (mirror / "HEAD").exists():
                    _remove_stale_locks(mirror)
                    await self._git(["worktree", "prune"], mirror, check=False)
        if removed:
            log.info("removed %d stale worktree(s)", len(removed))
        return removed


def _remove_stale_locks(mirror: Path) -> None:
    for lock in mirror.rglob("*.lock"):
        if lock.is_file() and not lock.is_symlink():
            log.info("removing stale git lock %s", lock)
            lock.unlink(missing_ok=True)


def _rejected(result: GitResult) -> bool:
    """A push refused because origin has commits we lack (porcelain status on stdout)."""
    text = (result.stdout + result.stderr).lower()
    return any(hint in text for hint in _REJECTED_HINTS)


def _raced(result: GitResult) -> bool:
    """A push that lost a race with another push of the same branch."""
    text = (result.stdout + result.stderr).lower()
    return any(hint in text for hint in _RACE_HINTS)


def _rmtree(path: Path) -> None:
    """Delete a tree even when the agent left read-only files or directories in it."""

    def make_writable_and_retry(func: Any, failed: str, _exc: Any) -> None:
        # Only real directories are chmod-ed: chmod follows symlinks, which could
        # point outside the tree.
        for directory in (os.path.dirname(failed), failed):
            with contextlib.suppress(OSError):
                mode = os.lstat(directory).st_mode
                if stat.S_ISDIR(mode):
                    os.chmod(directory, mode | stat.S_IRWXU)
        with contextlib.suppress(FileNotFoundError):
            func(failed)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=make_writable_and_retry)
