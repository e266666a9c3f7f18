"""What each page shows: its parameters (parsed from the URL, checked) and the data
read for them from the store. The pages (pages.py) and the live updates (live.py)
both build a view from here, so a live fragment is the page's own content.

A view's parameters are a frozen value: the live hub renders each distinct view
once per change, however many people watch it.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from typing import Any

from multidict import MultiMapping

from mwai.errors import ConfigError, RunNotFound
from mwai.model import STATUSES, RunRow
from mwai.runner.repos import RepoSources, load_repos
from mwai.server.dashboard import charts
from mwai.server.dashboard.format import meta
from mwai.server.dashboard.state import Deps
from mwai.server.webhook import ISSUE_KEY_RE

PAGE_SIZE = 50
ACTIVE_LIMIT = 50
STUCK_LIMIT = 20
ISSUE_SEARCH_LIMIT = 20
EVENTS_LIMIT = 2000
NO_BOUND = 1e18
# The charts are per day: reading them on every live render would cost the busy
# service a long index range (a day of runs) per render. Past days are re-read at
# most every PAST_DAYS_TTL_S, today at most every TODAY_TTL_S.
PAST_DAYS_TTL_S = 600.0
TODAY_TTL_S = 30.0

_PREFIX_RE = re.compile(r"[A-Z][A-Z0-9_]{0,49}(-[0-9]{0,15})?")
_PROJECT_RE = re.compile(r"[A-Z][A-Z0-9_]{0,49}")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CURSOR_RE = re.compile(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?):(\d+)")


class BadRequest(Exception):
    """A parameter of the URL is wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class OverviewView:
    kind: str = field(default="overview", init=False)


@dataclass(frozen=True)
class RunsView:
    status: str = ""
    q: str = ""  # an issue key prefix
    project: str = ""  # a Jira project key: the repository's issues
    since: str = ""  # YYYY-MM-DD (UTC), updated on or after
    until: str = ""  # YYYY-MM-DD (UTC), updated on or before
    after: str = ""  # the cursor: "<updated_at>:<id>" of the last row of the previous page
    kind: str = field(default="runs", init=False)

    @property
    def live(self) -> bool:
        """Only the first page follows the newest activity."""
        return not self.after

    def query(self, **changes: str) -> dict[str, str]:
        values = {"status": self.status, "q": self.q, "project": self.project,
                  "since": self.since, "until": self.until, "after": self.after, **changes}
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class RunView:
    run_id: int
    kind: str = field(default="run", init=False)


@dataclass(frozen=True)
class IssueView:
    issue_key: str
    before: int = 0  # 0: the newest runs
    kind: str = field(default="issue", init=False)


View = OverviewView | RunsView | RunView | IssueView


# ------------------------------------------------------------------ parsing


def _day_start(text: str, name: str) -> float:
    if not _DATE_RE.fullmatch(text):
        raise BadRequest(f"{name} must be a date like 2026-12-31 (got {text[:20]!r})")
    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%d")))
    except ValueError:
        raise BadRequest(f"{name} is not a real date: {text[:20]!r}") from None


def parse_runs(query: MultiMapping[str]) -> RunsView:
    status = query.get("status", "").strip()
    if status and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)} (got {status[:20]!r})")
    q = query.get("q", "").strip().upper()
    if q and not _PREFIX_RE.fullmatch(q):
        raise BadRequest("search an issue key or its start, like PROJ-12 or PROJ "
                         f"(got {q[:40]!r})")
    project = query.get("project", "").strip().upper()
    if project and not _PROJECT_RE.fullmatch(project):
        raise BadRequest(f"project must be a Jira project key like PROJ (got {project[:40]!r})")
    since, until = query.get("since", "").strip(), query.get("until", "").strip()
    for name, value in (("since", since), ("until", until)):
        if value:
            _day_start(value, name)
    after = query.get("after", "").strip()
    if after and not _CURSOR_RE.fullmatch(after):
        raise BadRequest("after must be the cursor of a next-page link "
                         "(<updated_at>:<run id>)")
    return RunsView(status=status, q=q, project=project, since=since, until=until,
                    after=after)


def parse_run_id(text: str) -> RunView:
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(f"a run id is a number (got {text[:20]!r})")
    return RunView(int(text))


def parse_issue(key: str, before: str) -> IssueView:
    key = key.strip().upper()
    if not ISSUE_KEY_RE.fullmatch(key):
        raise BadRequest(f"not a Jira issue key like PROJ-123: {key[:40]!r}")
    if before and (not before.isdigit() or len(before) > 18):
        raise BadRequest("before must be a run id (a number)")
    return IssueView(key, int(before or 0))


# ------------------------------------------------------------------ data


class PastDays:
    """The charts' day rows as last read (per process): past days and today apart."""

    def __init__(self) -> None:
        self.today = -1
        self.read_at = 0.0
        self.counts: list[Any] = []
        self.costs: list[Any] = []
        self.today_read_at = 0.0
        self.today_counts: list[Any] = []
        self.today_costs: list[Any] = []


