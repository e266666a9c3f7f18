"""The known coding-agent CLIs: how mwai runs Claude Code and Codex (MWAI_AGENT=...).

mwai builds each CLI's command line itself: headless, streaming JSON output, the
model, the turn limit, the permission / sandbox mode, the model API endpoint,
the one key it needs, and the settings that stop its side traffic (updates,
telemetry, plugins). Each run gets its own HOME (outside the worktree, removed
afterwards): no state of an earlier run, of the operator, or of another agent.

Two modes (docs/agents.md says what each lets the agent do):
- confined_by_sandbox=False (no sandbox around the agent): the CLI's own safest
  working mode. Claude Code: ``--permission-mode acceptEdits`` (file edits in the
  worktree) plus ``--allowedTools Bash(<command>)`` for MWAI_AGENT_ALLOWED_COMMANDS;
  Codex: ``--sandbox workspace-write`` (writes inside the worktree only, no network).
- confined_by_sandbox=True (inside mwai's sandbox, as an unprivileged user): the
  sandbox is the boundary. Claude Code: ``--permission-mode bypassPermissions``;
  Codex: ``--dangerously-bypass-approvals-and-sandbox`` (its own sandbox cannot nest).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from mwai.errors import ConfigError, PermanentError
from mwai.runner.agent.config import AgentConfig

# The versions mwai's tests drive (tests/agents/package-lock.json): [low, high).
TESTED = {"claude-code": ((2, 1, 197), (2, 2, 0)), "codex": ((0, 171, 0), (0, 172, 0))}
PROGRAMS = {"claude-code": "claude", "codex": "codex"}
HELP_ARGS = {"claude-code": ["--help"], "codex": ["exec", "--help"]}
HELP_TIMEOUT_S = 30.0
# Claude Code: every request that is not the model call is turned off.
CLAUDE_QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # updates, telemetry, error reports...
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",  # no memory written under the run's HOME
}
# Codex features that reach hosts other than the model API (plugins, apps, updates).
CODEX_FEATURES_OFF = ("apps", "plugins", "remote_plugin", "plugin_sharing", "in_app_updates",
                      "daemon_auto_start", "browser_use", "browser_use_external",
                      "in_app_browser", "computer_use", "skill_mcp_dependency_install")
CODEX_PROVIDER = "mwai"


@dataclass(frozen=True)
class Invocation:
    """How to start one preset run: argv, the environment it adds, files of its HOME."""

    argv: list[str]
    env: dict[str, str] = field(repr=False)
    home_files: dict[str, str] = field(default_factory=dict)  # path under HOME -> text
    flags: tuple[str, ...] = ()  # the options the CLI's --help must list


def program_of(config: AgentConfig) -> str:
    """The CLI's absolute path: MWAI_AGENT_PROGRAM, or its name found on PATH."""
    name = config.program or PROGRAMS[config.kind]
    found = shutil.which(name) if os.sep not in name else (name if os.access(name, os.X_OK)
                                                           else None)
    if found is None:
        raise ConfigError([
            f"MWAI_AGENT={config.kind}: the CLI {name!r} is not found"
            + (" on PATH" if os.sep not in name else "") + "; install it (docs/agents.md) or "
            "set MWAI_AGENT_PROGRAM to its path"])
    return os.path.abspath(found)


def anthropic_base(url: str) -> str:
    """Claude Code appends /v1/messages itself: the base URL without a trailing /v1."""
    return re.sub(r"/v1/?$", "", url.rstrip("/"))


def openai_base(url: str) -> str:
    """Codex appends /responses: the base URL with its /v1."""
    url = url.rstrip("/")
    return url if re.search(r"/v1$", url) else url + "/v1"


def claude_invocation(config: AgentConfig, program: str) -> Invocation:
    key_name = "ANTHROPIC_API_KEY" if config.secret("ANTHROPIC_API_KEY") else \
        "CLAUDE_CODE_OAUTH_TOKEN"
    key = config.secret(key_name)
    if not key:
        raise PermanentError("MWAI_AGENT=claude-code needs ANTHROPIC_API_KEY or "
                             "CLAUDE_CODE_OAUTH_TOKEN (a subscription token from "
                             "`claude setup-token`); set one of them")
    argv = [program, "-p", "--output-format", "stream-json", "--verbose",
            "--no-session-persistence", "--max-turns", str(config.max_turns)]
    flags = ["--print", "--output-format", "--verbose", "--no-session-persistence",
             "--permission-mode"]
    if config.model:
        argv += ["--model", config.model]
        flags.append("--model")
    if config.confined_by_sandbox:
        argv += ["--permission-mode", "bypassPermissions"]
    else:
        argv += ["--permission-mode", "acceptEdits"]
        allowed = [rule for command in config.allowed_commands
                   for rule in (f"Bash({command})", f"Bash({command} *)")]
        if allowed:
            argv += ["--allowedTools", *allowed]
            flags.append("--allowedTools")
    env = {key_name: key, "ANTHROPIC_BASE_URL": anthropic_base(config.base_url),
           **CLAUDE_QUIET_ENV}
    # --max-turns is a hidden option of Claude Code: not in --help, so not verified there.
    return Invocation(argv, env, {}, tuple(flags))


