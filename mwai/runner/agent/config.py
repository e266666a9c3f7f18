"""What the agent needs of the settings: its command, its limits and mwai's secrets."""

from __future__ import annotations

from dataclasses import dataclass, field

from mwai.runner.verify.sandbox import SandboxConfig
from mwai.settings import SETTINGS, Settings


@dataclass(frozen=True)
class AgentConfig:
    """MWAI_AGENT_* and MWAI_PROMPT_MAX_CHARS, and the secrets the agent must never see."""

    command: str  # MWAI_AGENT_COMMAND; empty: the built-in LLM agent
    timeout_s: float  # then the agent's whole process group is killed
    max_output_bytes: int  # of stdout and of stderr each, kept for the journal
    max_change_bytes: int  # of all the built-in agent's file contents together
    prompt_max_chars: int
    pass_env: tuple[str, ...]  # MWAI_AGENT_PASS_ENV: variable names the agent may see
    # (variable name, value) of mwai's set secrets: withheld from the agent's environment
    # and scrubbed from its output; kept out of reprs and tracebacks.
    secrets: tuple[tuple[str, str], ...] = field(repr=False)
    sandbox: SandboxConfig | None = None  # None: unconfined (MWAI_SANDBOX=off)

    @classmethod
    def of(cls, settings: Settings) -> AgentConfig:
        secrets = tuple((s.name, str(getattr(settings, s.field))) for s in SETTINGS
                        if s.secret and getattr(settings, s.field))
        return cls(command=settings.agent_command, timeout_s=settings.agent_timeout_s,
                   max_output_bytes=settings.agent_max_output_bytes,
                   max_change_bytes=settings.agent_max_change_bytes,
                   prompt_max_chars=settings.prompt_max_chars,
                   pass_env=settings.agent_pass_env, secrets=secrets,
                   sandbox=SandboxConfig.of(settings))

    def secret_values(self) -> list[str]:
        """The secret values, as ``Settings.secret_values`` gives them, for scrubbing."""
        return [value for _name, value in self.secrets]
