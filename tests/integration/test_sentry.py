"""A run that raises becomes exactly one Sentry event that names the run, with no secret.

The Sentry endpoint is a local HTTP server in a thread (the SDK's transport sends
from its own thread with urllib3, as against sentry.io): it keeps every envelope.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import sentry_sdk

from mwai import telemetry
from mwai.errors import StoreError
from mwai.queue.processor import RunContext
from mwai.queue.store import Store
from mwai.server.app import STORE_KEY, create_app
from mwai.settings import Settings
from tests.conftest import SECRET, automation_payload, secret_headers
from tests.integration.helpers import db_rows, wait_for

SECRETS = {
    "jira_api_token": "jira-token-9f8e7d6c5b4a",
    "gh_token": "ghp_secretgithubtoken1234567890",
    "anthropic_api_key": "sk-ant-secret-abcdef123456",
    "openai_api_key": "sk-openai-secret-654321fedcba",
    "metrics_token": "metrics-bearer-secret-77",
    "alert_smtp_password": "smtp-password-secret-88",
}


class SentryInbox(http.server.ThreadingHTTPServer):
    envelopes: list[bytes]
    auth_headers: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: SentryInbox

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding:
            raise AssertionError(f"unexpected Content-Encoding {encoding}")
        if self.path.rstrip("/") != "/api/1/envelope":
            self.send_response(404)
            self.end_headers()
            return
        self.server.envelopes.append(body)
        self.server.auth_headers.append(self.headers.get("X-Sentry-Auth", ""))
        reply = b'{"id":"00000000000000000000000000000000"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def parse_envelope(raw: bytes) -> list[tuple[dict[str, Any], Any]]:
    """Items of a Sentry envelope: (item header, payload)."""
    items: list[tuple[dict[str, Any], Any]] = []
    _, _, rest = raw.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = orjson.loads(header_line)
        if "length" in header:
            payload, rest = rest[:header["length"]], rest[header["length"] + 1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header, orjson.loads(payload)))
        except orjson.JSONDecodeError:
            items.append((header, payload))
    return items


@pytest.fixture
def sentry_inbox() -> Iterator[SentryInbox]:
    server = SentryInbox(("127.0.0.1", 0), _Handler)
    server.envelopes = []
    server.auth_headers = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        telemetry.close_sentry()
        server.shutdown()
        server.server_close()


class FailingProcessor:
    """Decides an action, journals a step, then fails with a secret in the message."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def process(self, ctx: RunContext) -> None:
        await ctx.record(action="execute")
        await ctx.event("Calling Jira", url="https://example.atlassian.net",
                        authorization=f"Basic {self.settings.jira_api_token}")
        raise RuntimeError(f"Jira refused token {self.settings.jira_api_token} "
                           f"and GitHub {self.settings.gh_token}")

    async def close(self) -> None:
        return None


def sentry_settings(settings: Settings, port: int) -> Settings:
    return dataclasses.replace(settings, sentry_dsn=f"http://key@127.0.0.1:{port}/1",
                               sentry_environment="test", sentry_traces_sample_rate=0.0,
                               **SECRETS)


