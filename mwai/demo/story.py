"""``mwai demo``: the whole AI Runner story, offline, in under a minute.

Starts in-process fakes of Jira Cloud, GitHub and the LLM API on 127.0.0.1, a
local bare git repository with a sample project as ``origin``, and mwai itself
(the real app, workers, SQLite database and git) with the built-in demo agent as
``MWAI_AGENT_COMMAND``. Then it plays the story a team would live through:

    parent ticket assigned to AI -> plan comment -> the human approves ->
    two sub-tasks executed -> one PR with two commits -> the human marks the
    sub-tasks Done -> parent Done

printing a timeline from the events table and the fake Jira as it goes. Exit 0
only if the whole story completed. ``mwai demo --serve`` (also ``mwai serve
--demo``) keeps the fakes and mwai up for someone to post the spec's curl request.

``DemoStack`` is also what the end-to-end tests run against.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from mwai.demo.fakes.github import FakeGitHub
from mwai.demo.fakes.jira import FakeJira
from mwai.demo.fakes.llm import FakeLlm
from mwai.demo.sample_repo import git_log, make_sample_origin
from mwai.errors import MwaiError
from mwai.queue.processor import Processor
from mwai.queue.store import Store
from mwai.runner.verify.sandbox import Sandbox, SandboxConfig
from mwai.server.app import STORE_KEY, create_app
from mwai.settings import Settings

GITHUB_REPO = "acme/app"
DEMO_PROJECT = "DEMO"
STORY_TIMEOUT_S = 50.0

DEMO_PLAN: dict[str, Any] = {
    "overview": "Greet users by name: add a greet() helper to the sample package and "
                "document it in the README.",
    "assumptions": ["The greeting is in English.", "No new dependency is needed."],
    "risks": ["Callers may pass an empty name; greet() must still return a sentence."],
    "acceptance_criteria": ["greet('Ada') returns 'Hello, Ada!'",
                            "The README shows how to call greet()."],
    "subtasks": [
        {"summary": "Add a greet() helper",
         "description": "Add greet(name) to sample/calc.py returning 'Hello, <name>!', "
                        "with a unit test."},
        {"summary": "Document greet() in the README",
         "description": "Add a short usage example of greet() to README.md."},
    ],
    "questions": [],
}


def plan_script(plan: dict[str, Any]) -> Callable[[dict[str, Any]], str]:
    """A FakeLlm script answering every request with ``plan`` as JSON."""
    text = orjson.dumps(plan, option=orjson.OPT_INDENT_2).decode()
    return lambda _request: text


def demo_agent_command(mode: str | None = None) -> str:
    command = [sys.executable, "-m", "mwai.demo.agent"]
    if mode:
        command += ["--mode", mode]
    return shlex.join(command)


def sample_checks_command() -> str:
    """The sample repository's tests (mwai.demo.sample_tests: no pytest needed)."""
    return shlex.join([sys.executable, "-m", "mwai.demo.sample_tests"])