async def overview_data(deps: Deps, past: PastDays) -> dict[str, Any]:
    store = deps.store()
    now = time.time()
    health = await deps.health()
    active = await store.active_runs(ACTIVE_LIMIT)
    stuck = await store.stuck_runs(deps.settings.stuck_after_s, STUCK_LIMIT)
    today = int(now // charts.DAY_S)
    today_start = today * charts.DAY_S
    if past.today != today or now - past.read_at > PAST_DAYS_TTL_S:
        first = (today - charts.DAYS + 1) * charts.DAY_S
        past.counts = await store.daily_counts(first, today_start)
        past.costs = await store.daily_costs(first, today_start)
        past.today, past.read_at = today, now
    if past.today_read_at < past.read_at or now - past.today_read_at > TODAY_TTL_S:
        past.today_counts = await store.daily_counts(today_start, NO_BOUND)
        past.today_costs = await store.daily_costs(today_start, NO_BOUND)
        past.today_read_at = now
    counts = past.counts + past.today_counts
    costs = past.costs + past.today_costs
    return {"health": health, "active": active, "stuck": stuck, "now": now,
            "charts": charts.charts(charts.days(counts, costs, today))}


def projects(deps: Deps) -> list[tuple[str, str]]:
    """(project key, repository) pairs of MWAI_REPOS_FILE, for the repository filter."""
    try:
        repos = load_repos(RepoSources.of(deps.settings))
    except ConfigError:
        return []
    return sorted((key, repo.github_repo or repo.url) for key, repo in repos.items())


async def runs_data(deps: Deps, view: RunsView) -> dict[str, Any]:
    store = deps.store()
    since = _day_start(view.since, "since") if view.since else 0.0
    until = _day_start(view.until, "until") + charts.DAY_S if view.until else NO_BOUND
    before_updated, before_id = until, 2**62
    if view.after:
        match = _CURSOR_RE.fullmatch(view.after)
        assert match is not None
        before_updated = min(until, float(match.group(1)))
        before_id = int(match.group(2))
    prefix = view.q
    if view.project:
        project_prefix = view.project + "-"
        if prefix and not (prefix.startswith(project_prefix) or project_prefix.startswith(prefix)):
            prefix = "\uffff"  # both cannot hold: nothing matches
        elif len(project_prefix) > len(prefix):
            prefix = project_prefix
    prefixes = (prefix, prefix + "\U0010ffff") if prefix else None
    rows = await store.runs_page(status=view.status or None, since=since,
                                 before_updated=before_updated, before_id=before_id,
                                 prefixes=prefixes, limit=PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_cursor = f"{rows[-1].updated_at!r}:{rows[-1].id}" if more and rows else ""
    matches = (await store.issue_keys_starting(view.q, ISSUE_SEARCH_LIMIT)
               if view.q else [])
    return {"view": view, "runs": rows, "next_cursor": next_cursor, "matches": matches,
            "now": time.time(), "statuses": STATUSES}


async def run_data(deps: Deps, view: RunView) -> dict[str, Any]:
    store = deps.store()
    run = await store.get_run(view.run_id)  # RunNotFound: the page says so
    events = await store.events(view.run_id, limit=EVENTS_LIMIT)
    for event in events:
        event["meta"] = meta(event.get("meta_json"))
    outputs = [e for e in events if "output_tail" in e["meta"] or "summary" in e["meta"]]
    checks = [e for e in events if "checks" in e["meta"] or
              str(e["meta"].get("step", "")).startswith("check")]
    base = deps.settings.jira_base_url.rstrip("/")
    return {"run": run, "events": events, "outputs": outputs, "checks": checks,
            "jira_url": f"{base}/browse/{run['issue_key']}" if base else None,
            "now": time.time(), "payload": meta(run.get("payload_json"))}


async def issue_data(deps: Deps, view: IssueView) -> dict[str, Any]:
    rows: list[RunRow] = await deps.store().issue_runs(view.issue_key, view.before or 2**62,
                                                       PAGE_SIZE + 1)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    base = deps.settings.jira_base_url.rstrip("/")
    return {"view": view, "runs": rows, "next_before": rows[-1].id if more and rows else 0,
            "jira_url": f"{base}/browse/{view.issue_key}" if base else None,
            "now": time.time()}


TEMPLATES = {"overview": "overview_main.html", "runs": "runs_main.html",
             "run": "run_main.html", "issue": "issue_main.html"}


async def view_data(deps: Deps, past: PastDays, view: View) -> dict[str, Any]:
    """The template context of a view's content (the live region)."""
    if isinstance(view, OverviewView):
        return await overview_data(deps, past)
    if isinstance(view, RunsView):
        return await runs_data(deps, view)
    if isinstance(view, RunView):
        return await run_data(deps, view)
    return await issue_data(deps, view)


__all__ = ["BadRequest", "RunNotFound", "View", "view_data"]
