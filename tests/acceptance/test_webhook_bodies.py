"""`mwai serve` takes every real-shaped Jira body (tests/contracts/jira_webhooks): each one
is answered 200 and becomes a run of its issue. Native webhooks are signed as Jira Cloud
signs them (X-Hub-Signature: sha256=HMAC of the body with the webhook's secret)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.acceptance.service import Service
from tests.conftest import SECRET

BODIES = Path(__file__).parents[1] / "contracts" / "jira_webhooks"


def post_raw(service: Service, body: bytes, headers: dict[str, str]
             ) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(service.url + "/webhook/jira", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def finished_runs(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as connection:
        return dict(connection.execute("SELECT issue_key, status FROM runs").fetchall())


def test_serve_accepts_every_builtin_and_native_body(tmp_path: Path) -> None:
    service = Service(tmp_path, name="bodies").start()
    try:
        expected: dict[str, str] = {}
        for path in sorted(BODIES.glob("*.json")):
            body = path.read_bytes()
            document = json.loads(body)
            if "webhookEvent" in document:
                digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                headers = {"X-Hub-Signature": f"sha256={digest}",
                           "X-Atlassian-Webhook-Identifier": f"delivery-{path.stem}"}
            else:
                headers = {"X-Moveware-Webhook-Secret": SECRET}
            status, answer = post_raw(service, body, headers)
            assert (path.name, status, answer.get("ok")) == (path.name, 200, True), answer
            key = (document.get("issue") or {}).get("key") or document.get("key") or next(
                value for name, value in document.items()
                if name in ("issue_key", "issueKey") and value)
            expected[key] = "completed"

        deadline = time.monotonic() + 20
        while finished_runs(service.db) != expected and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the runs table for a bounded time
        assert finished_runs(service.db) == expected
        assert len(expected) == len(list(BODIES.glob("*.json")))
    finally:
        service.stop()