async def test_failed_run_is_one_event_with_run_tags_and_no_secret(
        aiohttp_client: Any, settings: Settings, sentry_inbox: SentryInbox,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # as configure_logging() does in `mwai serve`
    configured = sentry_settings(settings, sentry_inbox.server_address[1])
    assert telemetry.init_sentry(configured)
    client = await aiohttp_client(create_app(configured, FailingProcessor(configured)))

    response = await client.post(
        "/webhook/jira", data=orjson.dumps(automation_payload("PROJ-7")),
        headers=secret_headers(**{"X-Request-Id": "req-abc-123",
                                  "Authorization": f"Bearer {configured.gh_token}"}))
    assert response.status == 200
    await wait_for(lambda: db_rows(configured.db, "SELECT status FROM runs")[0][0] == "failed",
                   what="run failed")
    sentry_sdk.flush(timeout=5)

    items = [item for raw in sentry_inbox.envelopes for item in parse_envelope(raw)]
    events = [payload for header, payload in items if header.get("type") == "event"]
    assert len(events) == 1, [header for header, _ in items]
    event = events[0]
    assert event["tags"]["run_id"] == "1"
    assert event["tags"]["issue_key"] == "PROJ-7"
    assert event["tags"]["action"] == "execute"
    assert event["tags"]["worker"].endswith(("/w1", "/w2"))
    assert event["tags"]["request_id"] == "req-abc-123"
    assert event["release"] == telemetry.release()
    assert event["environment"] == "test"
    exception = event["exception"]["values"][-1]
    assert exception["type"] == "RuntimeError"
    assert "[Filtered]" in exception["value"]
    crumbs = [crumb.get("message") for crumb in event["breadcrumbs"]["values"]]
    assert "Calling Jira" in crumbs  # lower log levels became breadcrumbs

    everything = b"".join(sentry_inbox.envelopes)
    # The DSN is left out on purpose: its key is what Sentry itself issued to accept events.
    for secret in [s for s in configured.secret_values() if s != configured.sentry_dsn]:
        assert secret.encode() not in everything, f"a secret leaked to Sentry: {secret[:6]}..."
    assert SECRET.encode() not in everything


def test_scrubber_blanks_credential_headers_and_secret_values() -> None:
    scrubber = telemetry.event_scrubber(["tok-123456", "hook-secret-xyz"])
    event = {
        "request": {"headers": {"Authorization": "Bearer whatever",
                                "X-Moveware-Webhook-Secret": "anything",
                                "x-hub-signature": "sha256=abc", "Accept": "*/*"},
                    "data": "body with hook-secret-xyz inside"},
        "breadcrumbs": {"values": [{"message": "sent tok-123456",
                                    "data": {"headers": [["X-Hub-Signature", "sha256=1"]]}}]},
    }
    cleaned = scrubber.walk(event)
    headers = cleaned["request"]["headers"]
    assert headers["Authorization"] == headers["X-Moveware-Webhook-Secret"] == "[Filtered]"
    assert headers["x-hub-signature"] == "[Filtered]"
    assert headers["Accept"] == "*/*"
    assert cleaned["request"]["data"] == "body with [Filtered] inside"
    crumb = cleaned["breadcrumbs"]["values"][0]
    assert crumb["message"] == "sent [Filtered]"
    assert crumb["data"]["headers"] == [["X-Hub-Signature", "[Filtered]"]]


def test_without_dsn_sentry_stays_off(settings: Settings) -> None:
    assert telemetry.init_sentry(settings) is False


def test_monitor_slug_is_derived_from_job_and_environment(settings: Settings) -> None:
    changed = dataclasses.replace(settings, sentry_environment="Prod EU")
    assert telemetry.monitor_slug(changed, "prune") == "mwai-prune-prod-eu"


def test_cron_job_sends_in_progress_then_ok(settings: Settings,
                                            sentry_inbox: SentryInbox) -> None:
    configured = sentry_settings(settings, sentry_inbox.server_address[1])
    with telemetry.cron_job(configured, "prune"):
        pass
    with pytest.raises(ValueError), telemetry.cron_job(configured, "alert"):
        raise ValueError("boom")
    sentry_sdk.flush(timeout=5)
    checkins = [payload for raw in sentry_inbox.envelopes
                for header, payload in parse_envelope(raw) if header.get("type") == "check_in"]
    assert [(c["monitor_slug"], c["status"]) for c in checkins] == [
        ("mwai-prune-test", "in_progress"), ("mwai-prune-test", "ok"),
        ("mwai-alert-test", "in_progress"), ("mwai-alert-test", "error")]
    assert checkins[0]["check_in_id"] == checkins[1]["check_in_id"]


def checkins_of(inbox: SentryInbox, slug: str) -> list[str]:
    return [payload["status"] for raw in list(inbox.envelopes)
            for header, payload in parse_envelope(raw)
            if header.get("type") == "check_in" and payload.get("monitor_slug") == slug]


async def test_lease_recovery_checks_in_ok_after_a_pass_and_error_when_it_fails(
        aiohttp_client: Any, settings: Settings, sentry_inbox: SentryInbox,
        monkeypatch: pytest.MonkeyPatch) -> None:
    configured = dataclasses.replace(sentry_settings(settings, sentry_inbox.server_address[1]),
                                     recovery_interval_s=0.05)
    assert telemetry.init_sentry(configured)
    # A run whose owner died without a trace: the recovery pass at start takes it back.
    dead = Store(configured.db)
    await dead.open()
    await dead.enqueue("LOST-9", "{}")
    claimed = await dead.claim("elsewhere:1:x/w1", lease_s=0.0)
    assert claimed is not None
    await dead.close()
    app = create_app(configured)
    await aiohttp_client(app)
    slug = "mwai-lease-recovery-test"

    def flushed(statuses: list[str]) -> bool:
        sentry_sdk.flush(timeout=5)
        return checkins_of(sentry_inbox, slug)[:len(statuses)] == statuses

    await wait_for(lambda: flushed(["ok"]), what="the ok check-in of the first pass")
    assert db_rows(configured.db, "SELECT message FROM events WHERE run_id=? AND message "
                   "LIKE 'Lease expired%'", (claimed.id,)) == [("Lease expired; worker lost",)]

    async def broken(max_attempts: int) -> list[Any]:
        raise StoreError("database is locked")

    monkeypatch.setattr(app[STORE_KEY], "recover_expired", broken)
    await wait_for(lambda: flushed(["ok", "error"]), what="the error check-in of a failed pass")
