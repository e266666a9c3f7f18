"""The bubblewrap sandbox of the agent and the checks: what they see and what they may do.

The agent follows ticket text anyone with Jira access can write, and the checks
run code it just wrote, so both run confined (MWAI_SANDBOX=bwrap, the default):

- the root filesystem read-only; the worktree read-write; a private /tmp and an
  empty HOME; mwai's database directory, work directory (other runs' worktrees),
  env file directory (MWAI_SANDBOX_HIDE), the service's HOME, /root, /home and
  /run replaced by empty directories; only the Python runtime mwai itself uses and
  the repository's git objects (read-only) are shown again on top;
- a new PID namespace (no signal reaches mwai or another run, /proc shows only the
  sandbox), IPC and UTS namespaces, ``--die-with-parent`` and a new session;
- when mwai runs as root, the command runs as an unprivileged uid (setpriv, no
  capabilities, no new privileges) and the worktree is handed to that uid for the
  time of the command;
- limits (prlimit): address space, processes, CPU time, file size;
- the network only when asked (the agent must reach its model API; the checks run
  with ``--unshare-net``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import mwai
from mwai.errors import PermanentError
from mwai.logs import AGENT_LOGGER
from mwai.settings import Settings

log = logging.getLogger(AGENT_LOGGER)

SANDBOX_MODES = ("bwrap", "off")
SANDBOX_HOME = "/home/sandbox"
# Never hidden: an empty directory over these would leave nothing to run.
_NEVER_HIDDEN = {"/", "/usr", "/bin", "/lib", "/lib64", "/etc", "/sbin", "/proc", "/dev"}
_ALWAYS_HIDDEN = ("/root", "/home", "/run")
PROBE_TIMEOUT_S = 10.0
NOBODY_UID = 65534  # the sandboxed commands' uid (and gid) when mwai runs as root
FILE_MAX_BYTES = 1 << 30  # largest file a sandboxed process may write (RLIMIT_FSIZE)
FIX_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) and allow user "
            "namespaces (sysctl kernel.unprivileged_userns_clone=1) when mwai does not run as "
            "root; or set MWAI_SANDBOX=off to run the agent unconfined (not recommended)")


class SandboxUnavailable(PermanentError):
    """MWAI_SANDBOX=bwrap but bubblewrap is missing or cannot start: no agent runs."""


@dataclass(frozen=True)
class Limits:
    """What one confined command may use (prlimit); 0 leaves a limit unset."""

    memory_bytes: int  # address space (RLIMIT_AS)
    max_processes: int  # of the sandbox's uid (RLIMIT_NPROC)
    cpu_s: int  # CPU time (RLIMIT_CPU)
    file_bytes: int  # largest file written (RLIMIT_FSIZE)

    def prlimit_args(self) -> list[str]:
        pairs = [("--as", self.memory_bytes), ("--nproc", self.max_processes),
                 ("--cpu", self.cpu_s), ("--fsize", self.file_bytes)]
        return [f"{flag}={value}" for flag, value in pairs if value > 0]


@dataclass(frozen=True)
class SandboxConfig:
    """MWAI_SANDBOX and its limits, and the host paths the sandbox must not show."""

    mode: str  # bwrap | off
    hide: tuple[str, ...]
    limits: Limits
    uid: int  # the uid of the confined processes when mwai runs as root
    max_output_bytes: int  # a command printing more is stopped
    tool_path: str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"  # bwrap, prlimit, setpriv

    @classmethod
    def of(cls, settings: Settings) -> SandboxConfig:
        private = [settings.work_dir, os.path.dirname(os.path.abspath(settings.db))
                   if "://" not in settings.db else "",
                   os.path.dirname(settings.gh_app_private_key_file)
                   if settings.gh_app_private_key_file else "",
                   os.path.expanduser("~"), *settings.sandbox_hide]
        hide = tuple(dict.fromkeys(os.path.abspath(p) for p in [*_ALWAYS_HIDDEN, *private]
                                   if p and os.path.abspath(p) not in _NEVER_HIDDEN))
        limits = Limits(memory_bytes=settings.sandbox_memory_bytes,
                        max_processes=settings.sandbox_max_processes,
                        cpu_s=settings.sandbox_cpu_s, file_bytes=FILE_MAX_BYTES)
        return cls(mode=settings.sandbox, hide=hide, limits=limits, uid=NOBODY_UID,
                   max_output_bytes=settings.sandbox_max_output_bytes)

    @property
    def enabled(self) -> bool:
        return self.mode == "bwrap"

    @property
    def drops_root(self) -> bool:
        return self.enabled and os.geteuid() == 0


def runtime_paths() -> list[str]:
    """What a Python agent (``python -m mwai.demo.agent``) needs: mwai's own runtime."""
    package_dir = os.path.dirname(os.path.abspath(mwai.__file__))
    executable = os.path.realpath(sys.executable)
    return list(dict.fromkeys([sys.base_prefix, sys.prefix, os.path.dirname(executable),
                               package_dir]))


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def git_dirs(worktree: Path) -> list[str]:
    """The repository (mirror) a worktree's .git file points to, shown read-only."""
    try:
        pointer = (worktree / ".git").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return []
    gitdir = Path(pointer.removeprefix("gitdir:").strip())
    if not gitdir.is_absolute():
        return []
    common = gitdir / "commondir"
    try:
        mirror = (gitdir / common.read_text(encoding="utf-8").strip()).resolve()
    except (OSError, UnicodeDecodeError):
        return [str(gitdir)]
    return [str(mirror)]


