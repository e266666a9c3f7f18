"""mwai unlock / prune / alert / check --connect in-process, against a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import mwai.queue.clock
from mwai.cli import actions, probes
from mwai.cli import alert as alerts
from mwai.cli import common as ops
from mwai.cli import prune as prunes
from mwai.demo.fakes.jira import FakeJira
from mwai.queue.store import Store
from mwai.settings import Settings
from tests.integration.helpers import count, db_rows

DAY_S = 86400.0
# A guard against a hanging command, not a speed requirement.
COMMAND_GUARD_S = 60


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
    store = Store(settings.db, synchronous="OFF")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@contextlib.contextmanager
def clock_at(monkeypatch: pytest.MonkeyPatch, epoch_s: float) -> Iterator[None]:
    """The store's clock set back: rows written meanwhile look old."""
    monkeypatch.setattr(mwai.queue.clock, "now_s", lambda: epoch_s)
    try:
        yield
    finally:
        monkeypatch.setattr(mwai.queue.clock, "now_s", time.time)


async def finished_run(store: Store, issue_key: str, status: str = "completed") -> int:
    await store.enqueue(issue_key, "{}", delivery_id=f"d-{issue_key}")
    run = await store.claim("test:1:abc/w1", 60)
    assert run is not None and run.issue_key == issue_key
    await store.add_event(run.id, "Working", detail=issue_key)
    if status == "failed":
        await store.fail(run.id, run.worker, f"boom in {issue_key}")
    else:
        await store.complete(run.id, run.worker)
    return run.id


def record_process(db: str, process_id: str, pid: int, hostname: str,
                   heartbeat_at: float) -> None:
    """A `mwai serve` process as another process would have registered it (the store
    only ever registers its own)."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(
                "INSERT INTO processes (process_id, pid, hostname, started_at, heartbeat_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (process_id) DO UPDATE SET "
                "heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
                (process_id, pid, hostname, heartbeat_at, heartbeat_at))
    finally:
        conn.close()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ------------------------------------------------------------------ unlock


async def mwai_command(*argv: str) -> tuple[int, str, str]:
    """The `mwai` program in its own process, as an operator runs it on the server."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mwai", *argv, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_GUARD_S)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_unlock_releases_locks_of_dead_processes_only(settings: Settings) -> None:
    host = socket.gethostname()
    gone = dead_pid()
    dead_id, live_id = f"{host}:{gone}:dead01", "other-host:1:live01"
    async with opened(settings) as store:
        now = time.time()
        record_process(settings.db, dead_id, gone, host, now - 3600)
        record_process(settings.db, live_id, 1, "other-host", now)
        await store.enqueue("DEAD-1", "{}")
        dead_run = await store.claim(f"{dead_id}/w1", 3600)
        await store.enqueue("LIVE-1", "{}")
        live_run = await store.claim(f"{live_id}/w2", 3600)
        assert dead_run is not None and live_run is not None

    def locks() -> list[tuple[Any, ...]]:
        return db_rows(settings.db, "SELECT id, status, locked_by FROM runs ORDER BY id")

    before = locks()
    assert before == [(dead_run.id, "running", dead_run.worker),
                      (live_run.id, "running", live_run.worker)]

    # The locks were taken just now: the default --older-than (10m) keeps both.
    code, out, err = await mwai_command("unlock", "--db", settings.db, "--json")
    assert (code, err) == (0, "")
    listed = json.loads(out)
    assert listed["stale"] == []
    assert sorted(r["id"] for r in listed["kept"]) == [dead_run.id, live_run.id]
    assert locks() == before

    code, out, err = await mwai_command("unlock", "--db", settings.db, "--older-than", "0s",
                                        "--dry-run", "--json")
    assert (code, err) == (0, "")
    listed = json.loads(out)
    assert [(r["id"], r["outcome"]) for r in listed["stale"]] == [(dead_run.id, None)]
    assert f"pid {gone}" in listed["stale"][0]["reason"]
    assert "is gone" in listed["stale"][0]["reason"]
    assert [(r["id"], r["reason"]) for r in listed["kept"]] == [
        (live_run.id, "heartbeat is fresh")]
    assert locks() == before  # a dry run writes nothing

    code, out, err = await mwai_command("unlock", "--db", settings.db, "--older-than", "0s",
                                        "--by", "frank")
    assert (code, err) == (0, "")
    assert f"run {dead_run.id} (DEAD-1, running) locked by {dead_run.worker}" in out
    assert "released -> queued" in out
    # Who released it is in the run's event.
    assert db_rows(settings.db, "SELECT message, json_extract(meta_json, '$.by') FROM events "
                                "WHERE run_id = ? AND message LIKE 'Stale lock%'",
                   (dead_run.id,)) == [("Stale lock released by frank", "frank")]
    assert f"run {live_run.id} (LIVE-1) locked by {live_run.worker}: kept (heartbeat is " \
        "fresh)" in out
    assert locks() == [(dead_run.id, "queued", None), (live_run.id, "running", live_run.worker)]


