"""The processing hook: what a worker calls for each claimed run.

A processor gets a ``RunContext`` (the run, a journal, a way to queue follow-up
runs) and either returns (the run completes), raises ``TransientError`` (the run
is retried later), or raises anything else (the run fails with that message).
``MWAI_PROCESSOR`` picks one: ``noop`` here, ``jira`` in ``mwai.runner.flow``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from mwai.logs import RUN_LOGGER, bind
from mwai.model import ClaimedRun, EnqueueResult, Event
from mwai.queue.clock import now_s
from mwai.queue.store import Store

log = logging.getLogger(RUN_LOGGER)


class RunObserver(Protocol):
    """What the worker pool and its runs report (mwai.server.metrics.Metrics implements it)."""

    def run_claimed(self, run: ClaimedRun) -> None: ...

    def run_recorded(self, run: ClaimedRun, fields: Mapping[str, Any]) -> None: ...

    def run_enqueued(self, result: EnqueueResult, source: str) -> None: ...

    def run_finished(self, run: ClaimedRun, outcome: str, duration_s: float) -> None: ...

    def check_finished(self, kind: str, passed: bool) -> None: ...

    def fix_attempted(self) -> None: ...


@dataclass
class RunContext:
    run: ClaimedRun
    store: Store
    notify: Callable[[int], None]
    observer: RunObserver | None = None

    @property
    def worker(self) -> str:
        return self.run.worker

    notes: list[Event] = field(default_factory=list)
    # What this attempt added to the run's cost and tokens (add_usage).
    attempt_usage: dict[str, float] = field(default_factory=dict)

    async def event(self, message: str, level: str = "info", **meta: Any) -> None:
        """Journal a step: an events row (on disk on return) and a log line.

        Use it for every completed side effect: a retried run trusts it.
        """
        pending, self.notes = self.notes, []
        await self.store.add_events([*pending, Event(self.run.id, message, level, meta,
                                                     now_s())])
        log.log(
            getattr(logging, level.upper(), logging.INFO),
            message,
            extra={"event": message, "meta": meta} if meta else {"event": message},
        )

    def note(self, message: str, level: str = "info", **meta: Any) -> None:
        """Journal a step that needs no durability of its own: the events row is
        written with the run's next write (at the latest its completion)."""
        self.notes.append(Event(self.run.id, message, level, meta, now_s()))
        log.debug(message, extra={"event": message, "meta": meta} if meta else
                  {"event": message})

    def take_notes(self) -> list[Event]:
        pending, self.notes = self.notes, []
        return pending

    def count_check(self, kind: str, passed: bool) -> None:
        """A check (or setup) command of this run finished (the metrics count it)."""
        if self.observer is not None:
            self.observer.check_finished(kind, passed)

    def count_fix_attempt(self) -> None:
        """A failed check's output went back to the agent (the metrics count it)."""
        if self.observer is not None:
            self.observer.fix_attempted()

    async def record(self, **fields: Any) -> None:
        """Record what the run produced on the run row (action, branch, pr_url); what it
        spent goes through ``add_usage``."""
        await self.store.set_run_result(self.run.id, **fields)
        if fields.get("action"):
            # The rest of the run's log lines (and its Sentry events) name the action.
            bind(action=fields["action"])
        if self.observer is not None:
            self.observer.run_recorded(self.run, fields)

    async def add_usage(self, cost_usd: float | None, input_tokens: int | None,
                        output_tokens: int | None) -> None:
        """Add what this attempt spent to the run's totals: a retried run costs the sum
        of its attempts. The observer is told this attempt's totals so far (it counts
        what is new since its last report of the attempt)."""
        await self.store.add_run_usage(self.run.id, cost_usd, input_tokens, output_tokens)
        spent = self.attempt_usage
        for name, value in (("cost_usd", cost_usd), ("input_tokens", input_tokens),
                            ("output_tokens", output_tokens)):
            if value is not None:
                spent[name] = spent.get(name, 0) + value
        if self.observer is not None:
            self.observer.run_recorded(self.run, dict(spent))

    async def enqueue(self, issue_key: str, payload_json: str, event_type: str) -> EnqueueResult:
        """Queue a follow-up run (e.g. the next sub-task) and wake a worker for it."""
        result = await self.store.enqueue(
            issue_key, payload_json, request_id=self.run.request_id, source="mwai",
            event_type=event_type,
        )
        self.notify(1)
        if self.observer is not None:
            self.observer.run_enqueued(result, "followup")
        return result


class Processor(Protocol):
    async def process(self, ctx: RunContext) -> None: ...

    async def close(self) -> None: ...


class NoopProcessor:
    """Completes every run at once: smoke tests, benchmarks, dry runs of a setup."""

    async def process(self, ctx: RunContext) -> None:
        ctx.note("Processed (noop processor)", action="noop")

    async def close(self) -> None:
        return None
