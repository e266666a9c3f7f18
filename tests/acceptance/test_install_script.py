"""Issue 19, point 1: deploy/install.sh enables and starts mwai only after `mwai check`
passes, and `mwai check` refuses the example file's placeholders.

install.sh runs for real (bash, its own logic, the real `mwai check` on the real
env file it installs); what needs root and a running systemd is a recording stub
on PATH: systemctl, useradd, sudo, id, install's -o/-g and the virtualenv (its
mwai is this checkout's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "deploy" / "install.sh"
EXAMPLE = ROOT / "deploy" / "mwai.env.example"


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)


def run_install(tmp_path: Path, env_file_text: str | None
                ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    stub(bin_dir, "systemctl", f'echo "$*" >> {calls}')
    stub(bin_dir, "useradd", "exit 0")
    stub(bin_dir, "id", "echo 0")  # root, and the mwai user exists
    stub(bin_dir, "sudo", 'shift 2; exec "$@"')  # sudo -u mwai CMD...
    # install -d -m MODE -o root -g mwai DIR...: the same without the owner change.
    stub(bin_dir, "install", 'args=(); while [ $# -gt 0 ]; do case "$1" in -o|-g) shift 2;; '
                             '*) args+=("$1"); shift;; esac; done; exec /usr/bin/install '
                             '"${args[@]}"')
    # PYTHON: the version check runs for real; `-m venv DIR` makes a venv whose
    # pip does nothing and whose mwai is this checkout's.
    stub(bin_dir, "python-stub", f'''if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/pip"
  printf '#!/bin/sh\\nexec {sys.executable} -m mwai "$@"\\n' > "$3/bin/mwai"
  chmod +x "$3/bin/pip" "$3/bin/mwai"
  exit 0
fi
exec {sys.executable} "$@"''')
    conf = tmp_path / "etc-mwai"
    if env_file_text is not None:
        conf.mkdir()
        (conf / "mwai.env").write_text(env_file_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWAI_", "JIRA_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(bin_dir / "python-stub"),
               PREFIX=str(tmp_path / "opt"), CONF_DIR=str(conf),
               STATE_DIR=str(tmp_path / "state"), UNIT_DIR=str(tmp_path / "units"),
               PYTHONPATH=str(ROOT))
    (tmp_path / "units").mkdir()
    result = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return result, recorded


def test_a_first_install_with_the_example_file_enables_nothing(tmp_path: Path) -> None:
    result, systemctl = run_install(tmp_path, None)
    assert result.returncode == 1, result.stdout + result.stderr
    # The example was installed as the env file, and `mwai check` named each placeholder.
    assert (tmp_path / "etc-mwai" / "mwai.env").read_text() == EXAMPLE.read_text()
    assert "JIRA_WEBHOOK_SECRET still holds the example's placeholder" in result.stdout
    assert "JIRA_EMAIL='ai-runner@example.com' is a placeholder" in result.stdout
    assert "mwai.service is NOT enabled" in result.stderr
    assert systemctl == ["daemon-reload"]
    assert (tmp_path / "units" / "mwai.service").exists()


def test_a_checked_configuration_is_enabled_and_started(tmp_path: Path) -> None:
    result, systemctl = run_install(
        tmp_path, "JIRA_WEBHOOK_SECRET=4f1c9a0e7b2d4c8e9f3a6b1d2e5c7a90\nMWAI_PROCESSOR=noop\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration: ok" in result.stdout
    assert systemctl[:2] == ["daemon-reload",
                             "enable --now mwai.service mwai-alert.timer mwai-prune.timer"]


def test_mwai_check_refuses_each_placeholder_of_the_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWAI_", "JIRA_"))}
    result = subprocess.run([sys.executable, "-m", "mwai", "check", "--env-file", str(EXAMPLE),
                             "--db", str(tmp_path / "mwai.sqlite3"), "--json"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    problems = json.loads(result.stdout)["configuration"]["problems"]
    example_names = [line.split("=")[0] for line in EXAMPLE.read_text().splitlines()
                     if line and not line.startswith("#")]
    for name in example_names:
        assert any(p.startswith(name) and "placeholder" in p for p in problems), (name, problems)
    # Secrets are named, never echoed.
    assert "change-me-run-openssl" not in result.stdout
