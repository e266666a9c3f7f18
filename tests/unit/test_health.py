"""The one health assessment (mwai.queue.health): each rule and its boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from mwai.model import ProcessRow, RunningRun
from mwai.queue.health import (
    HealthRules,
    HealthSnapshot,
    Workers,
    assess,
    process_liveness,
    queue_age_s,
)
from mwai.settings import Settings

NOW = 1_700_000_000.0
RULES = HealthRules(stuck_after_s=600.0, queue_age_limit_s=300.0)
POOL = Workers(alive=2, configured=2, kind="workers")
SERVICES = Workers(alive=1, configured=None, kind="services")
QUIET = HealthSnapshot(taken_at=NOW, queued=0, running=0, stuck_count=0, stuck_runs=(),
                       oldest_queued_at=None, write_failure=None)


def stuck_run(run_id: int) -> RunningRun:
    return RunningRun(id=run_id, issue_key=f"S-{run_id}", attempts=1, locked_by="h:1:ab/w1",
                      locked_at=NOW - 900, started_at=NOW - 900, created_at=NOW - 1000,
                      updated_at=NOW - 900, cancel_requested=0)


def test_a_quiet_queue_with_its_workers_alive_is_healthy() -> None:
    for workers in (POOL, SERVICES, None):
        health = assess(QUIET, workers, RULES)
        assert (health.status, health.problems) == ("healthy", ())
        assert health.database_ok and not health.queue_too_old
        assert (health.queued, health.running, health.stuck_count) == (0, 0, 0)
        assert health.oldest_queued_age_s is None


def test_an_unreadable_database_is_unhealthy_with_nothing_counted() -> None:
    health = assess(None, POOL, RULES)
    assert (health.status, health.problems) == ("unhealthy", ("database unavailable",))
    assert not health.database_ok
    assert (health.queued, health.running, health.stuck_count,
            health.oldest_queued_age_s) == (None, None, None, None)
    # Whoever asks: the alert (no workers judged) too.
    assert assess(None, None, RULES).status == "unhealthy"


@pytest.mark.parametrize(("workers", "problem"), [
    (Workers(alive=0, configured=2, kind="workers"), "no worker is alive"),
    (Workers(alive=0, configured=None, kind="services"),
     "no live `mwai serve` (its pid is gone or its heartbeat is old)"),
])
def test_no_worker_alive_is_unhealthy_and_the_other_problems_still_show(
        workers: Workers, problem: str) -> None:
    snapshot = replace(QUIET, running=1, stuck_count=1, stuck_runs=(stuck_run(7),))
    health = assess(snapshot, workers, RULES)
    assert health.status == "unhealthy"
    assert health.problems == (problem, "1 stuck run(s)")


def test_one_worker_alive_is_enough_to_be_not_unhealthy() -> None:
    assert assess(QUIET, Workers(alive=1, configured=1, kind="workers"), RULES).status == \
        "healthy"
    assert assess(QUIET, SERVICES, RULES).status == "healthy"


@pytest.mark.parametrize(("alive", "status"), [(1, "degraded"), (2, "healthy"), (3, "healthy")])
def test_fewer_workers_than_configured_is_degraded(alive: int, status: str) -> None:
    health = assess(QUIET, Workers(alive=alive, configured=2, kind="workers"), RULES)
    assert health.status == status
    assert health.problems == (("only 1 of 2 workers alive",) if alive == 1 else ())


def test_the_monitor_cannot_count_missing_services_so_one_alive_is_all_it_asks() -> None:
    health = assess(QUIET, Workers(alive=1, configured=None, kind="services"), RULES)
    assert health.status == "healthy"


@pytest.mark.parametrize(("stuck", "status"), [(0, "healthy"), (1, "degraded"), (3, "degraded")])
def test_a_stuck_run_is_degraded(stuck: int, status: str) -> None:
    snapshot = replace(QUIET, running=stuck, stuck_count=stuck,
                       stuck_runs=tuple(stuck_run(n) for n in range(stuck)))
    health = assess(snapshot, POOL, RULES)
    assert health.status == status
    assert health.stuck_count == stuck
    assert [run.id for run in health.stuck_runs] == list(range(stuck))
    assert health.problems == ((f"{stuck} stuck run(s)",) if stuck else ())


def test_a_database_refusing_writes_is_degraded_and_says_why() -> None:
    snapshot = replace(QUIET, write_failure="database /x: database or disk is full")
    health = assess(snapshot, POOL, RULES)
    assert health.status == "degraded"
    assert health.problems == ("the database refuses writes, webhooks get 503: "
                               "database /x: database or disk is full",)


@pytest.mark.parametrize(("age_s", "too_old"), [
    (0.0, False), (299.999, False), (300.0, False), (300.0004, False),  # rounds to 300.0
    (300.001, True), (3600.0, True),
])
def test_the_queue_is_too_old_only_past_its_limit(age_s: float, too_old: bool) -> None:
    snapshot = replace(QUIET, queued=1, oldest_queued_at=NOW - age_s)
    health = assess(snapshot, POOL, RULES)
    assert health.queue_too_old is too_old
    assert health.oldest_queued_age_s == round(age_s, 3)
    assert health.status == ("degraded" if too_old else "healthy")
    if too_old:
        assert health.problems == (f"oldest queued run waits for {age_s:.0f} s (limit 300 s)",)


def test_a_queued_run_from_a_clock_ahead_has_waited_zero_seconds() -> None:
    snapshot = replace(QUIET, queued=1, oldest_queued_at=NOW + 5)
    assert queue_age_s(snapshot) == 0.0
    assert assess(snapshot, POOL, RULES).status == "healthy"


def test_problems_come_most_serious_first() -> None:
    snapshot = replace(QUIET, queued=1, running=1, stuck_count=1, stuck_runs=(stuck_run(1),),
                       oldest_queued_at=NOW - 400, write_failure="disk full")
    health = assess(snapshot, Workers(alive=1, configured=2, kind="workers"), RULES)
    assert health.status == "degraded"
    assert health.problems == (
        "the database refuses writes, webhooks get 503: disk full",
        "1 stuck run(s)",
        "only 1 of 2 workers alive",
        "oldest queued run waits for 400 s (limit 300 s)",
    )


def test_the_alert_judges_runs_not_liveness() -> None:
    snapshot = replace(QUIET, running=1, stuck_count=1, stuck_runs=(stuck_run(1),))
    health = assess(snapshot, None, RULES)
    assert (health.status, health.problems) == ("degraded", ("1 stuck run(s)",))


def test_the_rules_come_from_the_settings() -> None:
    settings = Settings.defaults(stuck_after_s=42.0, queue_age_alert_s=7.0)
    assert HealthRules.of(settings) == HealthRules(stuck_after_s=42.0, queue_age_limit_s=7.0)


# ------------------------------------------------------------------ liveness


def _process(pid: int, host: str, heartbeat_at: float,
             stopped_at: float | None = None) -> ProcessRow:
    return ProcessRow(f"{host}:{pid}:abc", pid, host, NOW - 100, heartbeat_at, stopped_at)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid no longer exists (pids are not reused this fast)
    return child.pid


def test_a_gone_pid_on_this_host_is_dead_even_with_a_fresh_heartbeat() -> None:
    dead = _process(_dead_pid(), "here", heartbeat_at=NOW)
    assert process_liveness(dead, NOW - 30, NOW, host="here") == (
        False, f"pid {dead.pid} is gone")


def test_a_running_pid_on_this_host_is_alive_even_with_an_old_heartbeat() -> None:
    me = _process(os.getpid(), "here", heartbeat_at=NOW - 3600)
    assert process_liveness(me, NOW - 30, NOW, host="here") == (
        True, f"pid {os.getpid()} is still running on this host")


def test_another_hosts_process_is_judged_by_its_heartbeat_alone() -> None:
    # The pid means nothing on another host: a gone local pid does not matter there.
    pid = _dead_pid()
    assert process_liveness(_process(pid, "there", NOW - 5), NOW - 30, NOW, host="here")[0]
    assert process_liveness(_process(pid, "there", NOW - 60), NOW - 30, NOW,
                            host="here") == (False, "no heartbeat for 60 s")


def test_a_stopped_or_unknown_process_is_dead() -> None:
    stopped = _process(os.getpid(), "here", NOW, stopped_at=NOW)
    assert process_liveness(stopped, NOW - 30, NOW, host="here") == (
        False, "its service stopped")
    assert process_liveness(None, NOW - 30, NOW) == (False, "no process record")
