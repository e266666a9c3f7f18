"""`mwai serve` speaks the systemd notify protocol (as Type=notify + WatchdogSec= expect)."""

from __future__ import annotations

import os
import signal
import socket
import uuid
from pathlib import Path

import pytest

from mwai.server.sdnotify import Notifier
from tests.acceptance.service import Service

pytestmark = pytest.mark.slow

WATCHDOG_USEC = 300_000  # pings every 0.15 s


def receive(sock: socket.socket, timeout_s: float = 15.0) -> str:
    sock.settimeout(timeout_s)
    return sock.recv(4096).decode()


def messages_until(sock: socket.socket, wanted: str, limit: int = 500) -> list[str]:
    seen: list[str] = []
    for _ in range(limit):
        message = receive(sock)
        seen.append(message)
        if wanted in message.splitlines():
            return seen
    raise AssertionError(f"{wanted} not received; got {seen}")


def bound_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    return sock


def run_protocol(tmp_path: Path, sock: socket.socket, notify_socket: str) -> None:
    service = Service(tmp_path, NOTIFY_SOCKET=notify_socket, WATCHDOG_USEC=str(WATCHDOG_USEC))
    service.start()
    try:
        first = receive(sock)
        assert "READY=1" in first.splitlines(), first
        # By READY=1 the HTTP server answers (systemd may start dependents now).
        assert service.get("/health")[0] == 200
        pings = [receive(sock) for _ in range(3)]
        assert pings == ["WATCHDOG=1"] * 3
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        tail = messages_until(sock, "STOPPING=1")
        assert set(tail[:-1]) <= {"WATCHDOG=1"}, tail
        assert service.proc.wait(timeout=20) == 0
    finally:
        service.stop()


def test_ready_watchdog_and_stopping_over_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with bound_socket(str(path)) as sock:
        run_protocol(tmp_path, sock, str(path))


def test_abstract_namespace_socket(tmp_path: Path) -> None:
    name = f"mwai-test-{uuid.uuid4().hex}"
    with bound_socket("\0" + name) as sock:
        run_protocol(tmp_path, sock, "@" + name)


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_watchdog_meant_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000",
           "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(env).watchdog_interval_s is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_environ(env).watchdog_interval_s == 1.0


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    assert Notifier(str(tmp_path / "missing.sock")).ready() is False
    assert "Could not notify systemd" in caplog.text