class DemoStack:
    """Fakes + sample origin + mwai's app on 127.0.0.1, under one directory."""

    def __init__(self, root: Path, *, plan: dict[str, Any] | None = None,
                 listen_port: int = 0, github_repos: tuple[str, ...] = (GITHUB_REPO,),
                 llm_script: Callable[[dict[str, Any]], str] | None = None,
                 data_center: bool = False, **settings_changes: Any) -> None:
        self.root = Path(root)
        self.plan = plan or DEMO_PLAN
        self.listen_port = listen_port
        self.settings_changes = settings_changes
        self.secret = secrets.token_urlsafe(24)
        # Data Center: REST v2, a personal access token, and users named by username.
        self.jira = FakeJira(webhook_secret=self.secret, data_center=data_center,
                             ai_account_id="ai-runner" if data_center else "ai-account",
                             human_account_id="jsmith" if data_center else "human-account")
        self.github = FakeGitHub(github_repos, token="demo-" + secrets.token_hex(8))
        self.llm = FakeLlm(llm_script or plan_script(self.plan),
                           anthropic_key="demo-" + secrets.token_hex(8))
        self.origin = self.root / "origin.git"
        self.settings: Settings | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def db_path(self) -> Path:
        return self.root / "mwai.sqlite3"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self) -> Store:
        assert self.runner is not None
        return self.runner.app[STORE_KEY]

    def make_settings(self) -> Settings:
        base = Settings.defaults(
            jira_webhook_secret=self.secret,
            db=str(self.db_path),
            listen=f"127.0.0.1:{self.listen_port or 8088}",
            processor="jira",
            workers=2,
            log_format="text",
            poll_s=0.5,
            heartbeat_s=1.0,
            lease_s=30.0,
            recovery_interval_s=5.0,
            retry_base_s=0.2,
            retry_max_s=2.0,
            shutdown_grace_s=5.0,
            **self.jira.settings_changes(),
            gh_token=self.github.token,
            github_api_url=self.github.api_url,
            gh_repo=GITHUB_REPO,
            repo_url=str(self.origin),
            base_branch="main",
            work_dir=str(self.root / "work"),
            llm_provider="anthropic",
            anthropic_api_key=self.llm.anthropic_key,
            anthropic_base_url=self.llm.anthropic_base_url,
            openai_api_key=self.llm.openai_key,
            openai_base_url=self.llm.openai_base_url,
            agent_command=demo_agent_command(),
            agent_timeout_s=60.0,
            checks=sample_checks_command(),
            http_retries=2,
        )
        return dataclasses.replace(base, **self.settings_changes)

    async def start(self, make_processor: Callable[[Settings], Processor] | None = None
                    ) -> DemoStack:
        """Start everything; ``make_processor`` replaces MWAI_PROCESSOR's (tests)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.origin.exists():
            make_sample_origin(self.origin)
        await self.jira.start()
        await self.github.start()
        await self.llm.start()
        self.settings = self.make_settings()
        processor = make_processor(self.settings) if make_processor else None
        self.runner = web.AppRunner(create_app(self.settings, processor), access_log=None,
                                    handle_signals=False, shutdown_timeout=2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.listen_port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        self.jira.webhook_url = f"{self.url}/webhook/jira"
        return self

    async def stop(self) -> None:
        await self.jira.wait_webhooks(timeout_s=2.0)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.jira.stop()
        await self.github.stop()
        await self.llm.stop()

    async def __aenter__(self) -> DemoStack:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def idle(self) -> bool:
        """No webhook in flight, no run queued or running."""
        await self.jira.wait_webhooks(timeout_s=2.0)
        counts = await self.store.health_counts(3600)
        return counts.queued == 0 and counts.running == 0

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float,
                       on_tick: Callable[[], Any] | None = None) -> bool:
        """Wait until ``condition()`` holds and mwai is idle; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if on_tick is not None:
                await on_tick()
            if condition() and await self.idle():
                if on_tick is not None:
                    await on_tick()
                return True
            await asyncio.sleep(0.1)
        return False


# ------------------------------------------------------------------ timeline


class Timeline:
    """Prints new events rows (and narration) as they appear."""

    SKIPPED = {"Run claimed", "Webhook received", "Run enqueued",
               "Duplicate trigger coalesced into queued run"}
    SHOWN_META = ("reason", "key", "issue_key", "status", "comment_id", "commit", "pr_url",
                  "queued_run_id", "waiting", "error", "duplicates", "attempt")
    FAILED_CHECK_LINES = 10  # of a failed check's output, as the agent gets it

    def __init__(self, stack: DemoStack, write: Callable[[str], None]) -> None:
        self.stack = stack
        self.write = write
        self.after_id = 0
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.write(f"\n{self._clock()}  == {text}")

    def _clock(self) -> str:
        return f"{time.monotonic() - self.started:6.2f}s"

    async def poll(self) -> None:
        rows = await self.stack.store.events_since(self.after_id, limit=500)
        for row in rows:
            self.after_id = row.id
            message = row.message
            if message in self.SKIPPED:
                continue
            meta = orjson.loads(row.meta_json or "{}")
            details = ", ".join(f"{name}={_short(meta[name])}" for name in self.SHOWN_META
                                if isinstance(meta, dict) and meta.get(name) not in (None, ""))
            line = f"{self._clock()}  run {row.run_id:<3} {row.issue_key:<9} {message}"
            self.write(line + (f"  ({details})" if details else ""))
            if isinstance(meta, dict) and meta.get("exit_code") and meta.get("output_tail"):
                tail = str(meta["output_tail"]).strip().splitlines()[-self.FAILED_CHECK_LINES:]
                self.write(_indent("\n".join(tail), 12))


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------ the story