# Probe results by configuration: bwrap is tried once per process, not per command.
_PROBED: dict[SandboxConfig, str] = {}


class Sandbox:
    """Builds the confined command lines of one configuration."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._tools: dict[str, str] | None = None

    def tools(self) -> dict[str, str]:
        """Absolute paths of bwrap, prlimit and setpriv; SandboxUnavailable when missing."""
        if self._tools is None:
            found = {name: shutil.which(name, path=self.config.tool_path)
                     for name in ("bwrap", "prlimit", "setpriv")}
            missing = sorted(name for name, path in found.items() if not path)
            if missing:
                raise SandboxUnavailable(
                    f"MWAI_SANDBOX=bwrap but {', '.join(missing)} is not installed: {FIX_HINT}")
            self._tools = {name: str(path) for name, path in found.items()}
        return self._tools

    def wrap(self, argv: Sequence[str], *, cwd: Path, network: bool,
             readable: Sequence[Path] = (), writable: Sequence[Path] = ()) -> list[str]:
        """``argv`` confined: ``cwd`` and ``writable`` writable, ``readable`` read-only,
        the rest as above."""
        if not self.config.enabled:
            return list(argv)
        tools = self.tools()
        workdir = os.path.abspath(cwd)
        args = [tools["bwrap"], "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--perms", "1777", "--tmpfs", "/tmp"]
        hidden = [p for p in self.config.hide if os.path.isdir(p)]
        empty = [*hidden, "/tmp"]  # directories that start empty in the sandbox
        for path in hidden:
            args += ["--tmpfs", path]
        wanted = [*runtime_paths(), *git_dirs(cwd), *(str(p) for p in readable)]
        if argv and os.path.isabs(argv[0]):
            wanted.append(argv[0])
        # Shown again: what lies in an emptied directory (symlinks by their target).
        shown = [path for path in dict.fromkeys(os.path.realpath(p) for p in wanted)
                 if os.path.exists(path) and not _inside(path, workdir)
                 and any(_inside(path, base) for base in empty)]
        for path in shown:
            args += _parents(path, empty) + ["--ro-bind", path, path]
        for path in hidden:  # a private directory inside a shown one stays hidden
            if any(_inside(path, s) and path != s for s in shown):
                args += ["--tmpfs", path]
        for path in [workdir, *(os.path.abspath(p) for p in writable)]:
            args += _parents(path, empty) + ["--bind", path, path]
        args += ["--perms", "0777", "--dir", SANDBOX_HOME, "--chdir", workdir,
                 "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--die-with-parent", "--new-session"]
        if not network:
            args.append("--unshare-net")
        if os.geteuid() != 0:
            args.append("--unshare-user")
        args += ["--", tools["prlimit"], *self.config.limits.prlimit_args(), "--"]
        if self.config.drops_root:
            uid = str(self.config.uid)
            args += [tools["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        return args + list(argv)

    def environment(self, env: dict[str, str]) -> dict[str, str]:
        """The confined command's environment: an empty HOME and the private /tmp."""
        if not self.config.enabled:
            return dict(env)
        inner = {**env, "HOME": SANDBOX_HOME, "TMPDIR": "/tmp"}
        if self.config.drops_root:  # the repository belongs to root: let git read it
            inner.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
                          "GIT_CONFIG_VALUE_0": "*"})
        return inner

    def hand_over(self, *paths: Path) -> None:
        """Give ``paths`` to the sandbox's uid (when mwai is root; else nothing to do)."""
        if self.config.drops_root:
            for path in paths:
                _chown_tree(path, self.config.uid)

    def take_back(self, *paths: Path) -> None:
        """Give ``paths`` back to mwai (symlinks are not followed)."""
        if self.config.drops_root:
            for path in paths:
                _chown_tree(path, os.geteuid(), os.getegid())

    @asynccontextmanager
    async def lend(self, *paths: Path) -> AsyncIterator[None]:
        """``paths`` belong to the sandbox's uid for the time of a command (root only).

        In a thread: a worktree with node_modules holds many files.
        """
        await asyncio.to_thread(self.hand_over, *paths)
        try:
            yield
        finally:
            await asyncio.to_thread(self.take_back, *paths)

    def problem(self) -> str | None:
        """Why confined commands cannot start here (None: they can); probed once."""
        if not self.config.enabled:
            return None
        if self.config not in _PROBED:
            _PROBED[self.config] = self._probe()
        return _PROBED[self.config] or None

    def _probe(self) -> str:
        try:
            argv = self.wrap(["/bin/true"], cwd=Path("/tmp"), network=False)
        except SandboxUnavailable as exc:
            return str(exc)
        try:
            done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT_S,
                                  env=self.environment({"PATH": "/usr/bin:/bin"}), check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap cannot start ({exc}): {FIX_HINT}"
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip()[-300:]
            return f"bubblewrap cannot start ({why or f'exit {done.returncode}'}): {FIX_HINT}"
        return ""

    def announce(self) -> None:
        """At service start: a WARNING when unconfined, an ERROR when bwrap cannot start."""
        if not self.config.enabled:
            log.warning("MWAI_SANDBOX=off: the agent and the checks run unconfined, with "
                        "mwai's user and view of its files")
        elif problem := self.problem():
            log.error("No agent will run: %s", problem)

    def require(self) -> None:
        """Raise SandboxUnavailable (saying how to fix it) when bwrap cannot start."""
        problem = self.problem()
        if problem:
            raise SandboxUnavailable(problem)


def _parents(path: str, hidden: Sequence[str]) -> list[str]:
    """Readable (0755) directories leading to ``path`` inside a hidden (empty) directory.

    bubblewrap would create them 0700 owned by root: an unprivileged uid could not
    walk through them to what is shown.
    """
    args: list[str] = []
    for base in hidden:
        if _inside(path, base) and path != base:
            parts = Path(os.path.relpath(os.path.dirname(path), base)).parts
            current = base
            for part in parts:
                if part in (".", ""):
                    continue
                current = os.path.join(current, part)
                args += ["--perms", "0755", "--dir", current]
    return args


def _chown_tree(root: Path, uid: int, gid: int | None = None) -> None:
    group = uid if gid is None else gid
    if not root.exists():
        return
    os.lchown(root, uid, group)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            try:
                os.lchown(os.path.join(dirpath, name), uid, group)
            except FileNotFoundError:
                continue
