"""The journal of a run: which side effects are done, so a retry never repeats one.

Every completed side effect (a comment, a sub-task, a push, a pull request, a
transition) is an events row whose meta holds ``step`` and the result. A retried
attempt of the run reads those rows first and skips what is done. A run released
by a crash or a shutdown may be folded into the issue's queued run (the store
journals "Took over a released run"): the journals of such runs count as one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from mwai.clients.llm import LlmReply
from mwai.queue.processor import RunContext
from mwai.runner.router import Action

TOOK_OVER = "Took over a released run"  # the store's event when a run absorbs another


def run_marker(run_id: int) -> str:
    """Printed in every comment of a run: a later attempt recognises its own comment."""
    return f"[mwai run {run_id}]"


@dataclass
class Usage:
    """Cost and tokens spent by a run (LLM plan calls and the agent), when known."""

    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None

    def add(self, cost_usd: float | None, input_tokens: int | None,
            output_tokens: int | None) -> None:
        if cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost_usd
        if input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + input_tokens
        if output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + output_tokens

    def add_replies(self, replies: list[LlmReply]) -> None:
        for reply in replies:
            self.add(reply.cost_usd, reply.input_tokens, reply.output_tokens)


@dataclass
class RunJournal:
    """One attempt of a run: its context, its journal of done steps, the step being done."""

    ctx: RunContext
    done: dict[str, dict[str, Any]]
    step: str = "read the issue"
    usage: Usage = field(default_factory=Usage)
    action: Action | None = None
    # This run and the runs it took over (a run released by a crash or shutdown is
    # folded into the queued run): their journals count as this run's.
    ids: list[int] = field(default_factory=list)
    earlier_action: str | None = None

    @classmethod
    async def load(cls, ctx: RunContext) -> RunJournal:
        journals: list[list[tuple[str, dict[str, Any]]]] = []
        pending, seen = [ctx.run.id], set()
        while pending:
            run_id = pending.pop()
            if run_id in seen:
                continue
            seen.add(run_id)
            rows = []
            for row in await ctx.store.events(run_id):
                meta = orjson.loads(row["meta_json"] or "{}")
                meta = meta if isinstance(meta, dict) else {}
                rows.append((str(row["message"]), meta))
                if row["message"] == TOOK_OVER and isinstance(meta.get("from_run_id"), int):
                    pending.append(meta["from_run_id"])
            journals.append(rows)
        done: dict[str, dict[str, Any]] = {}
        earlier_action = None
        for rows in reversed(journals):  # the oldest run first: newer results win
            for message, meta in rows:
                if isinstance(meta.get("step"), str):
                    done[meta["step"]] = meta
                if message.startswith("Action: ") and isinstance(meta.get("action"), str):
                    earlier_action = meta["action"]
        return cls(ctx, done, ids=sorted(seen), earlier_action=earlier_action)

    def marked(self, text: str) -> bool:
        """Whether ``text`` carries the marker of this run (or of a run it took over)."""
        return any(run_marker(run_id) in text for run_id in self.ids)

    @property
    def id(self) -> int:
        return self.ctx.run.id

    def result(self, step: str) -> dict[str, Any] | None:
        return self.done.get(step)

    async def journal(self, step: str, message: str, **result: Any) -> dict[str, Any]:
        meta = {"step": step, **result}
        await self.ctx.event(message, **meta)
        self.done[step] = meta
        return meta

    async def once(self, step: str, message: str,
                   action: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any]:
        """Do ``action`` unless an earlier attempt of this run journaled ``step``."""
        previous = self.done.get(step)
        if previous is not None:
            return previous
        self.step = step
        return await self.journal(step, message, **(await action() or {}))