class StoryFailed(MwaiError):
    """The demo story stopped short: the message says where."""


async def play_story(stack: DemoStack, write: Callable[[str], None],
                     timeout_s: float = STORY_TIMEOUT_S) -> dict[str, Any]:
    """Play the demo story; return what it produced. StoryFailed says where it stopped."""
    jira, settings = stack.jira, stack.settings
    assert settings is not None
    timeline = Timeline(stack, write)
    deadline = time.monotonic() + timeout_s

    async def expect(what: str, condition: Callable[[], bool]) -> None:
        left = max(0.1, deadline - time.monotonic())
        if not await stack.wait_for(condition, left, timeline.poll):
            raise StoryFailed(f"timed out waiting for: {what}")

    parent = jira.create_issue(project=DEMO_PROJECT, summary="Greet users by name",
                               description="Users want the sample app to greet them by name.")
    timeline.say(f"A product owner files {parent} and assigns it to the AI Runner account")
    jira.human_assign(parent, jira.ai_account_id)
    await expect(f"{parent} in {settings.jira_status_plan_review}",
                 lambda: jira.issue(parent).status == settings.jira_status_plan_review)
    plan_comment = jira.comments_of(parent)[-1]
    readable = plan_comment.split("```")[0].split("[mwai-plan")[0].strip()
    write("\n" + _indent(readable, 12))

    timeline.say(f"The human approves the plan: {parent} -> "
                 f"{settings.jira_status_in_progress}, assigned to AI")
    jira.human_transition(parent, settings.jira_status_in_progress,
                          assignee=jira.ai_account_id)
    want = len(stack.plan["subtasks"])
    await expect(f"{want} sub-tasks of {parent} in {settings.jira_status_in_testing}",
                 lambda: len(jira.subtasks_of(parent)) == want and all(
                     s.status == settings.jira_status_in_testing
                     for s in jira.subtasks_of(parent)))

    for sub in jira.subtasks_of(parent):
        timeline.say(f"The human reviews {sub.key} and moves it to {settings.jira_status_done}")
        jira.human_transition(sub.key, settings.jira_status_done)
    await expect(f"{parent} in {settings.jira_status_done}",
                 lambda: jira.issue(parent).status == settings.jira_status_done)
    return await summarize(stack, parent)


