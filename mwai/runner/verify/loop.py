"""The fix loop: the agent's change -> the checks -> the failure back to the agent.

After each change of the agent the setup commands and the checks run in the
worktree (sandboxed). When one fails, the useful end of its output goes back to
the agent with the task, up to MWAI_MAX_FIX_ATTEMPTS times. Every command run is
an event (name, command, exit code, duration, output tail) and is counted by the
metrics; the caller commits only a change whose checks passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mwai.runner.agent.output import AgentResult
from mwai.runner.agent.prompt import cut_text
from mwai.runner.repos import RepoConfig
from mwai.runner.verify.checks import CheckPlan, plan_checks, split_commands
from mwai.runner.verify.command import CheckRun, CommandLimits, run_check
from mwai.runner.verify.sandbox import Sandbox, SandboxConfig
from mwai.settings import Settings

CHECK_OUTPUT_TAIL_BYTES = 4000  # of a check's output: kept, reported, given to the agent
AgentCall = Callable[[str], Awaitable[AgentResult]]


class CheckEvents(Protocol):
    """Where the loop reports (the run's context: its events and the metrics)."""

    async def event(self, message: str, level: str = "info", **meta: Any) -> None: ...

    def count_check(self, kind: str, passed: bool) -> None: ...

    def count_fix_attempt(self) -> None: ...


@dataclass(frozen=True)
class ChecksConfig:
    """The repository's commands (or MWAI_CHECKS/MWAI_SETUP) and the loop's limits."""

    checks: tuple[str, ...] | None  # None: detect
    setup: tuple[str, ...]
    max_fix_attempts: int
    timeout_s: float
    tail_bytes: int
    checks_network: bool
    prompt_max_chars: int
    sandbox: SandboxConfig

    @classmethod
    def of(cls, settings: Settings, repo: RepoConfig) -> ChecksConfig:
        checks = repo.checks if repo.checks is not None else split_commands(settings.checks)
        setup = repo.setup if repo.setup is not None else split_commands(settings.setup)
        return cls(checks=checks, setup=setup or (),
                   max_fix_attempts=settings.max_fix_attempts,
                   timeout_s=settings.check_timeout_s,
                   tail_bytes=CHECK_OUTPUT_TAIL_BYTES,
                   checks_network=settings.checks_network,
                   prompt_max_chars=settings.prompt_max_chars,
                   sandbox=SandboxConfig.of(settings))


@dataclass
class Verification:
    """The outcome: the last agent result, every command run, and whether all passed."""

    agent: AgentResult
    agents: list[AgentResult] = field(default_factory=list)
    runs: list[CheckRun] = field(default_factory=list)
    plan: CheckPlan | None = None

    @property
    def attempts(self) -> int:
        return len(self.agents)

    @property
    def failing(self) -> CheckRun | None:
        """The failed command of the last attempt (None: the last attempt passed)."""
        last = [r for r in self.runs if r.attempt == self.attempts]
        return next((r for r in last if not r.passed), None)

    @property
    def passed(self) -> bool:
        return self.agent.exit_code == 0 and self.failing is None


def fix_prompt(task: str, failed: CheckRun, attempt: int, max_chars: int) -> str:
    """The task again, with what failed: the agent fixes its change."""
    section = (
        f"\n\n## Your change failed a check (attempt {attempt})\n"
        f"mwai ran `{failed.command}` ({failed.kind}) in the worktree after your change: "
        f"{failed.outcome}. The end of its output:\n```\n{failed.output_tail}\n```\n"
        "Fix the change so that this check passes; keep the work of the task above. "
        "Do not weaken or delete the checks.\n"
    )
    return cut_text(task, max(0, max_chars - len(section))) + section


async def run_plan(sandbox: Sandbox, plan: CheckPlan, worktree: Path, attempt: int,
                   config: ChecksConfig, secrets: Sequence[str],
                   events: CheckEvents) -> list[CheckRun]:
    """Setup then checks, stopping at the first failure; each run is an event."""
    runs: list[CheckRun] = []
    for check in (*plan.setup, *plan.checks):
        network = check.kind == "setup" or config.checks_network
        limits = CommandLimits(config.timeout_s, config.tail_bytes, network)
        done = await run_check(sandbox, check, worktree, attempt, limits, secrets)
        runs.append(done)
        events.count_check(check.kind, done.passed)
        await events.event(
            f"Check {done.name}: {done.outcome}", level="info" if done.passed else "warning",
            check=done.name, command=done.command, kind=done.kind, attempt=attempt,
            exit_code=done.exit_code, duration_s=round(done.duration_s, 3),
            output_tail=done.output_tail, stopped=done.stopped or None)
        if not done.passed:
            break
    return runs


async def verify_change(agent: AgentCall, task: str, worktree: Path, config: ChecksConfig,
                        secrets: Sequence[str], events: CheckEvents) -> Verification:
    """Run the agent, then the checks; feed a failure back up to max_fix_attempts times."""
    sandbox = Sandbox(config.sandbox)
    prompt = task
    result = await agent(prompt)
    verification = Verification(agent=result, agents=[result])
    for attempt in range(1, config.max_fix_attempts + 2):
        if result.exit_code != 0:
            return verification  # the agent's own failure: reported as before
        plan = plan_checks(worktree, config.checks, config.setup)
        verification.plan = plan
        verification.runs += await run_plan(sandbox, plan, worktree, attempt, config, secrets,
                                            events)
        failed = verification.failing
        if failed is None or attempt > config.max_fix_attempts:
            return verification
        events.count_fix_attempt()
        await events.event(f"Fix attempt {attempt} of {config.max_fix_attempts}: {failed.name} "
                           "failed, its output goes back to the agent", level="warning",
                           check=failed.name, attempt=attempt + 1)
        prompt = fix_prompt(task, failed, attempt, config.prompt_max_chars)
        result = await agent(prompt)
        verification.agent = result
        verification.agents.append(result)
    return verification
