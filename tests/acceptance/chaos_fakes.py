"""Fake Jira, GitHub and LLM with 20-100 ms latency, in their own process (chaos test).

python chaos_fakes.py SEED PORTS-FILE MWAI-PORT

Writes the fakes' addresses to PORTS-FILE, then serves until killed. A small control
server lets the test act as the people of the story (POST /human) and read what the
fakes hold, with who changed what (GET /state).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from mwai.demo.fakes.github import FakeGitHub
from mwai.demo.fakes.jira import FakeJira
from mwai.demo.fakes.llm import FakeLlm
from mwai.demo.story import DEMO_PLAN, GITHUB_REPO, plan_script
from tests.conftest import SECRET

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def latency(rng: random.Random) -> Any:
    @web.middleware
    async def slow(request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(rng.uniform(0.02, 0.1))
        return await handler(request)
    return slow


class SlowJira(FakeJira):
    rng = random.Random(0)

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.insert(0, latency(self.rng))
        return app


class SlowGitHub(FakeGitHub):
    rng = random.Random(0)

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.insert(0, latency(self.rng))
        return app


def state(jira: FakeJira, github: FakeGitHub, llm: FakeLlm) -> dict[str, Any]:
    return {
        "issues": [{
            "key": issue.key, "summary": issue.summary, "status": issue.status,
            "assignee": issue.assignee_account_id, "parent": issue.parent_key,
            "history": [[h.author_account_id, h.field, h.before, h.after]
                        for h in issue.history],
            "comments": [[c.author_account_id, text] for c, text in zip(
                issue.comments, jira.comments_of(issue.key), strict=True)],
        } for issue in jira.issues.values()],
        "pulls": github.pulls(GITHUB_REPO),
        "llm_requests": len(llm.requests),
        "pending": sum(1 for r in jira.requests if not r.status),
    }


async def main(seed: int, ports_file: Path, mwai_port: int) -> None:
    SlowJira.rng = random.Random(seed)
    SlowGitHub.rng = random.Random(seed + 1)
    jira = SlowJira(webhook_url=f"http://127.0.0.1:{mwai_port}/webhook/jira",
                    webhook_secret=SECRET)
    github = SlowGitHub((GITHUB_REPO,))
    llm = FakeLlm(plan_script(DEMO_PLAN))
    await jira.start()
    await github.start()
    await llm.start()

    async def human(request: web.Request) -> web.Response:
        act = await request.json()
        if act["do"] == "assign":
            jira.human_assign(act["key"], act["to"])
        else:
            jira.human_transition(act["key"], act["status"], **(
                {"assignee": act["to"]} if "to" in act else {}))
        return web.json_response({"ok": True})

    async def create(request: web.Request) -> web.Response:
        return web.json_response({"key": jira.create_issue(
            project="DEMO", summary="Greet users by name")})

    async def read(request: web.Request) -> web.Response:
        return web.json_response(state(jira, github, llm))

    control = web.Application()
    control.router.add_post("/human", human)
    control.router.add_post("/create", create)
    control.router.add_get("/state", read)
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ports_file.write_text(json.dumps({
        "control": f"http://127.0.0.1:{port}", "jira": jira.url, "email": jira.email,
        "jira_token": jira.api_token, "ai": jira.ai_account_id, "human": jira.human_account_id,
        "gh_token": github.token, "github": github.api_url,
        "anthropic_key": llm.anthropic_key, "anthropic_url": llm.anthropic_base_url}))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])))