async def summarize(stack: DemoStack, parent: str) -> dict[str, Any]:
    """What the story produced; StoryFailed if any part of it is missing."""
    failed = await stack.store.failed_runs_since(since=0, limit=5)
    if failed:
        raise StoryFailed("run(s) failed: " + "; ".join(
            f"run {row.id} ({row.issue_key}): {row.last_error}" for row in failed))
    pulls = stack.github.pulls(GITHUB_REPO)
    if len(pulls) != 1:
        raise StoryFailed(f"expected one pull request, found {len(pulls)}")
    pr = pulls[0]
    branch = str(pr["head"]["ref"])
    commits = git_log(stack.origin, branch)
    subtasks = [s.key for s in stack.jira.subtasks_of(parent)]
    mwai_commits = [c for c in commits if c.split(":")[0] in subtasks]
    if len(mwai_commits) != len(subtasks):
        raise StoryFailed(f"expected {len(subtasks)} commits on {branch}, found "
                          f"{len(mwai_commits)}: {mwai_commits}")
    if pr.get("draft"):
        raise StoryFailed(f"pull request {pr['html_url']} is still a draft")
    checks = str(pr.get("body") or "").partition("\nChecks (")
    fixed = [f"{key}: {line}" for key in subtasks for c in stack.jira.comments_of(key)
             for line in c.splitlines() if line.startswith("Checks (")]
    return {"checks": ("Checks (" + checks[2]).strip() if checks[1] else "(none)",
            "fix_loop": fixed, "parent": parent, "subtasks": subtasks, "pr_url": pr["html_url"],
            "branch": branch, "commits": commits, "db": str(stack.db_path)}


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def demo_sandbox(write: Callable[[str], None], config: SandboxConfig | None = None) -> str:
    """MWAI_SANDBOX for the demo: bwrap where it can start; else off, said plainly (the
    demo's agent and checks are mwai's own scripts, not a model's work)."""
    problem = Sandbox(config or SandboxConfig.of(Settings.defaults())).problem()
    if problem is None:
        return "bwrap"
    write(f"note: the sandbox cannot start here ({problem}); the demo runs its own agent "
          "without it (MWAI_SANDBOX=off). A real service refuses to run agents so.")
    return "off"


async def run_demo(root: Path, write: Callable[[str], None], timeout_s: float) -> int:
    write(f"mwai demo: fakes of Jira, GitHub and the LLM on 127.0.0.1; work in {root}")
    try:
        # The demo agent's first change breaks the sample's tests; the fix loop mends it.
        async with DemoStack(root, agent_command=demo_agent_command("buggy"),
                             sandbox=demo_sandbox(write)) as stack:
            write(f"mwai is listening on {stack.url} (database {stack.db_path})")
            try:
                result = await play_story(stack, write, timeout_s)
            except StoryFailed as exc:
                write(f"\nDEMO FAILED: {exc}")
                write(f"The database is {stack.db_path}: `mwai runs --db {stack.db_path}` "
                      "shows what happened.")
                return 1
    except Exception as exc:
        write(f"\nDEMO FAILED: {type(exc).__name__}: {exc}")
        return 1
    write("\n== The story completed")
    write("Checks of each sub-task (from its Jira comment):")
    for line in result["fix_loop"]:
        write(f"    {line}")
    write(f"Pull request: {result['pr_url']} (ready for review); its checks:")
    write(_indent(result["checks"], 4))
    write(f"Branch {result['branch']} in {root / 'origin.git'}:")
    for subject in result["commits"]:
        write(f"    {subject}")
    write(f"Database: {result['db']}  (try: mwai runs --db {result['db']})")
    return 0


async def serve_demo(root: Path, port: int, write: Callable[[str], None]) -> int:
    """Keep the fakes and mwai up until Ctrl-C, for a hand-made curl request."""
    async with DemoStack(root, listen_port=port, sandbox=demo_sandbox(write)) as stack:
        jira = stack.jira
        jira.create_issue("TEST-123", summary="Add a greeting",
                          description="The sample app should greet users by name.",
                          assignee=jira.ai_account_id)
        timeline = Timeline(stack, write)
        payload = {"event_type": "issue_assigned", "issue_key": "TEST-123",
                   "issue_type": "Story", "status": "Backlog",
                   "assignee_account_id": jira.ai_account_id}
        write(f"mwai demo server on {stack.url}; fake Jira {jira.url}, fake GitHub "
              f"{stack.github.url}, database {stack.db_path}")
        write("TEST-123 is waiting in Backlog, assigned to AI. Post the spec's request:\n")
        write(f"curl -X POST {stack.url}/webhook/jira \\\n"
              "  -H \"Content-Type: application/json\" \\\n"
              f"  -H \"X-Moveware-Webhook-Secret: {stack.secret}\" \\\n"
              f"  -d '{orjson.dumps(payload).decode()}'\n")
        write(f"Watch it in the dashboard: {stack.url}/dashboard/")
        write("Ctrl-C stops everything. Timeline:")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        while not stop.is_set():
            await timeline.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.3)
    return 0
