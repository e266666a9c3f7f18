"""Catching up on missed webhooks: a periodic JQL search queues what a lost one would have.

Jira Automation fires a webhook once and forgets it: one sent while mwai was down
(a restart, a crash, a network cut) is gone, and the story it was for stalls. Every
MWAI_RECONCILE_INTERVAL_S (and once at start) this loop asks Jira for the tickets
mwai could act on (assigned to the AI account, or Done: a finished sub-task) that
changed since its last pass, decides each one with the same rules as a run
(``mwai.runner.router.route``), and queues a run for those with something to do
that changed after the issue's latest run began. The run itself re-reads Jira and
decides again; the queue coalesces with a run already queued for the issue. The
time of the last pass is kept in the database (kv), so a restart looks back as far
as the service was down.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
from collections.abc import Callable

from mwai.clients.jira import JiraClient
from mwai.errors import MwaiError
from mwai.logs import WORKERS_LOGGER
from mwai.model import Issue
from mwai.queue.clock import now_s
from mwai.queue.store import Store
from mwai.queue.writes import dumps
from mwai.runner.router import Action, RoutingRules, route
from mwai.settings import Settings

log = logging.getLogger(WORKERS_LOGGER)

LAST_PASS_KEY = "reconcile.last_pass_s"
# Each pass overlaps the previous one by this much: JQL's "updated" has minute
# precision, and Jira's clock is not mwai's.
OVERLAP_S = 120.0
FIRST_LOOKBACK_S = 86_400.0  # a database that never reconciled looks back one day
EVENT_TYPE = "mwai:reconcile"


def jira_time_s(text: str) -> float | None:
    """Jira's timestamp (2026-12-05T07:15:30.123+0000) as epoch seconds; None if unreadable."""
    for layout in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.datetime.strptime(text, layout).timestamp()
        except ValueError:
            continue
    return None


def reconcile_jql(ai_account_id: str, status_done: str, minutes: int) -> str:
    """Tickets mwai may act on that changed in the last ``minutes``, oldest change first."""
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (f"(assignee = {quoted(ai_account_id)} OR status = {quoted(status_done)}) "
            f'AND updated >= "-{max(1, minutes)}m" ORDER BY updated ASC')


class Reconciler:
    """One pass now and then: search, decide, queue the missed."""

    def __init__(self, settings: Settings, store: Store, jira: JiraClient,
                 notify: Callable[[int], None]) -> None:
        self.settings = settings
        self.store = store
        self.jira = jira
        self.notify = notify
        self.rules = RoutingRules.of(settings)
        self.passes = 0  # completed passes: tests wait for one instead of sleeping

    async def run_forever(self) -> None:
        interval_s = self.settings.reconcile_interval_s
        while True:
            try:
                await self.pass_once()
            except MwaiError as exc:  # Jira or the database is down: the next pass catches up
                log.warning("Reconciliation pass failed; the next one catches up", extra={
                    "error": str(exc), "next_in_s": interval_s})
            await asyncio.sleep(interval_s)

    async def pass_once(self) -> list[str]:
        """Queue a run for every ticket a lost webhook left waiting; their keys."""
        started_s = now_s()
        last = await self.store.kv_get(LAST_PASS_KEY)
        since_s = float(last[0]) if last else started_s - FIRST_LOOKBACK_S
        minutes = math.ceil((started_s - since_s + OVERLAP_S) / 60)
        jql = reconcile_jql(self.settings.jira_ai_account_id, self.settings.jira_status_done,
                            minutes)
        queued: list[str] = []
        found = await self.jira.search(jql) if self.settings.jira_ai_account_id else []
        for issue in found:
            decision = route(issue, self.rules)
            if decision.action is Action.NOOP or not await self._missed(issue):
                continue
            payload = dumps({"event_type": EVENT_TYPE, "issue_key": issue.key,
                             "source": "reconcile", "reason": decision.reason})
            await self.store.enqueue(issue.key, payload, source="reconcile",
                                     event_type=EVENT_TYPE)
            queued.append(issue.key)
        if queued:
            self.notify(len(queued))
        await self.store.kv_set(LAST_PASS_KEY, repr(started_s))
        self.passes += 1
        log.info("Reconciliation pass", extra={"found": len(found), "queued": queued,
                                               "looked_back_min": minutes})
        return queued

    async def _missed(self, issue: Issue) -> bool:
        """Whether the issue changed after its latest run began (or it never had one)."""
        latest = await self.store.runs_of_issue(issue.key, None, 0.0, 1)
        if not latest:
            return True
        run = latest[0]
        if run.status == "queued":
            return False  # that run reads Jira when it starts: it sees the change
        updated_s = jira_time_s(issue.updated)
        return updated_s is None or run.started_at is None or updated_s > run.started_at
