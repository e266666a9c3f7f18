"""Issue 19, points 2 and 5 (SIGHUP), with `mwai serve` as a subprocess.

Lines carry journald's ``<N>`` priority prefix when stdout is the journal
($JOURNAL_STREAM names it); MWAI_LOG_LEVEL sets the level per logger; health
probes log at DEBUG; SIGHUP re-reads the env file, applies the log levels and
alert thresholds, names what needs a restart, refuses bad values and never
ends the service.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import HERE, Service

pytestmark = pytest.mark.slow

PRIORITY = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}
LINE = re.compile(r"^<([0-7])>(\{.*\})$")


def journal_lines(service: Service) -> list[tuple[int, dict[str, Any]]]:
    """(priority, record) of every line, each checked to be `<N>` + one JSON object."""
    lines = []
    for raw in service.output().splitlines():
        match = LINE.match(raw)
        assert match, f"not a <N>-prefixed JSON line: {raw!r}"
        lines.append((int(match.group(1)), json.loads(match.group(2))))
    return lines


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def as_journal(service: Service) -> None:
    """stdout is the log file, and $JOURNAL_STREAM names it, as systemd does."""
    service.log_path.touch()
    status = os.stat(service.log_path)
    service.env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}"


def access_lines(service: Service, path: str) -> list[tuple[int, dict[str, Any]]]:
    return [(p, r) for p, r in journal_lines(service)
            if r["logger"] == "aiohttp.access" and r.get("path") == path]


def test_priorities_levels_and_a_sighup_reload(tmp_path: Path) -> None:
    env_file = tmp_path / "mwai.env"
    env_file.write_text("MWAI_LOG_LEVEL=INFO,mwai.workers=WARNING\n")
    service = Service(tmp_path, MWAI_ENV_FILE=str(env_file), MWAI_WORKER="2")  # a typo
    as_journal(service)
    service.start()
    try:
        assert service.get("/health")[0] == 200
        assert service.post_webhook({"event_type": "issue_assigned", "issue_key": "LOG-1"}
                                    )[0] == 200
        wait_until(lambda: access_lines(service, "/webhook/jira"), "the webhook's access line")
        lines = journal_lines(service)
        # Every line's prefix is its level's syslog priority.
        assert all(priority == PRIORITY[record["level"]] for priority, record in lines)
        typo = [r for p, r in lines if p == 4 and "did you mean MWAI_WORKERS" in r["message"]]
        assert typo, lines
        assert any(r["message"] == "Listening" for _, r in lines)
        # mwai.workers=WARNING: its INFO lines are gone; a probe's access line is DEBUG.
        assert not [r for _, r in lines if r["logger"] == "mwai.workers"]
        assert access_lines(service, "/health") == []

        env_file.write_text("MWAI_LOG_LEVEL=DEBUG\nMWAI_MAX_ATTEMPTS=5\n")
        service.signal(signal.SIGHUP)
        reloaded = wait_until(lambda: [r for _, r in journal_lines(service)
                                       if r["message"] == "Settings reloaded (SIGHUP)"],
                              "the reload line")
        assert reloaded[0]["applied"] == ["MWAI_LOG_LEVEL"]
        assert reloaded[0]["needs_restart"] == ["MWAI_MAX_ATTEMPTS"]
        assert service.get("/health")[0] == 200
        probe = wait_until(lambda: access_lines(service, "/health"), "a DEBUG probe line")
        assert probe[0][0] == 7 and probe[0][1]["level"] == "DEBUG"

        env_file.write_text("MWAI_LOG_LEVEL=LOUD\n")
        service.signal(signal.SIGHUP)
        refused = wait_until(lambda: [(p, r) for p, r in journal_lines(service)
                                      if "refused" in r["message"]], "the refusal")
        assert refused[0][0] == 3 and "MWAI_LOG_LEVEL='LOUD'" in refused[0][1]["error"]
        # `journalctl -p err` shows exactly the ERROR lines, and the service lives on.
        errors = [r for p, r in journal_lines(service) if p <= 3]
        assert errors == [r for _, r in journal_lines(service) if r["level"] == "ERROR"]
        assert service.get("/health")[0] == 200
        assert service.proc is not None and service.proc.poll() is None
    finally:
        assert service.stop() == 0


def test_sighup_changes_the_alert_threshold_of_the_running_service(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env_file = tmp_path / "mwai.env"
    env_file.write_text("MWAI_STUCK_AFTER_S=3600\n")
    # Heartbeats (which refresh a running run) rarer than the new threshold.
    service = Service(tmp_path, MWAI_ENV_FILE=str(env_file), MWAI_HEARTBEAT_S="30",
                      MWAI_LEASE_S="120", MWAI_WORKERS="1")
    service.argv = [sys.executable, str(HERE / "serve_gated.py"), str(gate)]
    service.start()
    try:
        assert service.post_webhook({"event_type": "issue_assigned", "issue_key": "GATE-1"}
                                    )[0] == 200
        wait_until(lambda: service.get("/health/detailed")[1]["running"] == 1, "a running run")
        assert service.get("/health/detailed")[1]["stuck_count"] == 0
        env_file.write_text("MWAI_STUCK_AFTER_S=1\n")
        service.signal(signal.SIGHUP)
        report = wait_until(lambda: (lambda r: r if r["stuck_count"] == 1 else None)(
            service.get("/health/detailed")[1]), "the run to count as stuck")
        assert report["status"] == "degraded"
        assert '"applied":["MWAI_STUCK_AFTER_S"]' in service.output()
    finally:
        gate.touch()
        assert service.stop() == 0
