"""Issue 19, point 10: nginx in front of mwai answers its own refusals in mwai's JSON
error shape (413: body too large; 429: rate limit, with Retry-After) and switches
HTTP/2 on the current way (`http2 on;`).

A real nginx runs deploy/nginx/mwai.conf on 127.0.0.1 (ports and certificate
replaced) in front of a real `mwai serve`.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.service import Service, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "mwai.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)
HTTP2_ON_SINCE = (1, 25, 1)


def nginx_version() -> tuple[int, ...]:
    assert NGINX is not None, "nginx is not installed (apt-get install nginx-light)"
    text = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=True).stderr
    match = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    assert match, text
    return tuple(int(part) for part in match.groups())


def for_installed_nginx(site: str) -> str:
    """The site file as its header comment says to adapt it to an nginx older than
    1.25.1: `http2 on;` becomes the `http2` parameter of the 443 listens."""
    if nginx_version() >= HTTP2_ON_SINCE:
        return site
    site = site.replace("    http2 on;\n", "")
    return re.sub(r"(listen \S*443 ssl);", r"\1 http2;", site)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_the_site_uses_the_current_http2_directive() -> None:
    site = SITE.read_text()
    assert "    http2 on;\n" in site
    assert not re.search(r"^\s*listen [^;]*http2", site, re.M)


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[str, Service]]:
    """nginx with the shipped site on 127.0.0.1, in front of `mwai serve`."""
    service = Service(tmp_path).start()
    cert, key = make_certificate(tmp_path)
    https_port, http_port = free_port(), free_port()
    site = for_installed_nginx(SITE.read_text())
    site = site.replace("/etc/ssl/mwai/fullchain.pem", str(cert))
    site = site.replace("/etc/ssl/mwai/privkey.pem", str(key))
    site = site.replace("server 127.0.0.1:8088;", f"server 127.0.0.1:{service.port};")
    site = re.sub(r"^\s*listen \[::\]:\d+[^;]*;\n", "", site, flags=re.M)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = re.sub(r"listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl", site)
    (tmp_path / "mwai.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
worker_processes 1;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/mwai.conf;
}}
""")
    assert NGINX is not None
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "e.log"),
                              "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert nginx.poll() is None, nginx.stderr.read() if nginx.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)
        yield f"https://127.0.0.1:{https_port}", service
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(timeout=20)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
        service.stop()


def post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(url + "/webhook/jira", data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Moveware-Webhook-Secret": "wrong"})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def assert_mwai_error_shape(headers: dict[str, str], body: bytes) -> None:
    assert headers["Content-Type"].startswith("application/json"), headers
    document = json.loads(body)
    assert set(document) == {"ok", "error"} and document["ok"] is False
    assert isinstance(document["error"], str) and document["error"]


def test_nginx_refusals_are_json_like_mwai_s_own(front: tuple[str, Service]) -> None:
    url, _ = front
    # mwai's own refusal, through nginx: the shape nginx's answers must have.
    status, headers, body = post(url, b'{"issue_key": "PROJ-1"}')
    assert status == 401
    assert_mwai_error_shape(headers, body)

    status, headers, body = post(url, b"x" * (300 * 1024))
    assert status == 413, body
    assert_mwai_error_shape(headers, body)
    assert "too large" in json.loads(body)["error"]

    # Over 5 r/s with bursts of 20: a quick series meets a 429.
    for _ in range(200):
        status, headers, body = post(url, b"{}")
        if status == 429:
            break
    assert status == 429, "no 429 within 200 quick requests"
    assert_mwai_error_shape(headers, body)
    assert headers["Retry-After"] == "1"
