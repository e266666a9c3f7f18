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

``check_connections`` serves ``mwai check --connect``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shlex
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from mwai.clients.http import ApiClient, new_session
from mwai.errors import EXIT_OK, EXIT_PROBLEM, MwaiError, UsageError
from mwai.queue.store import Store
from mwai.settings import SETTINGS, Settings

EXIT_NOTIFY_FAILED = 3
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
    failed_count = int((await store.read_query("ops_count_status_since", status="failed",
                                               since=since))[0]["count"])
    failed = await store.read_query("ops_failed_since", since=since, limit=1000)
    stuck_before = now - settings.stuck_after_s
    stuck = [row for row in await store.read_query("ops_running_runs", limit=1000)
             if row["updated_at"] < stuck_before]
    health = await store.health_counts(settings.stuck_after_s)
    oldest_age = None if health.oldest_queued_at is None else now - health.oldest_queued_at
    queue_old = oldest_age is not None and oldest_age > settings.queue_age_alert_s
    problems = failed_count + len(stuck) + (1 if queue_old else 0)
    parts = []
    if failed_count:
        parts.append(f"{failed_count} failed run(s) in the last {format_duration(window_s)}")
    if stuck:
        parts.append(f"{len(stuck)} stuck run(s) (no update for "
                     f"{format_duration(settings.stuck_after_s)})")
    if queue_old:
        parts.append(f"oldest queued run waits for {format_duration(oldest_age)} "
                     f"(limit {format_duration(settings.queue_age_alert_s)})")
    firing = problems >= threshold and problems > 0
    fingerprint_source = {"failed": sorted(int(r["id"]) for r in failed),
                          "stuck": sorted(int(r["id"]) for r in stuck), "queue": queue_old}
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
        "stuck_count": len(stuck),
        "queued": health.queued,
        "oldest_queued_age_s": None if oldest_age is None else round(oldest_age, 3),
        "queue_age_limit_s": settings.queue_age_alert_s,
        "fingerprint": hashlib.sha256(orjson.dumps(fingerprint_source)).hexdigest()[:16],
        "timestamp": now,
        "timestamp_iso": iso_utc(now),
    }


