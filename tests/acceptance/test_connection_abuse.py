"""Connection abuse against a live `mwai serve` on 127.0.0.1, bounded in count and time.

Slow clients (a body a byte at a time), many idle connections, half-sent headers,
bodies over the limit with and without Content-Length, oversized headers: the
service keeps acknowledging normal webhooks meanwhile (latency is measured and
printed, not asserted: timing targets belong to `mwai bench`), closes what never
completes after MWAI_CLIENT_TIMEOUT_S, and its file descriptors and memory come
back near their baseline.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.service import Service
from tests.acceptance.test_serve_core import wait_until_idle
from tests.conftest import SECRET

pytestmark = pytest.mark.slow

CLIENT_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 4096
IDLE_CONNECTIONS = 200
HALF_HEADER_CONNECTIONS = 50
SLOW_CLIENTS = 20
RSS_MARGIN_KB = 30 * 1024
FD_MARGIN = 4


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = Service(tmp_path_factory.mktemp("abuse"), MWAI_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
                      MWAI_CLIENT_TIMEOUT_S=str(CLIENT_TIMEOUT_S)).start()
    yield running
    assert running.stop() == 0
    output = running.output()
    assert SECRET not in output
    assert "Traceback" not in output and "Unhandled error" not in output


# ------------------------------------------------------------------- helpers

def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def pid(service: Service) -> int:
    assert service.proc is not None
    return service.proc.pid


def connect(service: Service, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=timeout_s)
    return sock


def body_for(key: str) -> bytes:
    return json.dumps({"issue_key": key, "event_type": "abuse-test"}).encode()


def request_head(length: int | None, extra: str = "") -> bytes:
    lines = ["POST /webhook/jira HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"X-Moveware-Webhook-Secret: {SECRET}", "Connection: close"]
    lines.append(f"Content-Length: {length}" if length is not None
                 else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer (Content-Length or until close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def post_normal(service: Service, key: str, acked: list[str]) -> tuple[int, float]:
    """Posts a normal webhook; a key answered 200 joins ``acked`` (the test's own)."""
    started = time.monotonic()
    status, _ = service.post_webhook({"issue_key": key, "event_type": "normal"})
    if status == 200:
        acked.append(key)
    return status, time.monotonic() - started


def assert_stored(service: Service, acked: list[str]) -> None:
    """Every webhook this test saw answered 200 is a run, and every run finished."""
    wait_until_idle(service.db)
    assert acked and set(acked) <= set(stored_keys(service.db)), acked


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """True once the server closed its end (EOF or reset), or answered and closed."""
    sock.settimeout(timeout_s)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def wait_for_baseline(service: Service, fds: int, timeout_s: float = 10.0) -> int:
    deadline = time.monotonic() + timeout_s
    now = open_fds(pid(service))
    while now > fds + FD_MARGIN and time.monotonic() < deadline:
        time.sleep(0.1)
        now = open_fds(pid(service))
    return now


def baseline(service: Service, acked: list[str]) -> tuple[int, int]:
    """fds and RSS once warm: a few webhooks answered and processed."""
    for number in range(20):
        assert post_normal(service, f"WARM-{number + 1}", acked)[0] == 200
    wait_until_idle(service.db)
    time.sleep(0.2)
    return open_fds(pid(service)), rss_kb(pid(service))


def report(label: str, latencies_s: list[float]) -> None:
    ordered = sorted(latencies_s)
    p95 = ordered[int(len(ordered) * 0.95) - 1] if len(ordered) >= 20 else ordered[-1]
    print(f"\n{label}: {len(ordered)} webhooks, median {statistics.median(ordered) * 1000:.1f} "
          f"ms, p95 {p95 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")


# --------------------------------------------------------------------- tests

def test_slow_and_idle_clients_do_not_stop_webhooks_and_nothing_leaks(service: Service) -> None:
    acked: list[str] = []
    fds_before, rss_before = baseline(service, acked)
    idle = [connect(service) for _ in range(IDLE_CONNECTIONS)]
    half = []
    for _ in range(HALF_HEADER_CONNECTIONS):
        sock = connect(service)
        sock.sendall(b"POST /webhook/jira HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        half.append(sock)
    slow_results: list[int] = []
    errors: list[BaseException] = []

    def slow_client(number: int) -> None:
        try:
            body = body_for(f"SLOW-{number + 1}")
            with connect(service) as sock:
                sock.sendall(request_head(len(body)))
                for byte in body:  # about 1 s per client, well under the client timeout
                    sock.sendall(bytes([byte]))
                    time.sleep(1.0 / len(body))
                status = read_response(sock)[0]
                slow_results.append(status)
                if status == 200:
                    acked.append(f"SLOW-{number + 1}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=slow_client, args=(n,)) for n in range(SLOW_CLIENTS)]
    for thread in threads:
        thread.start()
    latencies_s = []
    for number in range(60):
        status, took_s = post_normal(service, f"NORMAL-{number + 1}", acked)
        assert status == 200
        latencies_s.append(took_s)
        time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=30)
    report("webhooks during slow/idle abuse", latencies_s)
    assert not errors, errors
    assert slow_results == [200] * SLOW_CLIENTS
    fds_during = open_fds(pid(service))
    assert fds_during >= fds_before + IDLE_CONNECTIONS  # the connections were really held

    # Never-completed connections are closed by the server after MWAI_CLIENT_TIMEOUT_S,
    # while this side still holds them open.
    assert all(closed_by_server(sock, CLIENT_TIMEOUT_S * 3) for sock in idle[:20] + half[:20])
    fds_after = wait_for_baseline(service, fds_before)
    for sock in idle + half:
        sock.close()
    wait_until_idle(service.db)
    rss_after = rss_kb(pid(service))
    print(f"fds: baseline {fds_before}, during {fds_during}, after {fds_after}; "
          f"VmRSS: baseline {rss_before} kB, after {rss_after} kB")
    assert fds_after <= fds_before + FD_MARGIN
    assert rss_after <= rss_before + RSS_MARGIN_KB
    assert len(acked) == 20 + SLOW_CLIENTS + 60
    assert_stored(service, acked)


def test_a_body_that_stalls_gets_408_and_writes_nothing(service: Service) -> None:
    body = body_for("STALL-1")
    with connect(service) as sock:
        sock.sendall(request_head(len(body)) + body[:5])
        status, _, raw = read_response(sock)
    assert status == 408 and json.loads(raw)["ok"] is False
    assert count_runs(service.db, "STALL-1") == 0


def test_body_over_the_limit_with_content_length_is_413_before_it_is_read(
        service: Service) -> None:
    fds_before = open_fds(pid(service))
    rss_before = rss_kb(pid(service))
    declared = 50 * 1024 * 1024
    with connect(service) as sock:
        sock.sendall(request_head(declared) + b"{" + b" " * 65536)
        status, headers, raw = read_response(sock)
    assert status == 413 and json.loads(raw)["ok"] is False
    assert "MWAI_MAX_BODY_BYTES" in json.loads(raw)["error"]
    assert wait_for_baseline(service, fds_before) <= fds_before + FD_MARGIN
    assert rss_kb(pid(service)) <= rss_before + RSS_MARGIN_KB


def test_chunked_body_over_the_limit_is_413(service: Service) -> None:
    chunk = b" " * 1024
    with connect(service) as sock:
        sock.sendall(request_head(None))
        sent = 0
        try:
            while sent < 64 * MAX_BODY_BYTES:  # bounded even if the server never answered
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if sent > 2 * MAX_BODY_BYTES:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, raw = read_response(sock)
    assert status == 413, raw
    assert json.loads(raw)["ok"] is False


@pytest.mark.parametrize("extra", [
    "X-Big: " + "a" * 100_000 + "\r\n",
    "X-Fmt: " + "%s%d%(x)s" * 2000 + "\r\n",
    "".join(f"X-H{number}: v\r\n" for number in range(5000)),
], ids=["one 100 kB header", "format codes in a 16 kB header", "5000 headers"])
def test_oversized_headers_are_refused_without_a_5xx(service: Service, extra: str) -> None:
    body = body_for("HEAD-1")
    with connect(service) as sock:
        try:
            sock.sendall(request_head(len(body), extra) + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status, _, _ = read_response(sock)
        except (ConnectionError, ConnectionResetError):
            status = 0  # closed without an answer: refused too
    assert status == 0 or 400 <= status < 500, status
    assert count_runs(service.db, "HEAD-1") == 0
    acked: list[str] = []
    assert post_normal(service, "AFTERHEAD-1", acked)[0] == 200
    assert_stored(service, acked)


def count_runs(db: Path, key: str) -> int:
    return sum(1 for stored in stored_keys(db) if stored == key)


def stored_keys(db: Path) -> list[str]:
    conn = sqlite3.connect(str(db))
    try:
        return [row[0] for row in conn.execute("SELECT issue_key FROM runs")]
    finally:
        conn.close()


def test_a_gzip_bomb_is_413_and_is_not_inflated_in_memory(service: Service) -> None:
    rss_before = rss_kb(pid(service))
    bomb = gzip.compress(b'{"issue_key": "BOMB-1", "pad": "' + b" " * (200 * 1024 * 1024),
                         compresslevel=9)
    assert len(bomb) < MAX_BODY_BYTES * 100
    with connect(service) as sock:
        sock.sendall(request_head(len(bomb), "Content-Encoding: gzip\r\n"))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(bomb)
        status, _, raw = read_response(sock)
    assert status in (400, 413), raw
    assert json.loads(raw)["ok"] is False
    assert count_runs(service.db, "BOMB-1") == 0
    rss_after = rss_kb(pid(service))
    print(f"gzip bomb of {len(bomb)} bytes (200 MB inflated): VmRSS {rss_before} -> "
          f"{rss_after} kB")
    assert rss_after <= rss_before + RSS_MARGIN_KB


@pytest.mark.parametrize("framing", [
    "Content-Length: 10\r\nTransfer-Encoding: chunked\r\n",
    "Content-Length: 10\r\nContent-Length: 12\r\n",
    "Content-Length: -1\r\n",
    "Content-Length: 1e3\r\n",
    "Transfer-Encoding: gzip, chunked, identity\r\n",
], ids=["length and chunked", "two lengths", "negative length", "float length",
        "odd transfer coding"])
def test_ambiguous_framing_is_refused(service: Service, framing: str) -> None:
    """Request smuggling shapes: refused, nothing stored, no traceback in the log."""
    body = body_for("SMUGGLE-1")
    head = ("POST /webhook/jira HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"X-Moveware-Webhook-Secret: {SECRET}\r\nConnection: close\r\n{framing}\r\n")
    with connect(service) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head.encode() + body)
        try:
            status = read_response(sock)[0]
        except ConnectionError:
            status = 0  # closed without an answer: refused too
    assert status == 0 or 400 <= status < 500, status
    assert count_runs(service.db, "SMUGGLE-1") == 0


def test_malformed_http_is_logged_as_the_clients_fault_and_webhooks_go_on(
        service: Service) -> None:
    """Malformed HTTP is logged as the client's fault: WARNING, no traceback; the
    webhooks around it are stored and the service stays healthy."""
    acked: list[str] = []
    assert post_normal(service, "MALFORMED-1", acked)[0] == 200
    logged_before = service.output().count("Error handling request")
    with connect(service) as sock:  # a header aiohttp's parser refuses (and logs)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request_head(2, "X-Big: " + "a" * 100_000 + "\r\n") + b"{}")
        assert closed_by_server(sock, CLIENT_TIMEOUT_S * 3)
    deadline = time.monotonic() + 10
    while service.output().count("Error handling request") == logged_before:
        assert time.monotonic() < deadline, "the malformed request was never logged"
        time.sleep(0.05)
    parse_errors = [json.loads(line) for line in service.output().splitlines()
                    if "Error handling request" in line]
    assert {line["level"] for line in parse_errors} == {"WARNING"}, parse_errors
    assert post_normal(service, "MALFORMED-2", acked)[0] == 200
    assert_stored(service, acked)
    status, health = service.get("/health/detailed")
    assert status == 200 and health["status"] == "healthy", health
