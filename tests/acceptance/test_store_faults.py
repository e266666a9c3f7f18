"""The database's disk fills up, turns read-only, or is locked by another process.

Against a live `mwai serve`: a database on a small tmpfs that a filler file fills
up; database files and directory made immutable (chattr +i: even root's open file
descriptors cannot write); another process holding an exclusive lock for 3 s. The
first two need root and are skipped without it. Webhooks get 503 + Retry-After while
the fault lasts, every webhook answered 200 is stored and its run completes, the
service recovers by itself once the fault is gone, and PRAGMA integrity_check is ok.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.service import Service
from tests.acceptance.test_serve_core import wait_until_idle
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

DISK_SIZE = "6m"
# Long enough that a run finishing during the fault cannot record its outcome with
# the first retries (the worker must keep trying, or lease recovery take it over).
FULL_FOR_S = 18.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs",
                           str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount_point)], capture_output=True)
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


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


def test_disk_full_answers_503_loses_nothing_and_recovers_by_itself(small_disk: Path) -> None:
    service = Service(small_disk.parent, processor="slow:0.3", db=small_disk / "mwai.sqlite3",
                      MWAI_DB_BUSY_TIMEOUT_MS="200", MWAI_WORKERS="4").start()
    client = Client(service)
    try:
        for _ in range(8):
            assert client.post("BEFORE")[0] == 200
        filler = fill(small_disk)
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
        wait_until_idle(service.db, timeout_s=40)
        assert_healthy(service)
    finally:
        assert service.stop() == 0
    check_database(service.db, client.acked)
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
