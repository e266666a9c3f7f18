"""The database's disk fills up, turns read-only, or is locked by another process.

Against a live `mwai serve`, with real faults: a database on a small tmpfs that a
filler file fills up (mounted in a user and mount namespace of its own, `unshare
-rm`: no privilege needed); database files and directory made immutable (chattr +i:
even root's open file descriptors cannot write; needs CAP_LINUX_IMMUTABLE, so it is
on the CI allow-list of tests/conftest.py); another process holding an exclusive
lock for 3 s. Webhooks get 503 + Retry-After while the fault lasts, every webhook
answered 200 is stored and its run completes, the service recovers by itself once
the fault is gone, and PRAGMA integrity_check is ok.

A read-only bind mount cannot stand in for chattr: the kernel refuses to make a
mount read-only while a file on it is open for writing ("mount point is busy"),
and the service holds its database open. tests/integration/test_write_faults.py
proves both faults without privilege on the served writer connection (SQLITE_FULL
through PRAGMA max_page_count, SQLITE_READONLY through PRAGMA query_only).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.service import Service
from tests.acceptance.test_serve_core import wait_until_idle
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

DISK_SIZE = "6m"
# Long enough that a run finishing during the fault cannot record its outcome with
# the first retries (the worker must keep trying, or lease recovery take it over).
FULL_FOR_S = 18.0


# Runs the rest of the command line in a new user and mount namespace, on a tmpfs of
# DISK_SIZE mounted at $0 that only it (and /proc/PID/root) sees.
ON_SMALL_DISK = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                 f'mount -t tmpfs -o size={DISK_SIZE} tmpfs "$0" && exec "$@"']


READ_IN_NAMESPACE = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(json.dumps(conn.execute(sys.argv[2]).fetchall()))
"""


def namespace_rows(service: Service, sql: str) -> list[list[Any]]:
    """Rows read inside the service's namespaces: SQLite resolves /proc/PID/root to
    this process's own files, so the reads run there (nsenter), as an operator's would."""
    assert service.proc is not None
    done = subprocess.run(
        ["nsenter", "--target", str(service.proc.pid), "--user", "--mount",
         "--preserve-credentials", sys.executable, "-c", READ_IN_NAMESPACE,
         str(service.env["MWAI_DB"]), sql], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout))


