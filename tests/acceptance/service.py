"""Run `mwai serve` as a real subprocess on 127.0.0.1 for acceptance tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import SECRET

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(db: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWAI_", "JIRA_"))}
    env.update({
        "JIRA_WEBHOOK_SECRET": SECRET,
        "MWAI_DB": str(db),
        "MWAI_LISTEN": f"127.0.0.1:{port}",
        "MWAI_PROCESSOR": "noop",
        "MWAI_WORKERS": "4",
        "MWAI_HEARTBEAT_S": "0.5",
        "MWAI_POLL_S": "0.5",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


class Service:
    """`mwai serve` (or a wrapper with a custom processor) with its output in a file."""

    def __init__(self, tmp_path: Path, *, processor: str | None = None, name: str = "serve",
                 db: Path | None = None, port: int | None = None, **env: str) -> None:
        self.db = db or tmp_path / "mwai.sqlite3"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"{name}.log"
        self.env = service_env(self.db, self.port, **env)
        if processor is None:
            self.argv = [sys.executable, "-m", "mwai", "serve"]
        else:
            self.argv = [sys.executable, str(HERE / "serve_with.py"), processor]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> Service:
        self._log = open(self.log_path, "ab")  # closed in wait()/stop()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n"
                                     + self.log_path.read_text())
            try:
                status, _ = self.get("/health")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("service did not become ready:\n" + self.log_path.read_text())

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def post_webhook(self, payload: dict[str, Any], secret: str = SECRET,
                     headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.url + "/webhook/jira", data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "X-Moveware-Webhook-Secret": secret,
                     **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout_s)
        self._log.close()
        return code

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._log.close()
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait()

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")