def codex_invocation(config: AgentConfig, program: str, worktree: Path) -> Invocation:
    key = config.secret("CODEX_API_KEY")
    if not key:
        raise PermanentError("MWAI_AGENT=codex needs CODEX_API_KEY (Codex sends no "
                             "credentials with OPENAI_API_KEY); set it")
    # Not --ephemeral: the session log (in the run's HOME, removed after it) is where
    # the commands its sandbox refused show (codex.py).
    argv = [program, "exec", "--json", "--strict-config", "--color", "never",
            "--cd", str(worktree)]
    flags = ["--json", "--strict-config", "--color", "--cd"]
    if config.model:
        argv += ["--model", config.model]
        flags.append("--model")
    if config.confined_by_sandbox:
        argv.append("--dangerously-bypass-approvals-and-sandbox")
        flags.append("--dangerously-bypass-approvals-and-sandbox")
    else:
        argv += ["--sandbox", "workspace-write"]
        flags.append("--sandbox")
    argv.append("-")  # the prompt comes on stdin
    return Invocation(argv, {"CODEX_API_KEY": key},
                      {".codex/config.toml": codex_config(config)}, tuple(flags))


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def codex_config(config: AgentConfig) -> str:
    """The run's $CODEX_HOME/config.toml: the provider (the model API) and no side traffic."""
    lines = [f"model = {_toml_string(config.model)}"] if config.model else []
    lines += [
        f'model_provider = "{CODEX_PROVIDER}"',
        "check_for_update_on_startup = false",
        "", "[analytics]", "enabled = false",
        "", "[feedback]", "enabled = false",
        "", "[history]", 'persistence = "none"',
        "", "[otel]", 'exporter = "none"',
        "", "[features]", *[f"{name} = false" for name in CODEX_FEATURES_OFF],
        "", f"[model_providers.{CODEX_PROVIDER}]", 'name = "mwai model API"',
        f"base_url = {_toml_string(openai_base(config.base_url))}",
        'env_key = "CODEX_API_KEY"', 'wire_api = "responses"',
    ]
    return "\n".join(lines) + "\n"


def invocation(config: AgentConfig, worktree: Path) -> Invocation:
    """The preset's command line, environment additions and HOME files."""
    program = program_of(config)
    if config.kind == "claude-code":
        return claude_invocation(config, program)
    return codex_invocation(config, program, worktree)


# ---------------------------------------------------------------- knowing the CLI


@dataclass(frozen=True)
class CliReport:
    """What `mwai check` and the start of `mwai serve` say of the configured CLI."""

    kind: str
    program: str
    version: str  # "" when unknown
    tested: bool  # the version is in the range mwai's tests drive
    problems: tuple[str, ...]

    def line(self) -> str:
        low, high = (".".join(map(str, v)) for v in TESTED[self.kind])
        state = "tested" if self.tested else f"NOT in the tested range >={low},<{high}"
        return f"{self.kind}: {self.program} version {self.version or '?'} ({state})"


def _run(argv: list[str], home: str) -> str:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "LANG": "C.UTF-8"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HELP_TIMEOUT_S,
                          env=env, stdin=subprocess.DEVNULL, check=False)
    return done.stdout + done.stderr


def parse_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in match.groups()) if match else None


def check_cli(config: AgentConfig, home: str) -> CliReport:
    """The CLI's version, and whether its --help lists every flag the preset passes.

    ``home`` is an empty directory the CLI may write to (it is run as the agent is).
    """
    try:
        program = program_of(config)
    except ConfigError as exc:
        return CliReport(config.kind, config.program or PROGRAMS[config.kind], "", False,
                         tuple(exc.problems))
    try:
        version_text = _run([program, "--version"], home)
        help_text = _run([program, *HELP_ARGS[config.kind]], home)
    except (OSError, subprocess.SubprocessError) as exc:
        return CliReport(config.kind, program, "", False,
                         (f"MWAI_AGENT={config.kind}: cannot run {program}: {exc}",))
    version = parse_version(version_text)
    low, high = TESTED[config.kind]
    tested = version is not None and low <= version < high
    sample = _sample_invocation(config, program)
    missing = [flag for flag in sample.flags
               if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text)]
    problems: tuple[str, ...] = ()
    if missing:
        problems = (f"MWAI_AGENT={config.kind}: {program} (version "
                    f"{'.'.join(map(str, version or ())) or '?'}) does not know "
                    f"{', '.join(missing)}: install a tested version (docs/agents.md) or use "
                    "MWAI_AGENT=command with your own command line",)
    return CliReport(config.kind, program, ".".join(map(str, version or ())), tested,
                     problems)


def _sample_invocation(config: AgentConfig, program: str) -> Invocation:
    """The invocation's flags without needing the key (only the flags are looked at)."""
    sample = AgentConfig(**{**config.__dict__, "secrets": (("ANTHROPIC_API_KEY", "x"),
                                                            ("CODEX_API_KEY", "x"))})
    if config.kind == "claude-code":
        return claude_invocation(sample, program)
    return codex_invocation(sample, program, Path("."))
