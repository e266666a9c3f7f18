"""deploy/: the systemd units verify, mwai.service is hardened, the log shippers read
fields mwai really writes, nginx accepts its site file, the env example is complete."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mwai.settings import SETTINGS
from mwai.sources import read_env_file
from tests.acceptance.service import Service
from tests.acceptance.test_nginx_front import for_installed_nginx

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = ["mwai.service", "mwai-failure@.service", "mwai-alert.service", "mwai-alert.timer",
         "mwai-prune.service", "mwai-prune.timer"]
INSTALLED_MWAI = "/opt/mwai/venv/bin/mwai"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None)


# ----------------------------------------------------------------------- systemd


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units as install.sh writes them, with ExecStart= pointing at this mwai.

    systemd-analyze verify checks that ExecStart's binary exists, so the install
    prefix is replaced by this virtualenv's; a template gets an instance name.
    """
    target = tmp_path_factory.mktemp("units")
    mwai = shutil.which("mwai") or str(Path(sys.executable).with_name("mwai"))
    assert Path(mwai).exists(), "the mwai console script is not installed in this environment"
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text().replace(INSTALLED_MWAI, mwai)
        (target / unit).write_text(text)
    shutil.copy(target / "mwai-failure@.service", target / "mwai-failure@mwai.service.service")
    return target


def needs_systemd_analyze() -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); .ci/run "
                    "installs it")


@pytest.mark.parametrize("unit", [u if "@" not in u else "mwai-failure@mwai.service.service"
                                  for u in UNITS])
def test_systemd_analyze_verify(unit_dir: Path, unit: str) -> None:
    needs_systemd_analyze()
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit_dir / unit)],
                            capture_output=True, text=True, timeout=60, cwd=unit_dir)
    # Unknown keys and bad values are only warnings (exit 0): any line about our
    # files fails the test too.
    complaints = [line for line in result.stderr.splitlines() if "mwai" in line]
    assert result.returncode == 0 and not complaints, result.stderr


