"""Prometheus metrics, served at ``GET /metrics``.

Each app gets its own ``CollectorRegistry`` (not the process-global one), so
tests and several apps in one process never share counters. Labels are kept
low-cardinality: outcome, action, service, HTTP status - never an issue key or
a run id. Queue gauges are read from the database at scrape time, so they are
right even for runs queued by another process (``mwai enqueue``).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

from mwai import __version__
from mwai.errors import StoreError
from mwai.logs import METRICS_LOGGER
from mwai.model import ClaimedRun, EnqueueResult
from mwai.queue.pool import WorkerPool
from mwai.queue.store import Store

log = logging.getLogger(METRICS_LOGGER)

# The classic text format that generate_latest() writes, understood by every scraper.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NO_ACTION = "none"
WEBHOOK_PATH = "/webhook/jira"
DURATION_BUCKETS_S = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
# What runs report (RunContext.add_usage) that is summed into counters.
_SUMMED = ("cost_usd", "input_tokens", "output_tokens")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    """The service's metrics; also the ``RunObserver`` the worker pool reports to."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.info = Gauge("mwai_info", "Always 1; the version label names the running mwai.",
                          ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.webhooks = Counter(
            "mwai_webhooks_received", "Webhooks answered, by outcome (queued, coalesced, "
            "deduplicated, rejected, unavailable, error) and HTTP status.",
            ["outcome", "status"], registry=r)
        self.enqueued = Counter("mwai_runs_enqueued", "New runs queued by this process, by "
                                "source (webhook, followup).", ["source"], registry=r)
        self.claimed = Counter("mwai_runs_claimed", "Run attempts started.", ["action"],
                               registry=r)
        self.completed = Counter("mwai_runs_completed", "Runs completed.", ["action"],
                                 registry=r)
        self.failed = Counter("mwai_runs_failed", "Runs failed for good.", ["action"],
                              registry=r)
        self.retried = Counter("mwai_runs_retried", "Run attempts that ended in a transient "
                               "error and were re-queued with backoff.", ["action"], registry=r)
        self.cancelled = Counter("mwai_runs_cancelled", "Runs cancelled by an operator while "
                                 "running.", ["action"], registry=r)
        self.released = Counter("mwai_runs_released", "Running runs put back to queued at "
                                "shutdown (no attempt spent).", ["action"], registry=r)
        self.duration = Histogram("mwai_run_duration_seconds", "Duration of one run attempt.",
                                  ["action"], buckets=DURATION_BUCKETS_S, registry=r)
        self.queue_wait = Histogram("mwai_run_queue_wait_seconds", "Time a run waited in the "
                                    "queue after it became due, until a worker claimed it.",
                                    buckets=WAIT_BUCKETS_S, registry=r)
        self.queue_depth = Gauge("mwai_queue_depth", "Queued runs (database, at scrape time).",
                                 registry=r)
        self.running = Gauge("mwai_runs_running", "Running runs of all processes (database, "
                             "at scrape time).", registry=r)
        self.stuck = Gauge("mwai_runs_stuck", "Running runs not updated for "
                           "MWAI_STUCK_AFTER_S.", registry=r)
        self.oldest_queued_age = Gauge("mwai_oldest_queued_age_seconds", "Age of the oldest "
                                       "queued run (0 when the queue is empty).", registry=r)
        self.database_up = Gauge("mwai_database_up", "1 if the database answered the scrape's "
                                 "queries, else 0.", registry=r)
        self.workers_total = Gauge("mwai_workers_total", "Configured workers.", registry=r)
        self.workers_alive = Gauge("mwai_workers_alive", "Worker coroutines alive.",
                                   registry=r)
        self.workers_busy = Gauge("mwai_workers_busy", "Workers processing a run.", registry=r)
        self.api_calls = Counter("mwai_api_calls", "Requests to remote services (one per "
                                 "attempt), by service and HTTP status ('error': timeout or "
                                 "connection error).", ["service", "status"], registry=r)
        self.agent_cost = Counter("mwai_agent_cost_usd", "LLM and agent cost reported by runs, "
                                  "in US dollars.", ["action"], registry=r)
        self.agent_tokens = Counter("mwai_agent_tokens", "LLM tokens reported by runs.",
                                    ["action", "kind"], registry=r)
        self.checks_run = Counter("mwai_checks", "Check and setup commands run after the "
                                  "agent's changes, by kind (check, setup) and outcome (passed, "
                                  "failed).", ["kind", "outcome"], registry=r)
        self.fix_attempts = Counter("mwai_fix_attempts", "Times a failed check's output went "
                                    "back to the agent (the fix loop).", registry=r)
        self.last_success = Gauge("mwai_last_success_timestamp_seconds", "Unix time of the "
                                  "last completed run (0: none since start).", registry=r)
        self._actions: dict[int, str] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # Shown from the start (0), before the first webhook is queued.
        self._child(self.enqueued, "webhook")
        self._recorded: dict[int, dict[str, float]] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """The labelled child, kept: every webhook and run passes here, and
        ``labels()`` takes a lock and builds a key on every call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -------------------------------------------------------- RunObserver hooks

    def _action(self, run: ClaimedRun) -> str:
        return self._actions.get(run.id) or run.action or NO_ACTION

    def run_claimed(self, run: ClaimedRun) -> None:
        self._child(self.claimed, self._action(run)).inc()
        self.queue_wait.observe(max(0.0, run.claimed_at - run.available_at))

    def run_recorded(self, run: ClaimedRun, fields: Mapping[str, Any]) -> None:
        action = fields.get("action")
        if action:
            self._actions[run.id] = str(action)
        action = self._action(run)
        # Values reported are the attempt's totals so far (RunContext.add_usage; the run row
        # holds the sum of its attempts): count what is new since the last report.
        seen = self._recorded.setdefault(run.id, {})
        for name in _SUMMED:
            value = fields.get(name)
            if not isinstance(value, int | float) or value <= seen.get(name, 0.0):
                continue
            delta = float(value) - seen.get(name, 0.0)
            seen[name] = float(value)
            if name == "cost_usd":
                self.agent_cost.labels(action).inc(delta)
            else:
                self.agent_tokens.labels(action, name.removesuffix("_tokens")).inc(delta)

    def check_finished(self, kind: str, passed: bool) -> None:
        self.checks_run.labels(kind, "passed" if passed else "failed").inc()

    def fix_attempted(self) -> None:
        self.fix_attempts.inc()

    def run_enqueued(self, result: EnqueueResult, source: str) -> None:
        if not result.deduplicated and not result.coalesced:
            self._child(self.enqueued, source).inc()

    def run_finished(self, run: ClaimedRun, outcome: str, duration_s: float) -> None:
        action = self._action(run)
        self._actions.pop(run.id, None)
        self._recorded.pop(run.id, None)
        counter = {"completed": self.completed, "failed": self.failed,
                   "retried": self.retried, "cancelled": self.cancelled,
                   "released": self.released}.get(outcome)
        if counter is not None:
            self._child(counter, action).inc()
        self._child(self.duration, action).observe(duration_s)
        if outcome == "completed":
            self.last_success.set(time.time())

    # ------------------------------------------------------------ other inputs

    def api_call(self, service: str, status: str) -> None:
        """``mwai.clients.http.CallObserver``: one remote request attempt."""
        self.api_calls.labels(service, status).inc()

    def webhook(self, outcome: str, status: int) -> None:
        """An answered webhook; a queued one is also a run enqueued by a webhook."""
        self._child(self.webhooks, outcome, str(status)).inc()
        if outcome == "queued":
            self._child(self.enqueued, "webhook").inc()

    def bind_pool(self, pool: WorkerPool) -> None:
        self.workers_total.set_function(lambda: pool.size)
        self.workers_alive.set_function(lambda: pool.alive)
        self.workers_busy.set_function(lambda: pool.busy)

    async def refresh(self, store: Store, stuck_after_s: float) -> None:
        """Read the queue gauges from the database (called at scrape time)."""
        try:
            counts = await store.health_counts(stuck_after_s)
        except StoreError as exc:
            log.warning("Metrics: database unavailable", extra={"error": str(exc)})
            self.database_up.set(0)
            return
        self.database_up.set(1)
        self.queue_depth.set(counts.queued)
        self.running.set(counts.running)
        self.stuck.set(counts.stuck)
        oldest = counts.oldest_queued_at
        self.oldest_queued_age.set(max(0.0, time.time() - oldest) if oldest else 0.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


METRICS_KEY = web.AppKey("metrics", Metrics)
# Set by the webhook handler: queued | coalesced | deduplicated.
WEBHOOK_OUTCOME_KEY = web.RequestKey("webhook_outcome", str)


def webhook_outcome(request: web.Request, status: int) -> str:
    """What became of a webhook, from the handler's note or the HTTP status."""
    noted = request.get(WEBHOOK_OUTCOME_KEY)
    if isinstance(noted, str):
        return noted
    if status == 503:
        return "unavailable"
    return "error" if status >= 500 else "rejected"


def count_webhook(request: web.Request, status: int) -> None:
    """Count an answer of POST /webhook/jira (called with the final, JSON-error status)."""
    if request.path != WEBHOOK_PATH:
        return
    request.app[METRICS_KEY].webhook(webhook_outcome(request, status), status)


def metrics_handler(token: str, refresh: Callable[[web.Application], Awaitable[None]]
                    ) -> Handler:
    """GET /metrics; with a token, only ``Authorization: Bearer <token>`` gets in."""
    expected = f"Bearer {token}".encode()

    async def handle(request: web.Request) -> web.StreamResponse:
        if token:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise web.HTTPUnauthorized(
                    reason="GET /metrics needs 'Authorization: Bearer <MWAI_METRICS_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"})
        await refresh(request.app)
        return web.Response(body=request.app[METRICS_KEY].exposition(),
                            headers={"Content-Type": CONTENT_TYPE})

    return handle
