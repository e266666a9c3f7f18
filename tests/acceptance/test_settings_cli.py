"""Issue 19, point 6, driven through the `mwai` command: precedence command line >
environment > env file, MWAI_ENV_FILE read by every command, `settings --effective`,
misspelt names, unsafe combinations, and read-only commands that a bad value of
a setting they do not use does not lock out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.service import Service

pytestmark = pytest.mark.slow

SECRET = "a3f9c0d17e5b4a2c9d8e7f6a5b4c3d2e"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MWAI_", "JIRA_", "DEBUG"))}
    env.update(extra)
    return env


def mwai(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mwai", *args], env=clean_env(**env),
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "mwai.env"
    path.write_text(f"JIRA_WEBHOOK_SECRET={SECRET}\nMWAI_PROCESSOR=noop\nMWAI_WORKERS=3\n"
                    f"MWAI_LEASE_S=90\nMWAI_DB={tmp_path / 'from-file.sqlite3'}\n")
    return path


def test_settings_effective_shows_value_source_and_masks_secrets(
        tmp_path: Path, env_file: Path) -> None:
    result = mwai("settings", "--effective", "--json", "--db", str(tmp_path / "cli.sqlite3"),
                  MWAI_ENV_FILE=str(env_file), MWAI_WORKERS="2")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    rows = {row["name"]: (row["value"], row["source"]) for row in document["settings"]}
    assert document["env_file"] == str(env_file)
    assert rows["MWAI_WORKERS"] == ("2", "environment")
    assert rows["MWAI_LEASE_S"] == ("90", "env file")
    assert rows["MWAI_DB"] == (str(tmp_path / "cli.sqlite3"), "command line")
    assert rows["MWAI_LISTEN"] == ("127.0.0.1:8088", "default")
    assert rows["JIRA_WEBHOOK_SECRET"] == ("***", "env file")
    text = mwai("settings", "--effective", MWAI_ENV_FILE=str(env_file))
    assert "JIRA_WEBHOOK_SECRET=***" in text.stdout and "# env file" in text.stdout
    assert SECRET not in result.stdout + text.stdout + result.stderr + text.stderr


def test_the_environment_wins_over_the_env_file_in_the_service(
        tmp_path: Path, env_file: Path) -> None:
    # `MWAI_WORKERS=2 mwai serve --env-file ...` (the env file says 3) runs 2 workers.
    service = Service(tmp_path, MWAI_WORKERS="2")
    service.argv += ["--env-file", str(env_file)]
    service.start()
    try:
        assert service.get("/health/detailed")[1]["workers"]["configured"] == 2
    finally:
        assert service.stop() == 0
    # The environment's MWAI_DB (Service sets it) won over the env file's too.
    assert service.db.exists() and not (tmp_path / "from-file.sqlite3").exists()


def test_operator_commands_read_mwai_env_file_and_tolerate_unused_bad_values(
        tmp_path: Path, env_file: Path) -> None:
    assert mwai("enqueue", "PROJ-1", MWAI_ENV_FILE=str(env_file)).returncode == 0
    assert (tmp_path / "from-file.sqlite3").exists()  # the env file's MWAI_DB
    runs = mwai("runs", "--json", MWAI_ENV_FILE=str(env_file), MWAI_WORKERS="many",
                MWAI_WORKER="2")
    assert runs.returncode == 0, runs.stderr
    assert [run["issue_key"] for run in json.loads(runs.stdout)["runs"]] == ["PROJ-1"]
    assert "MWAI_WORKERS='many': expected an integer (not used by this command" in runs.stderr
    assert "MWAI_WORKER is not a mwai setting: did you mean MWAI_WORKERS?" in runs.stderr
    # A bad value of a setting the command uses is still refused, as the service does.
    stats = mwai("monitor", "--once", MWAI_ENV_FILE=str(env_file), MWAI_STUCK_AFTER_S="soon")
    assert stats.returncode == 2 and "MWAI_STUCK_AFTER_S='soon'" in stats.stderr
    serve = mwai("serve", MWAI_ENV_FILE=str(env_file), MWAI_WORKERS="many")
    assert serve.returncode == 2 and "MWAI_WORKERS='many'" in serve.stderr
    assert "Traceback" not in runs.stderr + stats.stderr + serve.stderr


def test_check_names_unsafe_combinations(tmp_path: Path, env_file: Path) -> None:
    result = mwai("check", "--json", MWAI_ENV_FILE=str(env_file), MWAI_SYNCHRONOUS="OFF",
                  MWAI_LEASE_S="15")
    report = json.loads(result.stdout)
    warnings = " ".join(report["configuration"]["warnings"])
    assert "MWAI_SYNCHRONOUS=OFF" in warnings
    assert "MWAI_LEASE_S=15 is less than twice MWAI_HEARTBEAT_S=10" in warnings


def test_serve_refuses_the_example_webhook_secret(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "mwai.env.example"
    result = mwai("serve", "--env-file", str(example), "--processor", "noop",
                  "--db", str(tmp_path / "mwai.sqlite3"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "JIRA_WEBHOOK_SECRET still holds the example's placeholder" in result.stderr
    assert "change-me" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "mwai.sqlite3").exists()