def _run_item(row: Mapping[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {key: row[key] for key in ("id", "issue_key", "attempts", "updated_at")
            if key in row.keys()}
    item["updated_at_iso"] = iso_utc(row["updated_at"])
    item["last_error"] = row["last_error"] if "last_error" in row.keys() else None
    item["locked_by"] = row["locked_by"] if "locked_by" in row.keys() else None
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
    for secret in settings.secret_values():
        text = text.replace(secret, "<hidden>")
    return text


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
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "alert", parents=[common],
        help="check for failed/stuck runs and an old queue; notify and exit 1 when over",
        description="The database-based alert, for cron or a systemd timer: counts failed "
                    "runs in the window, stuck runs (MWAI_STUCK_AFTER_S) and a queue older "
                    "than MWAI_QUEUE_AGE_ALERT_S. When the count reaches --threshold it "
                    "notifies (MWAI_ALERT_WEBHOOK_URL, MWAI_ALERT_SLACK_WEBHOOK_URL, "
                    "MWAI_ALERT_EMAIL_TO, MWAI_ALERT_COMMAND) and exits 1; otherwise exits 0. "
                    "No notifier: prints the alert, exits 1. A notifier failed: exit 3. The "
                    "same alert is not re-sent within MWAI_ALERT_COOLDOWN_S.")
    parser.add_argument("--window", default="1h", metavar="DURATION",
                        help="count failed runs updated within DURATION (default 1h)")
    parser.add_argument("--threshold", type=int, default=1, metavar="N",
                        help="alert when failed + stuck runs (+1 for an old queue) reach N "
                             "(default 1)")
    parser.add_argument("--unit-failed", metavar="UNIT",
                        help="instead: notify that systemd unit UNIT failed, with its last "
                             f"{JOURNAL_LINES} journal lines (for OnFailure=); exit 0 once "
                             "delivered, 1 with no notifier, 3 when a notifier failed")
    parser.add_argument("--json", action="store_true",
                        help="print the alert as one JSON document")
    parser.set_defaults(handler=_cmd_alert)


# ------------------------------------------------------------------ mwai check --connect


async def check_connections(settings: Settings,
                            session: aiohttp.ClientSession | None = None
                            ) -> list[dict[str, Any]]:
    """Call each configured remote service once; one result per service."""
    own = session is None
    session = session or new_session()
    try:
        return list(await asyncio.gather(
            _probe(settings, "jira", _jira_probe(settings, session)),
            _probe(settings, "github", _github_probe(settings, session)),
            _probe(settings, f"llm ({settings.llm_provider})", _llm_probe(settings, session)),
        ))
    finally:
        if own:
            await session.close()


Probe = Callable[[], Awaitable[str]] | str


async def _probe(settings: Settings, service: str, probe: Probe) -> dict[str, Any]:
    if isinstance(probe, str):
        return {"service": service, "ok": None, "detail": probe}
    try:
        detail = await probe()
    except (MwaiError, aiohttp.ClientError, OSError, ValueError) as exc:
        return {"service": service, "ok": False, "detail": scrub(str(exc), settings)}
    return {"service": service, "ok": True, "detail": detail}


def _client(settings: Settings, name: str, base_url: str, session: aiohttp.ClientSession,
            headers: Mapping[str, str]) -> ApiClient:
    return ApiClient(name, base_url, session, headers=headers,
                     timeout_s=min(settings.http_timeout_s, 15.0), retries=1, max_wait_s=5)


def _missing(names: Sequence[tuple[str, str]]) -> str | None:
    empty = [name for name, value in names if not value]
    return f"not configured ({', '.join(empty)} empty): skipped" if empty else None


def _jira_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    skip = _missing([("JIRA_BASE_URL", settings.jira_base_url),
                     ("JIRA_EMAIL", settings.jira_email),
                     ("JIRA_API_TOKEN", settings.jira_api_token)])
    if skip:
        return skip
    token = f"{settings.jira_email}:{settings.jira_api_token}".encode()
    auth = "Basic " + base64.b64encode(token).decode()
    client = _client(settings, "jira", settings.jira_base_url, session,
                     {"Authorization": auth})

    async def probe() -> str:
        answer = await client.request("GET", f"/rest/api/{settings.jira_api_version}/myself")
        me = answer.json() or {}
        who = me.get("displayName") or me.get("emailAddress") or me.get("accountId")
        note = ""
        if settings.jira_ai_account_id and me.get("accountId") and \
                me["accountId"] != settings.jira_ai_account_id:
            note = (f" (warning: accountId {me['accountId']} is not JIRA_AI_ACCOUNT_ID "
                    f"{settings.jira_ai_account_id})")
        return f"authenticated as {who}{note}"

    return probe


def _github_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    skip = _missing([("GH_TOKEN", settings.gh_token)])
    if skip:
        return skip
    client = _client(settings, "github", settings.github_api_url, session, {
        "Authorization": f"Bearer {settings.gh_token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28"})

    async def probe() -> str:
        answer = await client.request("GET", "/user")
        me = answer.json() or {}
        return f"authenticated as {me.get('login')}"

    return probe


def _llm_probe(settings: Settings, session: aiohttp.ClientSession) -> Probe:
    if settings.llm_provider == "anthropic":
        skip = _missing([("ANTHROPIC_API_KEY", settings.anthropic_api_key)])
        if skip:
            return skip
        client = _client(settings, "anthropic", settings.anthropic_base_url, session, {
            "x-api-key": settings.anthropic_api_key, "anthropic-version": "2023-06-01"})
        path, model = "/v1/models", settings.anthropic_model
    else:
        skip = _missing([("OPENAI_API_KEY", settings.openai_api_key)])
        if skip:
            return skip
        client = _client(settings, "openai", settings.openai_base_url, session, {
            "Authorization": f"Bearer {settings.openai_api_key}"})
        path, model = "/models", settings.openai_model

    async def probe() -> str:
        answer = await client.request("GET", path)
        document = answer.json() or {}
        ids = [item.get("id") for item in document.get("data", []) if isinstance(item, dict)]
        listed = "listed" if model in ids else "not in the first page of the list"
        return f"key accepted, {len(ids)} models; model {model} {listed}"

    return probe