def wait_until_idle_in_namespace(service: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    sql = "SELECT count(*) FROM runs WHERE status IN ('queued', 'running')"
    while namespace_rows(service, sql) != [[0]]:
        assert time.monotonic() < deadline, namespace_rows(service, sql)
        time.sleep(0.1)


def check_database_in_namespace(service: Service, acked: list[str]) -> None:
    assert namespace_rows(service, "PRAGMA integrity_check") == [["ok"]]
    rows = dict(namespace_rows(service, "SELECT issue_key, status FROM runs"))
    missing = [key for key in acked if key not in rows]
    assert not missing, f"acknowledged but not stored: {missing}"
    assert {rows[key] for key in acked} == {"completed"}


def service_on_small_disk(tmp_path: Path, **env: str) -> tuple[Service, Path]:
    """`mwai serve` with its database on a small tmpfs of its own namespace; returns
    it and the disk as this process sees it (through /proc/PID/root: files only)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    service = Service(tmp_path, processor="slow:0.3", db=mount_point / "mwai.sqlite3", **env)
    service.argv = [*ON_SMALL_DISK, str(mount_point), *service.argv]
    service.start()
    assert service.proc is not None
    disk = Path(f"/proc/{service.proc.pid}/root{mount_point}")
    assert (disk / "mwai.sqlite3").exists(), service.output()
    assert not (mount_point / "mwai.sqlite3").exists(), "the tmpfs was not mounted"
    return service, disk


class Client:
    """Posts webhooks and remembers which keys were acknowledged."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.acked: list[str] = []
        self.statuses: list[int] = []
        self.number = 0

    def post(self, prefix: str, padding: int = 2000) -> tuple[int, dict[str, str], dict]:
        self.number += 1
        key = f"{prefix}-{self.number}"
        body = json.dumps({"issue_key": key, "event_type": "fault", "pad": "x" * padding})
        request = urllib.request.Request(
            self.service.url + "/webhook/jira", data=body.encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Moveware-Webhook-Secret": SECRET})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, headers, raw = answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            status, headers, raw = exc.code, dict(exc.headers), exc.read()
        document = json.loads(raw)
        self.statuses.append(status)
        assert status in (200, 503), (status, document)
        if status == 200:
            self.acked.append(key)
        else:
            assert document["ok"] is False and "retry later" in document["error"]
            assert int(headers["Retry-After"]) >= 1
        return status, headers, document

    def until(self, prefix: str, wanted: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.post(prefix)[0] == wanted:
                return
            time.sleep(0.05)
        raise AssertionError(f"no {wanted} within {timeout_s} s; statuses {self.statuses[-20:]}")


def fill(disk: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free space)."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
                os.fsync(handle.fileno())
    return filler


def check_database(db: Path, acked: list[str]) -> None:
    conn = sqlite3.connect(str(db))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute("SELECT issue_key, status FROM runs"))
    finally:
        conn.close()
    missing = [key for key in acked if key not in rows]
    assert not missing, f"acknowledged but not stored: {missing}"
    assert {rows[key] for key in acked} == {"completed"}


def assert_healthy(service: Service) -> None:
    status, health = service.get("/health/detailed")
    assert status == 200 and health["status"] == "healthy", health


def test_disk_full_answers_503_loses_nothing_and_recovers_by_itself(tmp_path: Path) -> None:
    service, disk = service_on_small_disk(tmp_path, MWAI_DB_BUSY_TIMEOUT_MS="200",
                                          MWAI_WORKERS="4")
    client = Client(service)
    try:
        for _ in range(8):
            assert client.post("BEFORE")[0] == 200
        filler = fill(disk)
        client.until("FULL", 503, timeout_s=30)  # the WAL's free room runs out first
        full_until = time.monotonic() + FULL_FOR_S
        while time.monotonic() < full_until:
            client.post("FULL")
            time.sleep(0.2)
        assert client.statuses.count(503) >= 10
        assert service.get("/health")[0] == 200  # the process itself stays up
        status, health = service.get("/health/detailed")
        assert status == 200 and health["status"] == "degraded", health
        assert any("refuses writes" in problem and "full" in problem
                   for problem in health["problems"]), health
        filler.unlink()
        client.until("AFTER", 200, timeout_s=10)
        for _ in range(5):
            assert client.post("AFTER")[0] == 200
        wait_until_idle_in_namespace(service, timeout_s=40)
        assert_healthy(service)
        check_database_in_namespace(service, client.acked)  # the tmpfs goes with the service
    finally:
        assert service.stop() == 0
    assert SECRET not in service.output()


@contextlib.contextmanager
def immutable(paths: list[Path]) -> Iterator[None]:
    """chattr +i: not even root (nor an already open file descriptor) may write them."""
    done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
        pytest.skip(f"cannot make files immutable here (needs root, ext4): {done.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *map(str, paths)], check=True)


def test_database_made_read_only_answers_503_then_recovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    service = Service(tmp_path, db=data_dir / "mwai.sqlite3",
                      MWAI_DB_BUSY_TIMEOUT_MS="200").start()
    client = Client(service)
    try:
        for _ in range(5):
            assert client.post("RW")[0] == 200
        wait_until_idle(service.db)
        files = sorted(data_dir.iterdir()) + [data_dir]  # db, -wal, -shm and the directory
        with immutable(files):
            for _ in range(10):
                assert client.post("RO")[0] == 503
                time.sleep(0.2)
            assert service.get("/health")[0] == 200
            assert service.get("/health/detailed")[1]["status"] == "degraded"
        client.until("BACK", 200, timeout_s=10)
        for _ in range(5):
            assert client.post("BACK")[0] == 200
        wait_until_idle(service.db)
        assert_healthy(service)
    finally:
        assert service.stop() == 0
    check_database(service.db, client.acked)


def test_database_locked_by_another_process_for_seconds(tmp_path: Path) -> None:
    service = Service(tmp_path, MWAI_DB_BUSY_TIMEOUT_MS="200").start()
    client = Client(service)
    try:
        assert client.post("UNLOCKED")[0] == 200
        wait_until_idle(service.db)
        locker = subprocess.Popen(
            ["python3", "-c", "import sqlite3, sys, time\n"
             "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "conn.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
             "time.sleep(3); conn.execute('ROLLBACK')", str(service.db)],
            stdout=subprocess.PIPE, text=True)
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked = []
        while locker.poll() is None:
            locked.append(client.post("LOCKED")[0])
            time.sleep(0.1)
        assert locker.wait() == 0
        assert 503 in locked
        client.until("UNLOCKED", 200, timeout_s=10)
        wait_until_idle(service.db)
        assert_healthy(service)
    finally:
        assert service.stop() == 0
    check_database(service.db, client.acked)
