"""What the agent needs of the settings: which agent, its limits and mwai's secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

from mwai.runner.verify.sandbox import SandboxConfig
from mwai.settings import SETTINGS, Settings

PRESETS = ("claude-code", "codex")


def agent_kind(settings: Settings) -> str:
    """MWAI_AGENT, or what an empty one means: 'command' when MWAI_AGENT_COMMAND is set
    (the setting's meaning before presets existed), else 'builtin'."""
    if settings.agent:
        return settings.agent
    return "command" if settings.agent_command.strip() else "builtin"


@dataclass(frozen=True)
class AgentConfig:
    """MWAI_AGENT* and MWAI_PROMPT_MAX_CHARS, and the secrets the agent must never see."""

    command: str  # MWAI_AGENT_COMMAND (kind "command")
    timeout_s: float  # then the agent's whole process tree is killed
    max_output_bytes: int  # of stdout and of stderr each, kept for the journal
    max_change_bytes: int  # of all the built-in agent's file contents together
    prompt_max_chars: int
    pass_env: tuple[str, ...]  # MWAI_AGENT_PASS_ENV: variable names the agent may see
    # (variable name, value) of mwai's set secrets: withheld from the agent's environment
    # and scrubbed from its output; kept out of reprs and tracebacks.
    secrets: tuple[tuple[str, str], ...] = field(repr=False)
    sandbox: SandboxConfig | None = None  # None: unconfined (MWAI_SANDBOX=off)
    kind: str = "command"  # claude-code | codex | builtin | command
    program: str = ""  # MWAI_AGENT_PROGRAM; empty: the preset's CLI name on PATH
    model: str = ""
    max_turns: int = 60
    base_url: str = ""  # the preset's model API (MWAI_AGENT_BASE_URL or the provider's)
    allowed_commands: tuple[str, ...] = ()
    # True when the agent runs inside the sandbox of mwai/runner/sandbox (issue 15): the
    # sandbox is then the boundary, so the CLI's own permission checks and sandbox are off
    # (Claude Code's bypassPermissions, Codex's danger-full-access). False: the CLI's own
    # safest working mode (acceptEdits + allowed commands; workspace-write).
    confined_by_sandbox: bool = False

    @classmethod
    def of(cls, settings: Settings, *, confined_by_sandbox: bool = False) -> AgentConfig:
        secrets = tuple((s.name, str(getattr(settings, s.field))) for s in SETTINGS
                        if s.secret and getattr(settings, s.field))
        kind = agent_kind(settings)
        sandbox = SandboxConfig.of(settings)
        # Inside bubblewrap the sandbox is the boundary: the CLI's own checks step aside.
        confined_by_sandbox = confined_by_sandbox or sandbox.enabled
        base_url = settings.agent_base_url or (
            settings.anthropic_base_url if kind == "claude-code" else settings.openai_base_url)
        return cls(command=settings.agent_command, timeout_s=settings.agent_timeout_s,
                   max_output_bytes=settings.agent_max_output_bytes,
                   max_change_bytes=settings.agent_max_change_bytes,
                   prompt_max_chars=settings.prompt_max_chars,
                   pass_env=settings.agent_pass_env, secrets=secrets,
                   sandbox=sandbox, kind=kind,
                   program=settings.agent_program, model=settings.agent_model,
                   max_turns=settings.agent_max_turns, base_url=base_url,
                   allowed_commands=settings.agent_allowed_commands,
                   confined_by_sandbox=confined_by_sandbox)

    def secret_values(self) -> list[str]:
        """The secret values, as ``Settings.secret_values`` gives them, for scrubbing."""
        return [value for _name, value in self.secrets]

    def secret(self, name: str) -> str:
        """The value of mwai's secret ``name``; "" when it is not set."""
        return next((value for key, value in self.secrets if key == name), "")
