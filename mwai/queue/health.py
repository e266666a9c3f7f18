"""The one health assessment: `/health/detailed`, `mwai monitor` and `mwai alert`.

Each of them reads a ``HealthSnapshot`` of the store (``Store.health_snapshot``),
says who is alive to work the queue (``Workers``: the service its own worker
pool, the monitor the heartbeats of the `mwai serve` processes; the alert does
not judge liveness) and hands both to ``assess``. ``assess`` is pure: the same
facts give the same verdict, reasons and numbers wherever they are shown.

The rules:

- unhealthy: the database cannot be read, or no worker is alive to take runs;
- degraded: claims are paused (`mwai pause`), the database refuses writes, a
  run is stuck (running without an update for longer than MWAI_STUCK_AFTER_S),
  fewer workers are alive than configured, or the oldest queued run waits
  longer than MWAI_QUEUE_AGE_ALERT_S;
- healthy otherwise.

Whether a `mwai serve` process is alive is judged here too (``process_liveness``),
for `mwai monitor`, `mwai unlock`, `mwai health` and lease recovery alike: on
its own host by its pid first (a killed service is dead at once, whatever its
last heartbeat), then by its heartbeat.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Literal

from mwai.model import ProcessRow, RunningRun
from mwai.settings import Settings

Status = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True, slots=True)
class HealthRules:
    stuck_after_s: float  # running without an update for longer: stuck
    queue_age_limit_s: float  # the oldest queued run may wait this long

    @classmethod
    def of(cls, settings: Settings) -> HealthRules:
        return cls(stuck_after_s=settings.stuck_after_s,
                   queue_age_limit_s=settings.queue_age_alert_s)


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """What the store says about the queue, read at ``taken_at`` (epoch s)."""

    taken_at: float
    queued: int
    running: int
    stuck_count: int
    stuck_runs: tuple[RunningRun, ...]  # the longest stuck first; as many as were asked for
    oldest_queued_at: float | None
    write_failure: str | None  # the error of the last failed write batch, if it still fails
    paused_by: str | None = None  # claims paused (`mwai pause`) by this operator


@dataclass(frozen=True, slots=True)
class Workers:
    """Who is alive to work the queue, as the asking side can tell."""

    alive: int
    # How many should be: the service knows its pool size; the monitor cannot know
    # how many `mwai serve` should run (None: at least one).
    configured: int | None
    kind: Literal["workers", "services"]


@dataclass(frozen=True, slots=True)
class Assessment:
    status: Status
    problems: tuple[str, ...]  # human-readable, most serious first
    database_ok: bool
    queued: int | None  # None: the database could not be read
    running: int | None
    stuck_count: int | None
    stuck_runs: tuple[RunningRun, ...]
    oldest_queued_age_s: float | None  # None: nothing queued (or no database)
    queue_too_old: bool
    paused: bool = False  # claims are paused: webhooks are queued, no run starts


def assess(snapshot: HealthSnapshot | None, workers: Workers | None,
           rules: HealthRules) -> Assessment:
    """The verdict on a snapshot (None: the database could not be read) and the workers
    (None: not judged)."""
    if snapshot is None:
        return Assessment("unhealthy", ("database unavailable",), False, None, None, None, (),
                          None, False)
    problems: list[str] = []
    nobody_alive = workers is not None and workers.alive == 0
    if workers is not None and nobody_alive:
        problems.append("no worker is alive" if workers.kind == "workers"
                        else "no live `mwai serve` (its pid is gone or its heartbeat is old)")
    if snapshot.paused_by is not None:
        problems.append(f"paused: claims stopped by {snapshot.paused_by} "
                        "(webhooks are still queued; `mwai resume` starts them again)")
    if snapshot.write_failure:
        problems.append(f"the database refuses writes, webhooks get 503: "
                        f"{snapshot.write_failure}")
    if snapshot.stuck_count:
        problems.append(f"{snapshot.stuck_count} stuck run(s)")
    if (workers is not None and workers.configured is not None
            and 0 < workers.alive < workers.configured):
        problems.append(f"only {workers.alive} of {workers.configured} {workers.kind} alive")
    age_s = queue_age_s(snapshot)
    too_old = age_s is not None and age_s > rules.queue_age_limit_s
    if too_old:
        problems.append(f"oldest queued run waits for {age_s:.0f} s "
                        f"(limit {rules.queue_age_limit_s:g} s)")
    status: Status = "unhealthy" if nobody_alive else "degraded" if problems else "healthy"
    return Assessment(status, tuple(problems), True, snapshot.queued, snapshot.running,
                      snapshot.stuck_count, snapshot.stuck_runs, age_s, too_old,
                      snapshot.paused_by is not None)


def queue_age_s(snapshot: HealthSnapshot) -> float | None:
    """How long the oldest queued run has waited, to the millisecond (never negative:
    another host's clock may be ahead)."""
    if snapshot.oldest_queued_at is None:
        return None
    return round(max(0.0, snapshot.taken_at - snapshot.oldest_queued_at), 3)


# ------------------------------------------------------------------ liveness


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that pid; when in doubt, alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def fresh_after_s(heartbeat_s: float, lease_s: float, now: float) -> float:
    """Heartbeats newer than this mean a process on another host is alive (3 beats or
    a lease)."""
    return now - max(3 * heartbeat_s, lease_s)


def process_liveness(process: ProcessRow | None, fresh_after: float, now: float,
                     host: str | None = None) -> tuple[bool, str]:
    """(alive, why) for a registered `mwai serve` process.

    On this host (``host``, default this machine's name) the pid decides first: a
    pid that no longer exists is dead at once, even with a fresh heartbeat (kill -9
    leaves one behind for up to a lease). Then the heartbeat: fresh means alive. A
    process of this host whose pid still runs counts as alive even with an old
    heartbeat (it may be busy; its leases expire anyway). When in doubt, alive.
    """
    if process is None:
        return False, "no process record"
    if process.stopped_at is not None:
        return False, "its service stopped"
    same_host = process.hostname == (host or socket.gethostname())
    if same_host and not pid_alive(int(process.pid)):
        return False, f"pid {process.pid} is gone"
    if process.heartbeat_at >= fresh_after:
        return True, "heartbeat is fresh"
    if same_host:
        return True, f"pid {process.pid} is still running on this host"
    return False, f"no heartbeat for {max(0.0, now - process.heartbeat_at):.0f} s"