def test_mwai_service_security_exposure_is_ok(unit_dir: Path) -> None:
    needs_systemd_analyze()
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
         str(unit_dir / "mwai.service")],
        capture_output=True, text=True, timeout=60, cwd=unit_dir)
    match = re.search(r"Overall exposure level for mwai\.service: (\d+\.\d+) (\w+)",
                      result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 3.0, result.stdout
    assert match.group(2) == "OK"


def test_unit_settings_users_rely_on() -> None:
    service = (DEPLOY / "systemd" / "mwai.service").read_text()
    for line in ("Type=notify", "Restart=on-failure", "StateDirectory=mwai",
                 "EnvironmentFile=/etc/mwai/mwai.env", "OnFailure=mwai-failure@%n.service",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes"):
        assert line in service.splitlines(), line
    assert re.search(r"^WatchdogSec=\d+", service, re.M)
    assert re.search(r"^RestrictAddressFamilies=", service, re.M)
    assert re.search(r"^SystemCallFilter=", service, re.M)
    failure = (DEPLOY / "systemd" / "mwai-failure@.service").read_text()
    assert "mwai alert --unit-failed %i" in failure
    assert "OnUnitActiveSec=5min" in (DEPLOY / "systemd" / "mwai-alert.timer").read_text()
    assert "--older-than 30d" in (DEPLOY / "systemd" / "mwai-prune.service").read_text()


# ------------------------------------------------------------- log shippers


@pytest.fixture(scope="module")
def raw_log_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The exact lines `mwai serve` printed (journald's MESSAGE): a request, a run that
    completes, one that fails, one for PROJ-42 (the docs' example issue)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    service = Service(tmp_path, processor="failing", MWAI_WORKERS="1").start()
    try:
        for key in ("OK-1", "FAIL-1", "PROJ-42"):
            assert service.post_webhook({"event_type": "issue_assigned", "issue_key": key},
                                        headers={"X-Request-Id": f"req-{key.lower()}"}
                                        )[0] == 200
        deadline = time.monotonic() + 20
        while '"Run failed"' not in service.output() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert service.stop() == 0
    lines = [line for line in service.output().splitlines() if line.startswith("{")]
    assert lines, service.output()
    return lines


@pytest.fixture(scope="module")
def log_lines(raw_log_lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in raw_log_lines]


def fields_in(lines: list[dict[str, Any]], **where: Any) -> set[str]:
    return {key for line in lines if all(line.get(k) == v for k, v in where.items())
            for key in line}


def test_log_lines_carry_the_documented_fields(log_lines: list[dict[str, Any]]) -> None:
    assert {"timestamp", "level", "logger", "message"} <= fields_in(log_lines)
    failed = [line for line in log_lines if line.get("event") == "Run failed"]
    assert failed and failed[0]["level"] == "ERROR" and failed[0]["issue_key"] == "FAIL-1"
    assert {"run_id", "issue_key", "action", "worker", "event"} <= set(failed[0])
    accepted = [line for line in log_lines if line.get("path") == "/webhook/jira"
                and line.get("status") == 200]
    assert {line["request_id"] for line in accepted} == {"req-ok-1", "req-fail-1",
                                                         "req-proj-42"}
    assert all({"issue_key", "run_id", "coalesced"} <= set(line) for line in accepted)


def vrl_field_reads(text: str) -> set[str]:
    """Top-level event fields a VRL program or condition reads (``.name``)."""
    return set(re.findall(r"(?<![\w.\]])\.([A-Za-z_]\w*)", text))


def test_vector_config_parses_and_reads_fields_mwai_writes(
        log_lines: list[dict[str, Any]]) -> None:
    config = tomllib.loads((DEPLOY / "vector" / "vector.toml").read_text())
    source = config["sources"]["mwai_journal"]
    assert source["type"] == "journald"
    assert "mwai.service" in source["include_units"]
    remap = config["transforms"]["mwai_parsed"]
    assert remap["type"] == "remap" and remap["inputs"] == ["mwai_journal"]
    program = remap["source"]
    # Fields the program copies from journald onto the event.
    from_journald = set(re.findall(r"^\.(\w+) = journal\.", program, re.M))
    assert {"host", "unit"} <= from_journald
    route = config["transforms"]["mwai_route"]
    conditions = " ".join(route["route"].values())
    mwai_fields = (vrl_field_reads(program) | vrl_field_reads(conditions)) - from_journald
    written = fields_in(log_lines)
    assert mwai_fields and mwai_fields <= written, mwai_fields - written
    # The error route matches a real error line and not an info line.
    assert any(line["level"] == "ERROR" for line in log_lines)
    assert '"ERROR"' in route["route"]["errors"]
    assert any(line.get("event") == "Run failed" for line in log_lines)
    sinks = config["sinks"]
    assert {s["type"] for s in sinks.values()} >= {"aws_cloudwatch_logs", "datadog_logs",
                                                   "file", "http"}
    assert sinks["error_alerts"]["inputs"] == ["mwai_route.errors"]
    for name, sink in sinks.items():
        for template in re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(sink)):
            assert template in from_journald | written, (name, template)


@pytest.mark.parametrize("name", ["amazon-cloudwatch-agent.json",
                                  "amazon-cloudwatch-agent-files.json"])
def test_cloudwatch_config_parses_and_filters_on_real_fields(
        name: str, log_lines: list[dict[str, Any]], raw_log_lines: list[str]) -> None:
    config = json.loads((DEPLOY / "cloudwatch" / name).read_text())
    collected = config["logs"]["logs_collected"]
    entries = (collected.get("journald") or collected.get("files"))["collect_list"]
    assert entries
    # The filter reads the bytes mwai printed, never a re-serialisation of them.
    errors = [raw for raw, line in zip(raw_log_lines, log_lines, strict=True)
              if line["level"] in ("ERROR", "CRITICAL")]
    assert errors
    for entry in entries:
        assert entry["log_group_name"].startswith("/mwai/")
        if "units" in entry:
            assert "mwai.service" in entry["units"]
        for rule in entry.get("filters", []):
            for field in re.findall(r'"(\w+)":', rule["expression"]):
                assert field in fields_in(log_lines), field
            matching = [raw for raw in raw_log_lines if re.search(rule["expression"], raw)]
            assert matching == errors, rule["expression"]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_journalctl_grep_in_the_docs_matches_what_mwai_prints(
        raw_log_lines: list[str]) -> None:
    """`journalctl -g PATTERN` matches MESSAGE, the line as printed (PCRE; these
    patterns mean the same in Python's re)."""
    patterns = [(doc.name, pattern) for doc in DOCS
                for pattern in re.findall(r"journalctl [^\n`]*?-g '([^']+)'", doc.read_text())]
    assert patterns
    for doc, pattern in patterns:
        assert any(re.search(pattern, raw) for raw in raw_log_lines), (doc, pattern)


# ------------------------------------------------------------------- nginx


def test_nginx_accepts_the_site_file(tmp_path: Path) -> None:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light); .ci/run installs it")
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the test certificate"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    shipped = (DEPLOY / "nginx" / "mwai.conf").read_text()
    site = for_installed_nginx(shipped)
    site = site.replace("/etc/ssl/mwai/fullchain.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/ssl/mwai/privkey.pem", str(tmp_path / "key.pem"))
    (tmp_path / "mwai.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/mwai.conf;
}}
""")
    result = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"),
                             "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    for required in ("rate=5r/s", "burst=20", "limit_req_status 429",
                     "client_max_body_size 256k", "deny all", "error_page 413",
                     "error_page 429"):
        assert required in shipped, required


# ------------------------------------------------------------- env example


def env_example_names() -> list[str]:
    text = (DEPLOY / "mwai.env.example").read_text()
    return re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.M)


def test_env_example_lists_every_setting_once() -> None:
    names = env_example_names()
    assert sorted(names) == sorted(s.name for s in SETTINGS), (
        "deploy/mwai.env.example is out of date: run "
        "python deploy/make-env-example.py > deploy/mwai.env.example")


def test_env_example_generator_covers_every_setting() -> None:
    result = subprocess.run([sys.executable, str(DEPLOY / "make-env-example.py")],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    generated = re.findall(r"^#?([A-Z][A-Z0-9_]*)=", result.stdout, re.M)
    assert sorted(generated) == sorted(s.name for s in SETTINGS)


def test_env_example_reads_as_an_env_file_with_placeholder_secrets() -> None:
    values = read_env_file(DEPLOY / "mwai.env.example")
    secrets = {s.name for s in SETTINGS if s.secret}
    for name, value in values.items():
        if name in secrets:
            assert value.startswith("change-me"), name


def test_install_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")], check=True)