async def test_unlock_never_touches_a_lock_whose_process_heartbeat_became_fresh(
        settings: Settings) -> None:
    # Another host: only the heartbeat can tell (on this host a gone pid is dead at once,
    # whatever its heartbeat; test_liveness_kill9.py).
    host = "another-host.internal"
    process_id = f"{host}:{dead_pid()}:late01"
    async with opened(settings) as store:
        record_process(settings.db, process_id, dead_pid(), host, time.time() - 3600)
        await store.enqueue("LATE-1", "{}")
        run = await store.claim(f"{process_id}/w1", 3600)
        assert run is not None
        stale, _ = await actions.find_locks(store, settings, older_than_s=0)
        assert len(stale) == 1
        # The process heartbeats between the listing and the release.
        record_process(settings.db, process_id, 1, host, time.time())
        released = await store.release_stale_locks(
            [(run.id, run.worker)], ops.fresh_after_s(settings, time.time()), 3, by="test")
        assert released == []
        assert (await store.get_run(run.id))["status"] == "running"


# ------------------------------------------------------------------ prune


async def test_prune_deletes_exactly_the_old_finished_runs_and_their_events(
        settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    now = time.time()
    async with opened(settings) as store:
        with clock_at(monkeypatch, now - 40 * DAY_S):
            old = [await finished_run(store, f"OLD-{n}", "failed" if n % 2 else "completed")
                   for n in range(7)]
            await store.enqueue("OLDR-1", "{}")  # old but still running: never pruned
            old_running = await store.claim("test:1:abc/w1", 10 * DAY_S)
            assert old_running is not None and old_running.issue_key == "OLDR-1"
            await store.enqueue("OLDQ-1", "{}")  # old but queued (retry due later)
            queued = await store.claim("test:1:abc/w2", 10 * DAY_S)
            assert queued is not None and queued.issue_key == "OLDQ-1"
            await store.retry_later(queued.id, queued.issue_key, "later", 60 * DAY_S,
                                    queued.attempts)
        recent = await finished_run(store, "NEW-1")
        archive = tmp_path / "archive.jsonl"
        runs, events = await prunes.prune(store, now - 30 * DAY_S, batch_size=3, archive=archive,
                                       pause_min_s=0)
        assert runs == 7
        remaining = {row.issue_key: row.status for row in
                     await store.recent_runs(since=0, limit=100)}
    assert remaining == {"OLDQ-1": "queued", "OLDR-1": "running", "NEW-1": "completed"}
    assert events == 7 * 5  # received, enqueued, claimed, Working, finished
    old_list = ",".join(map(str, old))
    assert db_rows(settings.db, f"SELECT count(*) FROM events WHERE run_id IN ({old_list})"
                   )[0][0] == 0
    assert db_rows(settings.db, f"SELECT count(*) FROM deliveries WHERE run_id IN ({old_list})"
                   )[0][0] == 0
    assert db_rows(settings.db, "SELECT count(*) FROM events WHERE run_id = ?",
                   (recent,))[0][0] == 5
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == old
    first = next(line for line in lines if line["id"] == old[1])
    assert first["status"] == "failed" and first["last_error"] == "boom in OLD-1"
    assert [e["message"] for e in first["events"]][:2] == ["Webhook received", "Run enqueued"]
    assert first["created_at_iso"].endswith("Z")


async def test_prune_with_nothing_old_changes_nothing(settings: Settings) -> None:
    async with opened(settings) as store:
        await finished_run(store, "NEW-1")
        before = count(settings.db, "events")
        assert await prunes.prune(store, time.time() - DAY_S, 10, None, 0) == (0, 0)
        skipped = await prunes.vacuum_if_worth_it(store)  # nothing freed: no full rewrite
    assert skipped is not None and "of the file is free space" in skipped
    assert count(settings.db, "events") == before


# ------------------------------------------------------------------ alert notifiers


class Receiver:
    """A webhook / Slack endpoint on 127.0.0.1 that records what it gets."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(status=self.status, text="ok")

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


class FakeSmtp:
    """Just enough SMTP (RFC 5321) to receive one message."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> None:
        writer.write(b"220 fake ESMTP\r\n")
        while line := await reader.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "DATA":
                writer.write(b"354 go on\r\n")
                data = []
                while (part := await reader.readline()) not in (b".\r\n", b""):
                    data.append(part.decode())
                self.messages.append("".join(data))
                writer.write(b"250 queued\r\n")
            elif verb == "QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_every_notifier_delivers_the_alert(settings_factory: Any, tmp_path: Path
                                                 ) -> None:
    receiver, smtp = Receiver(), FakeSmtp()
    await receiver.server.start_server()
    await smtp.start()
    out = tmp_path / "alert.json"
    settings = settings_factory(
        alert_webhook_url=receiver.url("/hook"),
        alert_slack_webhook_url=receiver.url("/services/T000/B000/XXXX"),
        alert_email_to=("ops@example.com",), alert_smtp_host="127.0.0.1",
        alert_smtp_port=smtp.port, alert_command=f"cat > {out}")
    try:
        async with opened(settings) as store:
            await finished_run(store, "FAIL-7", "failed")
            alert = await alerts.collect_alert(store, settings, 3600, 1)
        assert alert["firing"] and alert["failed_count"] == 1
        failures = await alerts.notify_all(settings, alert)
    finally:
        await receiver.server.close()
        await smtp.close()
    assert failures == []
    generic, slack = receiver.bodies
    assert generic["failed_runs"][0]["issue_key"] == "FAIL-7"
    assert generic["failed_runs"][0]["last_error"] == "boom in FAIL-7"
    assert "FAIL-7" in slack["text"] and set(slack) == {"text"}
    assert "Subject: [mwai alert] mwai: 1 failed run(s)" in smtp.messages[0]
    assert "To: ops@example.com" in smtp.messages[0]
    assert json.loads(out.read_text())["fingerprint"] == alert["fingerprint"]


