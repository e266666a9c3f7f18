"""kill -9 of `mwai serve` at random moments of whole stories, restarted each time.

The fakes (20-100 ms latency) run in their own process; people act on the tickets
whenever their turn comes, mwai up or down (their webhooks are lost while it is
down: the catch-up finds them). For a fixed set of seeds, mwai is killed at random
moments, and also while the agent runs and while a push is in flight. Every story
must finish, with nothing made twice (comment, sub-task, commit, pull request),
nothing a person did undone (the fakes record who changed what), and no process of
mwai's left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mwai.demo.sample_repo import git_log, make_sample_origin
from mwai.demo.story import DEMO_PLAN, GITHUB_REPO, demo_agent_command, sample_checks_command
from mwai.runner.planner import PLAN_MARKER
from tests.acceptance.service import Service, free_port

pytestmark = pytest.mark.slow

SEEDS = (11, 23, 47, 59, 71, 83, 97, 101, 113)
KILLS_PER_STORY = 8
STORY_DEADLINE_S = 75.0
FIGURES: dict[str, float] = {"stories": 0, "kills": 0, "during_agent": 0, "during_push": 0}


def call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def processes_under(marker: str) -> list[str]:
    """Command lines of live processes naming ``marker`` (a test's own directory)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                line = handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{name}/stat") as stat:
                zombie = stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        cwd = ""
        try:
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            pass
        if not zombie and (marker in line or cwd.startswith(marker)):
            found.append(line)
    return found


def busy_with(kind: str, work_dir: str) -> bool:
    """Whether mwai's agent runs, or a push of mwai is in flight, right now."""
    needle = "mwai.demo.agent" if kind == "agent" else "push"
    return any(needle in line for line in processes_under(work_dir))


def undone(issues: list[dict[str, Any]], ai: str) -> list[str]:
    """A person's change the AI account reverted afterwards (same field, back)."""
    found = []
    for issue in issues:
        history = issue["history"]
        for index, (author, field, before, after) in enumerate(history):
            if author == ai:
                continue
            later = [h for h in history[index + 1:] if h[1] == field]
            if later and later[0][0] == ai and later[0][3] == before:
                found.append(f"{issue['key']} {field} {before}->{after} by {author} undone")
    return found


class Story:
    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.tmp_path = tmp_path
        self.rng = random.Random(seed)
        self.port = free_port()
        self.origin = make_sample_origin(tmp_path / "origin.git")
        hook = self.origin / "hooks" / "pre-receive"  # a push takes a moment, as over a network
        hook.write_text("#!/bin/sh\nsleep 0.3\ncat >/dev/null\n")
        hook.chmod(0o755)
        ports = tmp_path / "fakes.json"
        self.fakes = subprocess.Popen(
            [sys.executable, "-m", "tests.acceptance.chaos_fakes", str(seed), str(ports),
             str(self.port)], cwd=Path(__file__).parents[2],
            stdout=open(tmp_path / "fakes.log", "wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not ports.exists() or not ports.read_text():
            assert self.fakes.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "fakes.log").read_text()
            time.sleep(0.05)
        self.info = json.loads(ports.read_text())
        self.work_dir = str(tmp_path / "work")
        self.services: list[Service] = []

    def env(self) -> dict[str, str]:
        info = self.info
        return {
            "MWAI_PROCESSOR": "jira", "MWAI_WORKERS": "2", "MWAI_LOG_FORMAT": "json",
            "MWAI_RETRY_BASE_S": "0.2", "MWAI_RETRY_MAX_S": "1", "MWAI_LEASE_S": "5",
            "MWAI_RECOVERY_INTERVAL_S": "0.5", "MWAI_HTTP_TIMEOUT_S": "3",
            "MWAI_RECONCILE_INTERVAL_S": "1", "MWAI_MAX_ATTEMPTS": "3",
            "JIRA_BASE_URL": info["jira"], "JIRA_EMAIL": info["email"],
            "JIRA_API_TOKEN": info["jira_token"], "JIRA_AI_ACCOUNT_ID": info["ai"],
            "JIRA_HUMAN_ACCOUNT_ID": info["human"], "GH_TOKEN": info["gh_token"],
            "GITHUB_API_URL": info["github"], "GH_REPO": GITHUB_REPO,
            "MWAI_REPO_URL": str(self.origin), "BASE_BRANCH": "main",
            "MWAI_WORK_DIR": self.work_dir, "ANTHROPIC_API_KEY": info["anthropic_key"],
            "ANTHROPIC_BASE_URL": info["anthropic_url"],
            "MWAI_AGENT_COMMAND": demo_agent_command(), "MWAI_AGENT_TIMEOUT_S": "60",
            # The sample's own tests (auto-detection would want pytest in python3).
            "MWAI_CHECKS": sample_checks_command(),
        }

    def start(self) -> Service:
        service = Service(self.tmp_path, name=f"serve{len(self.services)}", port=self.port,
                          **self.env())
        self.services.append(service)
        return service.start()

    def state(self) -> dict[str, Any]:
        return call(self.info["control"] + "/state")  # type: ignore[no-any-return]

    def human(self, **act: str) -> None:
        call(self.info["control"] + "/human", act)

    def people_act(self, parent: str) -> bool:
        """The reviewer's turn, whenever it comes; True once the story is over."""
        issues = {i["key"]: i for i in self.state()["issues"]}
        ai, human = self.info["ai"], self.info["human"]
        top = issues[parent]
        if top["status"] == "Done":
            return True
        if top["status"] == "Plan Review" and top["assignee"] == human:
            self.human(do="transition", key=parent, status="In Progress", to=ai)
        for issue in issues.values():
            if issue["parent"] == parent and issue["status"] == "In Testing" \
                    and issue["assignee"] == human:
                self.human(do="transition", key=issue["key"], status="Done")
        return False

    async def play(self) -> None:
        service = await asyncio.to_thread(self.start)
        parent = call(self.info["control"] + "/create", {})["key"]
        self.human(do="assign", key=parent, to=self.info["ai"])
        kills, deadline = 0, time.monotonic() + STORY_DEADLINE_S
        next_kill = time.monotonic() + self.rng.uniform(0.2, 1.2)
        targets = ["agent", "push", "any", "any", "agent", "push", "any", "any"]
        self.rng.shuffle(targets)
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.people_act, parent):
                break
            target = targets[kills] if kills < KILLS_PER_STORY else None
            hit = target is not None and time.monotonic() >= next_kill and (
                target == "any" or busy_with(target, self.work_dir))
            if hit or (target not in (None, "any") and time.monotonic() > next_kill + 5):
                service.signal(signal.SIGKILL)
                await asyncio.to_thread(service.wait)
                kills += 1
                FIGURES["kills"] += 1
                if hit and target != "any":
                    FIGURES[f"during_{target}"] += 1
                await asyncio.sleep(self.rng.uniform(0.0, 0.5))  # people may act now
                await asyncio.to_thread(self.people_act, parent)
                service = await asyncio.to_thread(self.start)
                next_kill = time.monotonic() + self.rng.uniform(0.2, 1.2)
            await asyncio.sleep(0.02)
        else:
            issues = [(i["key"], i["status"], i["assignee"]) for i in self.state()["issues"]]
            pytest.fail(f"the story did not finish in {STORY_DEADLINE_S} s: {issues}; "
                        f"logs in {self.tmp_path}")
        assert service.stop() == 0
        self.parent = parent

    def close(self) -> None:
        for service in self.services:
            if service.proc is not None and service.proc.poll() is None:
                service.proc.kill()
                service.wait()
        self.fakes.kill()
        self.fakes.wait()


@pytest.mark.parametrize("seed", SEEDS)
async def test_stories_survive_kill_9_at_random_moments(tmp_path: Path, seed: int) -> None:
    started = time.monotonic()
    story = Story(tmp_path, seed)
    try:
        await story.play()
        state = story.state()
        await_deadline = time.monotonic() + 10
        while state["pending"] and time.monotonic() < await_deadline:
            await asyncio.sleep(0.05)  # the killed requests still in the fake land
            state = story.state()
    finally:
        story.close()
    FIGURES["stories"] += 1
    parent = story.parent
    issues = {i["key"]: i for i in state["issues"]}
    subs = [i for i in issues.values() if i["parent"] == parent]
    ai = story.info["ai"]

    # Every story finishes.
    assert issues[parent]["status"] == "Done"
    assert [s["status"] for s in subs] == ["Done"] * len(DEMO_PLAN["subtasks"])
    # Nothing made twice.
    assert sorted(s["summary"] for s in subs) == sorted(
        t["summary"] for t in DEMO_PLAN["subtasks"])
    assert len(state["pulls"]) == 1
    branch = state["pulls"][0]["head"]["ref"]
    for sub in subs:
        assert len([c for c in git_log(story.origin, branch)
                    if c.startswith(f"{sub['key']}: ")]) == 1
        results = [t for a, t in sub["comments"] if a == ai and "Pull request:" in t]
        assert len(results) == 1, sub["comments"]
    for issue in [issues[parent], *subs]:
        texts = [t for a, t in issue["comments"] if a == ai]
        assert len(texts) == len(set(texts)), texts
        assert not [t for t in texts if "could not finish" in t], texts
    assert len([t for _a, t in issues[parent]["comments"] if PLAN_MARKER in t]) == 1
    # Nothing a person did undone.
    assert undone(list(issues.values()), ai) == []
    # Nothing of mwai's left running.
    assert processes_under(str(tmp_path)) == []
    print(f"\nchaos seed {seed}: {time.monotonic() - started:.1f} s; so far "
          + ", ".join(f"{name} {value:.0f}" for name, value in FIGURES.items()))
