"""The journal of a run: which side effects are done, so a retry never repeats one.

Every completed side effect (a comment, a sub-task, a push, a pull request, a
transition) is an events row whose meta holds ``step`` and the result. A retried
attempt of the run reads those rows first and skips what is done. Before a side
effect that could be made twice (a comment, a sub-task), an ``intent`` row is
written: a resumed attempt that finds the intent without its result knows the
request may have landed (or may still land: it was in flight when mwai died), so it
waits out the request's timeout and looks for the result in Jira before repeating. A run released
by a crash or a shutdown may be folded into the issue's queued run (the store
journals "Took over a released run"): the journals of such runs count as one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from mwai.clients.llm import LlmReply
from mwai.model import StatusChange
from mwai.queue.clock import now_s
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
    # The newest Jira history entry the earlier attempt had seen when it decided: any
    # later change by someone else is a person acting since (see flow's resume guard).
    earlier_history_seen: int | None = None
    # step -> when an earlier attempt announced it (an intent without a result).
    intents: dict[str, float] = field(default_factory=dict)
    # How long a request sent by a killed attempt may still land (MWAI_HTTP_TIMEOUT_S).
    in_flight_s: float = 0.0

    @classmethod
    async def load(cls, ctx: RunContext) -> RunJournal:
        journals: list[list[tuple[str, dict[str, Any], float]]] = []
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
                rows.append((str(row["message"]), meta, float(row["ts"])))
                if row["message"] == TOOK_OVER and isinstance(meta.get("from_run_id"), int):
                    pending.append(meta["from_run_id"])
            journals.append(rows)
        done: dict[str, dict[str, Any]] = {}
        intents: dict[str, float] = {}
        earlier_action, history_seen = None, None
        for rows in reversed(journals):  # the oldest run first: newer results win
            for message, meta, ts in rows:
                if isinstance(meta.get("step"), str):
                    done[meta["step"]] = meta
                if isinstance(meta.get("intent"), str):
                    intents[meta["intent"]] = ts
                if message.startswith("Action: ") and isinstance(meta.get("action"), str):
                    earlier_action = meta["action"]
                    seen_id = meta.get("history_seen")
                    history_seen = seen_id if isinstance(seen_id, int) else None
        return cls(ctx, done, ids=sorted(seen), earlier_action=earlier_action,
                   earlier_history_seen=history_seen,
                   intents={k: v for k, v in intents.items() if k not in done})

    def marked(self, text: str) -> bool:
        """Whether ``text`` carries the marker of this run (or of a run it took over)."""
        return any(run_marker(run_id) in text for run_id in self.ids)

    def people_since(self, changes: list[StatusChange], ai_account_id: str) -> list[str]:
        """Who else (not the AI account) changed the issue's status or assignee after the
        earlier attempt decided; empty when nobody did (or the journal predates this)."""
        seen = self.earlier_history_seen
        return sorted({c.author_account_id or "anonymous" for c in changes
                       if seen is not None and c.history_id > seen
                       and c.author_account_id != ai_account_id})

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
                   action: Callable[[], Awaitable[dict[str, Any] | None]],
                   find: Callable[[], Awaitable[dict[str, Any] | None]] | None = None
                   ) -> dict[str, Any]:
        """Do ``action`` unless an earlier attempt of this run journaled ``step``.

        With ``find`` (how to look for the effect in the remote system), the intent is
        journaled first; when an earlier attempt left an intent without a result,
        ``find`` runs once that attempt's request can no longer land, and what it finds
        counts as done.
        """
        previous = self.done.get(step)
        if previous is not None:
            return previous
        self.step = step
        if find is not None:
            if await self.settle_in_flight(step):
                found = await find()
                if found is not None:
                    return await self.journal(step, f"{message} (found after a restart)",
                                              **{**found, "found": True})
            await self.ctx.event(f"Intent: {step}", intent=step)
        return await self.journal(step, message, **(await action() or {}))

    async def settle_in_flight(self, step: str) -> bool:
        """Whether an earlier attempt announced ``step`` without a result; if so, wait
        until its request, if it was still in flight, has landed or timed out."""
        announced_s = self.intents.get(step)
        if announced_s is None:
            return False
        wait_s = announced_s + self.in_flight_s - now_s()
        if wait_s > 0:
            await self.ctx.event("Waiting for a request of the killed attempt to land",
                                 intent_of=step, wait_s=round(wait_s, 3))
            await asyncio.sleep(wait_s)
        return True