async def test_a_failing_notifier_is_reported_without_its_secret_url(
        settings_factory: Any) -> None:
    receiver = Receiver(status=400)
    await receiver.server.start_server()
    secret_url = receiver.url("/services/T000/B000/secret-token-123")
    settings = settings_factory(alert_slack_webhook_url=secret_url,
                                alert_command="echo 'no route' >&2; exit 4")
    try:
        failures = await alerts.notify_all(settings, alerts.unit_alert("mwai.service"))
    finally:
        await receiver.server.close()
    assert [name for name, _ in failures] == ["MWAI_ALERT_SLACK_WEBHOOK_URL",
                                              "MWAI_ALERT_COMMAND"]
    assert "answered 400" in failures[0][1] and "secret-token-123" not in failures[0][1]
    assert "status 4: no route" in failures[1][1]


async def test_the_same_alert_is_not_resent_within_the_cooldown(
        settings_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    receiver = Receiver()
    await receiver.server.start_server()
    settings = settings_factory(alert_webhook_url=receiver.url("/hook"),
                                alert_cooldown_s=3600)
    try:
        async with opened(settings) as store:
            await finished_run(store, "FAIL-1", "failed")
        assert await alerts.run_alert(settings, 3600, 1, as_json=False) == 1
        assert await alerts.run_alert(settings, 3600, 1, as_json=False) == 1
        assert len(receiver.bodies) == 1
        assert "not re-sent before" in capsys.readouterr().out
        async with opened(settings) as store:  # a new failure is a new alert
            await finished_run(store, "FAIL-2", "failed")
        assert await alerts.run_alert(settings, 3600, 1, as_json=False) == 1
        assert len(receiver.bodies) == 2
        assert receiver.bodies[1]["failed_count"] == 2
        assert await alerts.run_alert(settings, 3600, 3, as_json=False) == 0
    finally:
        await receiver.server.close()


# ------------------------------------------------------------------ check --connect


async def test_check_connect_calls_each_configured_service(settings_factory: Any) -> None:
    seen: dict[str, dict[str, str]] = {}

    async def myself(request: web.Request) -> web.Response:
        seen["jira"] = dict(request.headers)
        return web.json_response({"accountId": "ai-1", "displayName": "AI Runner"})

    async def user(request: web.Request) -> web.Response:
        seen["github"] = dict(request.headers)
        if request.headers.get("Authorization") != "Bearer gh-token":
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"login": "mwai-bot"})

    async def models(request: web.Request) -> web.Response:
        seen["anthropic"] = dict(request.headers)
        return web.json_response({"data": [{"id": "claude-sonnet-4-5", "type": "model"}],
                                  "has_more": False})

    app = web.Application()
    app.router.add_get("/rest/api/3/myself", myself)
    app.router.add_get("/user", user)
    app.router.add_get("/v1/models", models)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        settings = settings_factory(
            jira_base_url=base, jira_email="ai@example.com", jira_api_token="jira-token",
            jira_ai_account_id="ai-1", github_api_url=base, gh_token="wrong-token",
            anthropic_base_url=base, anthropic_api_key="sk-ant-test")
        results = {r["service"]: r for r in await probes.check_connections(settings)}
    finally:
        await server.close()
    assert results["jira"] == {"service": "jira", "ok": True,
                               "detail": "authenticated as AI Runner"}
    assert results["github"]["ok"] is False
    assert "401" in results["github"]["detail"] and "Bad credentials" in \
        results["github"]["detail"]
    assert "wrong-token" not in results["github"]["detail"]
    assert results["llm (anthropic)"]["ok"] is True
    assert "model claude-sonnet-4-5 listed" in results["llm (anthropic)"]["detail"]
    assert seen["jira"]["Authorization"].startswith("Basic ")
    assert seen["github"]["X-GitHub-Api-Version"] == "2022-11-28"
    assert seen["anthropic"]["x-api-key"] == "sk-ant-test"
    assert seen["anthropic"]["anthropic-version"] == "2023-06-01"


async def test_check_connect_skips_services_that_are_not_configured(settings: Settings
                                                                    ) -> None:
    results = await probes.check_connections(settings)
    assert [(r["service"], r["ok"]) for r in results] == [
        ("jira", None), ("github", None), ("llm (anthropic)", None)]
    assert "JIRA_BASE_URL" in results[0]["detail"]


async def test_check_connect_to_data_center_with_a_personal_access_token(
        settings_factory: Any) -> None:
    async with FakeJira(data_center=True, ai_account_id="ai-runner") as jira:
        settings = settings_factory(**jira.settings_changes())
        (result, *_) = await probes.check_connections(settings)
        wrong = settings_factory(**{**jira.settings_changes(), "jira_ai_account_id": "other"})
        (warned, *_) = await probes.check_connections(wrong)
    assert result == {"service": "jira", "ok": True, "detail": "authenticated as AI Runner"}
    assert "warning: name ai-runner is not JIRA_AI_ACCOUNT_ID other" in warned["detail"]
    assert all(record.auth_ok for record in jira.requests)
