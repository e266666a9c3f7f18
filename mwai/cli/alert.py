"""``mwai alert``: the guide's database-based alert, and its notifiers.

Run from cron or a systemd timer. The check counts failed runs in the window,
stuck runs and a queue older than MWAI_QUEUE_AGE_ALERT_S; when the count
reaches ``--threshold`` it notifies every configured notifier and exits 1
(exit 0 when all is well), like a monitoring-plugin check. With no notifier
configured it prints the alert and still exits 1. A notifier that fails is
reported on stderr and the exit code is 3. The same alert (same failed and
stuck runs) is not re-sent within MWAI_ALERT_COOLDOWN_S.

``--unit-failed UNIT`` is for systemd ``OnFailure=``: it sends a message
about the failed unit with the last lines of its journal (exit 0 once sent).

Stuck runs and the age of the queue are judged by mwai.queue.health, as for
``/health/detailed`` and ``mwai monitor``: the three agree on them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shlex
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import orjson

from mwai import telemetry
from mwai.cli.common import (
    format_duration,
    iso_utc,
    local_time,
    one_line,
    open_store,
    ops_settings,
    parse_duration,
    print_json,
    run_async,
)
from mwai.cli.parser import add_command, arg, count, duration, flag
from mwai.clients.http import ApiClient, new_session
from mwai.errors import EXIT_NOTIFY_FAILED, EXIT_OK, EXIT_PROBLEM, MwaiError, UsageError
from mwai.model import FailedRun, RunningRun
from mwai.queue.health import HealthRules, assess
from mwai.queue.store import Store
from mwai.scrub import scrub as scrub_secrets
from mwai.settings import SETTINGS, Settings

COOLDOWN_KEY = "alert.last_sent"
NOTIFY_TIMEOUT_S = 15.0
JOURNAL_LINES = 20
LISTED_RUNS = 20


class NotifyError(MwaiError):
    """A notifier could not deliver the alert."""


# ------------------------------------------------------------------ the check


async def collect_alert(store: Store, settings: Settings, window_s: float,
                        threshold: int) -> dict[str, Any]:
    """The alert document: what is wrong now, and whether it crosses the threshold."""
    now = time.time()
    since = now - window_s
    failed_count = await store.count_runs_since("failed", since)
    failed = await store.failed_runs_since(since, limit=1000)
    # Liveness is not the alert's business (a timer may run it where no service is).
    health = assess(await store.health_snapshot(settings.stuck_after_s, list_stuck=1000),
                    None, HealthRules.of(settings))
    stuck, stuck_count = health.stuck_runs, health.stuck_count or 0
    queue_old = health.queue_too_old
    problems = failed_count + stuck_count + (1 if queue_old else 0)
    parts = []
    if failed_count:
        parts.append(f"{failed_count} failed run(s) in the last {format_duration(window_s)}")
    if stuck_count:
        parts.append(f"{stuck_count} stuck run(s) (no update for "
                     f"{format_duration(settings.stuck_after_s)})")
    if queue_old:
        parts.append("oldest queued run waits for "
                     f"{format_duration(health.oldest_queued_age_s)} "
                     f"(limit {format_duration(settings.queue_age_alert_s)})")
    firing = problems >= threshold and problems > 0
    fingerprint_source = {"failed": sorted(r.id for r in failed),
                          "stuck": sorted(r.id for r in stuck), "queue": queue_old}
    return {
        "kind": "runs",
        "firing": firing,
        "host": socket.gethostname(),
        "summary": ("mwai: " + "; ".join(parts)) if parts else "mwai: no problems",
        "problems": problems,
        "threshold": threshold,
        "window_s": window_s,
        "failed_count": failed_count,
        "failed_runs": [_run_item(row) for row in failed[:LISTED_RUNS]],
        "stuck_runs": [_run_item(row) for row in stuck[:LISTED_RUNS]],
        "stuck_count": stuck_count,
        "queued": health.queued,
        "oldest_queued_age_s": health.oldest_queued_age_s,
        "queue_age_limit_s": settings.queue_age_alert_s,
        "fingerprint": hashlib.sha256(orjson.dumps(fingerprint_source)).hexdigest()[:16],
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


def _run_item(run: FailedRun | RunningRun) -> dict[str, Any]:
    item: dict[str, Any] = {"id": run.id, "issue_key": run.issue_key,
                            "attempts": run.attempts, "updated_at": run.updated_at,
                            "updated_at_iso": iso_utc(run.updated_at)}
    item["last_error"] = run.last_error if isinstance(run, FailedRun) else None
    item["locked_by"] = run.locked_by if isinstance(run, RunningRun) else None
    return item


def alert_text(alert: Mapping[str, Any]) -> str:
    """The human message (Slack, email, terminal)."""
    lines = [f"ALERT on {alert['host']}: {alert['summary']}"]
    if alert["kind"] == "unit_failed":
        journal = alert.get("journal") or []
        if journal:
            lines.append(f"Last {len(journal)} journal lines of {alert['unit']}:")
            lines += [f"  {line}" for line in journal]
        else:
            lines.append(f"(journal not available: {alert.get('journal_error')})")
        return "\n".join(lines)
    for run in alert["failed_runs"]:
        lines.append(f"  failed  run {run['id']} {run['issue_key']} at "
                     f"{local_time(run['updated_at'])}: {one_line(run['last_error'], 160)}")
    if alert["failed_count"] > len(alert["failed_runs"]):
        lines.append(f"  ... and {alert['failed_count'] - len(alert['failed_runs'])} more "
                     "(mwai runs --status failed)")
    for run in alert["stuck_runs"]:
        lines.append(f"  stuck   run {run['id']} {run['issue_key']} since "
                     f"{local_time(run['updated_at'])} (worker {run['locked_by']})")
    lines.append("Details: mwai runs --status failed; mwai show RUN_ID; mwai stats")
    return "\n".join(lines)


# ------------------------------------------------------------------ notifiers


Notifier = Callable[[Mapping[str, Any], str], Awaitable[None]]


@dataclass(frozen=True)
class NamedNotifier:
    name: str  # the setting that configures it (never its secret value)
    send: Notifier


def configured_notifiers(settings: Settings, session: aiohttp.ClientSession
                         ) -> list[NamedNotifier]:
    notifiers = []
    if settings.alert_webhook_url:
        notifiers.append(NamedNotifier("MWAI_ALERT_WEBHOOK_URL",
                                       _webhook(settings.alert_webhook_url, session, False)))
    if settings.alert_slack_webhook_url:
        notifiers.append(NamedNotifier("MWAI_ALERT_SLACK_WEBHOOK_URL",
                                       _webhook(settings.alert_slack_webhook_url, session,
                                                True)))
    if settings.alert_email_to:
        notifiers.append(NamedNotifier("MWAI_ALERT_EMAIL_TO", _email(settings)))
    if settings.alert_command:
        notifiers.append(NamedNotifier("MWAI_ALERT_COMMAND", _command(settings)))
    return notifiers


def _webhook(url: str, session: aiohttp.ClientSession, slack: bool) -> Notifier:
    client = ApiClient("alert webhook", url, session, timeout_s=NOTIFY_TIMEOUT_S, retries=2,
                       max_wait_s=10)

    async def send(alert: Mapping[str, Any], text: str) -> None:
        # Slack incoming webhooks take {"text": ...} and answer "ok" as text/plain.
        body = {"text": text} if slack else dict(alert, text=text)
        await client.request("POST", url, json=body, expect_json=False)

    return send


def _email(settings: Settings) -> Notifier:
    def deliver(message: EmailMessage) -> None:
        with smtplib.SMTP(settings.alert_smtp_host, settings.alert_smtp_port,
                          timeout=NOTIFY_TIMEOUT_S) as smtp:
            if settings.alert_smtp_starttls:
                smtp.starttls()
            if settings.alert_smtp_user:
                smtp.login(settings.alert_smtp_user, settings.alert_smtp_password)
            smtp.send_message(message)

    async def send(alert: Mapping[str, Any], text: str) -> None:
        message = EmailMessage()
        message["Subject"] = one_line(f"[mwai alert] {alert['summary']}", 200)
        message["From"] = settings.alert_email_from
        message["To"] = ", ".join(settings.alert_email_to)
        message.set_content(text + "\n\n" + orjson.dumps(alert, option=orjson.OPT_INDENT_2)
                            .decode() + "\n")
        try:
            await asyncio.to_thread(deliver, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"SMTP {settings.alert_smtp_host}:{settings.alert_smtp_port}: "
                              f"{type(exc).__name__}: {exc}") from None

    return send


def _command(settings: Settings) -> Notifier:
    secret_names = {s.name for s in SETTINGS if s.secret}

    async def send(alert: Mapping[str, Any], text: str) -> None:
        # The command gets the alert, not mwai's credentials.
        env = {k: v for k, v in os.environ.items() if k not in secret_names}
        env["MWAI_ALERT_SUMMARY"] = str(alert["summary"])
        process = await asyncio.create_subprocess_shell(
            settings.alert_command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, start_new_session=True)
        try:
            _, stderr = await asyncio.wait_for(process.communicate(orjson.dumps(alert)),
                                               NOTIFY_TIMEOUT_S * 2)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise NotifyError(f"command {shlex.quote(settings.alert_command)} did not finish "
                              f"within {NOTIFY_TIMEOUT_S * 2:g} s") from None
        if process.returncode != 0:
            tail = one_line(stderr.decode("utf-8", "replace")[-300:], 300)
            raise NotifyError(f"command exited with status {process.returncode}: {tail}")

    return send


def scrub(text: str, settings: Settings) -> str:
    """``text`` without the configured secrets (a notifier's error may echo its URL)."""
    return scrub_secrets(text, settings.secret_values())


async def notify_all(settings: Settings, alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Send to every notifier; returns (setting, error) for the ones that failed."""
    text = alert_text(alert)
    failures: list[tuple[str, str]] = []
    async with new_session() as session:
        notifiers = configured_notifiers(settings, session)
        results = await asyncio.gather(*(n.send(alert, text) for n in notifiers),
                                       return_exceptions=True)
    for notifier, result in zip(notifiers, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            failures.append((notifier.name, scrub(f"{type(result).__name__}: {result}",
                                                  settings)))
    return failures


def has_notifier(settings: Settings) -> bool:
    return bool(settings.alert_webhook_url or settings.alert_slack_webhook_url
                or settings.alert_email_to or settings.alert_command)


# ------------------------------------------------------------------ unit failures


def journal_tail(unit: str, lines: int = JOURNAL_LINES) -> tuple[list[str], str | None]:
    """The unit's last journal lines, or ([], why not)."""
    try:
        done = subprocess.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager"],
                              capture_output=True, text=True, timeout=10, check=False)
    except FileNotFoundError:
        return [], "journalctl is not installed"
    except subprocess.TimeoutExpired:
        return [], "journalctl did not answer within 10 s"
    if done.returncode != 0:
        return [], one_line(done.stderr, 200) or f"journalctl exited with {done.returncode}"
    return done.stdout.splitlines()[-lines:], None


def unit_alert(unit: str) -> dict[str, Any]:
    journal, why = journal_tail(unit)
    now = time.time()
    return {
        "kind": "unit_failed",
        "firing": True,
        "host": socket.gethostname(),
        "unit": unit,
        "summary": f"systemd unit {unit} failed",
        "journal": journal,
        "journal_error": why,
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


# ------------------------------------------------------------------ the command


async def _cooling_down(store: Store, alert: Mapping[str, Any], cooldown_s: float
                        ) -> float | None:
    """When the same alert was already sent within the cool-down: its time."""
    stored = await store.kv_get(COOLDOWN_KEY)
    if stored is None:
        return None
    try:
        last = orjson.loads(stored[0])
    except orjson.JSONDecodeError:
        return None
    if last.get("fingerprint") == alert["fingerprint"] and \
            time.time() - float(last.get("sent_at", 0)) < cooldown_s:
        return float(last["sent_at"])
    return None


def _report(alert: Mapping[str, Any], as_json: bool, extra: Mapping[str, Any]) -> None:
    if as_json:
        print_json({**alert, **extra})
    else:
        print(alert_text(alert) if alert["firing"] else f"OK: {alert['summary']}")


async def run_alert(settings: Settings, window_s: float, threshold: int, as_json: bool
                    ) -> int:
    async with open_store(settings, readonly=False) as store:
        alert = await collect_alert(store, settings, window_s, threshold)
        if not alert["firing"]:
            _report(alert, as_json, {"notified": [], "cooldown_until": None})
            return EXIT_OK
        sent_at = await _cooling_down(store, alert, settings.alert_cooldown_s)
        if sent_at is not None:
            until = sent_at + settings.alert_cooldown_s
            _report(alert, as_json, {"notified": [], "cooldown_until": until})
            if not as_json:
                print(f"(already notified at {local_time(sent_at)}; not re-sent before "
                      f"{local_time(until)}, MWAI_ALERT_COOLDOWN_S)")
            return EXIT_PROBLEM
        return await _deliver(settings, alert, as_json, store)


async def _deliver(settings: Settings, alert: Mapping[str, Any], as_json: bool,
                   store: Store | None, delivered_exit: int = EXIT_PROBLEM) -> int:
    if not has_notifier(settings):
        _report(alert, as_json, {"notified": [], "cooldown_until": None})
        if not as_json:
            print("(no notifier configured: set MWAI_ALERT_WEBHOOK_URL, "
                  "MWAI_ALERT_SLACK_WEBHOOK_URL, MWAI_ALERT_EMAIL_TO or MWAI_ALERT_COMMAND)")
        return EXIT_PROBLEM
    failures = await notify_all(settings, alert)
    failed_names = {name for name, _ in failures}
    sent = [n for n in ("MWAI_ALERT_WEBHOOK_URL", "MWAI_ALERT_SLACK_WEBHOOK_URL",
                        "MWAI_ALERT_EMAIL_TO", "MWAI_ALERT_COMMAND")
            if n not in failed_names and _configured(settings, n)]
    _report(alert, as_json, {"notified": sent,
                             "notify_errors": [{"notifier": n, "error": e}
                                               for n, e in failures]})
    for name, error in failures:
        sys.stderr.write(f"mwai: alert notifier {name} failed: {error}\n")
    if failures:
        return EXIT_NOTIFY_FAILED
    if store is not None:
        await store.kv_set(COOLDOWN_KEY, orjson.dumps(
            {"fingerprint": alert["fingerprint"], "sent_at": time.time()}).decode())
    return delivered_exit


def _configured(settings: Settings, name: str) -> bool:
    return bool({
        "MWAI_ALERT_WEBHOOK_URL": settings.alert_webhook_url,
        "MWAI_ALERT_SLACK_WEBHOOK_URL": settings.alert_slack_webhook_url,
        "MWAI_ALERT_EMAIL_TO": settings.alert_email_to,
        "MWAI_ALERT_COMMAND": settings.alert_command,
    }[name])


def _cmd_alert(args: argparse.Namespace) -> int:
    settings = ops_settings(args)
    if args.unit_failed:
        # Delivered is success here: the unit's own failure is already on record.
        return run_async(_deliver(settings, unit_alert(args.unit_failed), args.json, None,
                                  delivered_exit=EXIT_OK))
    window_s = parse_duration(args.window, "--window")
    if args.threshold < 1:
        raise UsageError("--threshold must be at least 1")
    with telemetry.cron_job(settings, "alert"):
        return run_async(run_alert(settings, window_s, args.threshold, args.json))


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_command(
        subparsers, common, "alert",
        "check for failed/stuck runs and an old queue; notify and exit 1 when over",
        "The database-based alert, for cron or a systemd timer: counts failed runs in the "
        "window, stuck runs (MWAI_STUCK_AFTER_S) and a queue older than "
        "MWAI_QUEUE_AGE_ALERT_S. When the count reaches --threshold it notifies "
        "(MWAI_ALERT_WEBHOOK_URL, MWAI_ALERT_SLACK_WEBHOOK_URL, MWAI_ALERT_EMAIL_TO, "
        "MWAI_ALERT_COMMAND) and exits 1; otherwise exits 0. No notifier: prints the alert, "
        "exits 1. A notifier failed: exit 3. The same alert is not re-sent within "
        "MWAI_ALERT_COOLDOWN_S.",
        _cmd_alert,
        duration("--window", "count failed runs updated within DURATION (default 1h)",
                 default="1h"),
        count("--threshold", 1, "alert when failed + stuck runs (+1 for an old queue) reach N "
                                "(default 1)"),
        arg("--unit-failed", metavar="UNIT",
            help=f"instead: notify that systemd unit UNIT failed, with its last {JOURNAL_LINES} "
                 "journal lines (for OnFailure=); exit 0 once delivered, 1 with no notifier, 3 "
                 "when a notifier failed"),
        flag("--json", "print the alert as one JSON document"))
