"""The systemd notify protocol (sd_notify(3)), without a dependency.

``Type=notify`` units learn from these datagrams that mwai is ready (it listens
and the workers run), that it is stopping, and that it is alive (watchdog
pings). The socket path comes from ``$NOTIFY_SOCKET``: a filesystem path, or
``@name`` for the abstract namespace. Outside systemd nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mwai.logs import SDNOTIFY_LOGGER

log = logging.getLogger(SDNOTIFY_LOGGER)


@dataclass(frozen=True)
class Notifier:
    """Sends sd_notify messages to ``socket_path`` (None: disabled)."""

    socket_path: str | None = None
    watchdog_interval_s: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        """Read NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as systemd sets them."""
        path = environ.get("NOTIFY_SOCKET") or None
        return cls(path, _watchdog_interval_s(environ, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, message: str) -> bool:
        """Send one datagram; False (and a warning) if it could not be delivered."""
        if self.socket_path is None:
            return False
        address = _address(self.socket_path)
        if address is None:
            log.warning("NOTIFY_SOCKET is not a unix socket path; not notifying systemd",
                        extra={"notify_socket": self.socket_path})
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(message.encode("utf-8"))
        except OSError as exc:
            log.warning("Could not notify systemd", extra={
                "notify_socket": self.socket_path, "error": str(exc)})
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


def _address(path: str) -> str | None:
    if path.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@'.
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None


def _watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    raw = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    # WATCHDOG_PID names the process the watchdog is meant for (not a child of it).
    if owner and owner.isdigit() and int(owner) != pid:
        return None
    if not raw.isdigit() or int(raw) == 0:
        return None
    return int(raw) / 1_000_000


async def watchdog_loop(notifier: Notifier, healthy: Callable[[], bool]) -> None:
    """Ping every WATCHDOG_USEC/2 while ``healthy()``; stop pinging when it is not.

    The ping comes from the event loop itself, so a blocked loop misses it too and
    systemd restarts the service (WatchdogSec=).
    """
    if notifier.watchdog_interval_s is None:
        return
    period_s = notifier.watchdog_interval_s / 2
    was_healthy = True
    while True:
        ok = healthy()
        if ok:
            notifier.watchdog()
        elif was_healthy:
            log.error("Not healthy: watchdog pings withheld, systemd will restart mwai")
        was_healthy = ok
        await asyncio.sleep(period_s)


def start_watchdog(notifier: Notifier, healthy: Callable[[], bool]) -> asyncio.Task[None] | None:
    if notifier.watchdog_interval_s is None or not notifier.enabled:
        return None
    return asyncio.create_task(watchdog_loop(notifier, healthy), name="mwai-watchdog")


async def stop_watchdog(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
