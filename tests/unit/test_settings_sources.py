"""Issue 19, point 6: where values come from, misspelt names, unsafe combinations,
placeholders, and read-only commands that a bad unused value does not lock out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mwai import advice
from mwai.errors import ConfigError
from mwai.logs import log_levels, stream_is_journal
from mwai.settings import SETTINGS, Settings
from mwai.sources import (
    COMMAND_LINE,
    DEFAULT,
    ENV_FILE,
    ENVIRONMENT,
    effective_rows,
    gather,
    read_env_file,
)

EXAMPLE = Path(__file__).parents[2] / "deploy" / "mwai.env.example"


def test_each_value_records_the_layer_it_came_from(tmp_path: Path) -> None:
    env_file = tmp_path / "mwai.env"
    env_file.write_text("MWAI_WORKERS=3\nMWAI_POLL_S=2\nMWAI_LEASE_S=90\n")
    sourced = gather({"MWAI_WORKERS": "2", "MWAI_POLL_S": "1"}, str(env_file),
                     {"MWAI_POLL_S": "0.5"})
    assert sourced.values["MWAI_WORKERS"] == "2"
    assert sourced.values["MWAI_POLL_S"] == "0.5"
    assert sourced.values["MWAI_LEASE_S"] == "90"
    assert [sourced.source_of(n) for n in ("MWAI_WORKERS", "MWAI_POLL_S", "MWAI_LEASE_S",
                                           "MWAI_LISTEN")] == [
        ENVIRONMENT, COMMAND_LINE, ENV_FILE, DEFAULT]


def test_the_default_env_file_is_read_when_it_exists_and_mwai_env_file_replaces_it(
        tmp_path: Path) -> None:
    default = tmp_path / "etc-mwai.env"
    assert gather({}, default_env_file=str(default)).env_file is None
    default.write_text("MWAI_WORKERS=6\n")
    assert gather({}, default_env_file=str(default)).values["MWAI_WORKERS"] == "6"
    other = tmp_path / "other.env"
    other.write_text("MWAI_WORKERS=7\n")
    sourced = gather({"MWAI_ENV_FILE": str(other)}, default_env_file=str(default))
    assert (sourced.env_file, sourced.values["MWAI_WORKERS"]) == (str(other), "7")
    with pytest.raises(ConfigError, match="cannot read it"):
        gather({"MWAI_ENV_FILE": str(tmp_path / "missing.env")})


def test_an_unreadable_default_env_file_is_a_note_not_a_failure(tmp_path: Path) -> None:
    # (Tests run as root in CI, where a mode-0 file is readable: bytes that are not
    # UTF-8 make it unreadable for everyone.)
    default = tmp_path / "mwai.env"
    default.write_bytes(b"MWAI_WORKERS=6\n\xff\xfe\n")
    sourced = gather({}, default_env_file=str(default))
    assert sourced.env_file is None and "cannot read it" in sourced.notes[0]
    assert "MWAI_WORKERS" not in sourced.values
    with pytest.raises(ConfigError, match="cannot read it"):
        gather({"MWAI_ENV_FILE": str(default)})


def test_misspelt_names_get_the_closest_setting() -> None:
    notes = advice.unknown_names(["MWAI_WORKER", "JIRA_WEBHOOK_SECRT", "MWAI_NOTHING_LIKE_IT",
                                  "HTTPS_PROXY", "MWAI_WORKERS", "MWAI_TASK_FILE"])
    assert notes[0].startswith("MWAI_WORKER is not a mwai setting: did you mean MWAI_WORKERS?")
    assert "did you mean JIRA_WEBHOOK_SECRET?" in notes[1]
    assert notes[2].startswith("MWAI_NOTHING_LIKE_IT is not a mwai setting")
    assert len(notes) == 3  # HTTPS_PROXY is someone else's, the others are known


def test_unsafe_combinations_are_named() -> None:
    safe = Settings.defaults()
    assert advice.unsafe_combinations(safe) == []
    notes = advice.unsafe_combinations(Settings.defaults(
        lease_s=10, heartbeat_s=10, synchronous="OFF", retry_base_s=60, retry_max_s=5,
        shutdown_grace_s=60, client_timeout_s=30, listen="0.0.0.0:8088"))
    for fragment in ("MWAI_LEASE_S=10 is less than twice MWAI_HEARTBEAT_S=10",
                     "MWAI_SYNCHRONOUS=OFF", "MWAI_RETRY_MAX_S=5 is below",
                     "MWAI_SHUTDOWN_GRACE_S=60", "MWAI_CLIENT_TIMEOUT_S=30",
                     "MWAI_METRICS_TOKEN is empty"):
        assert sum(fragment in note for note in notes) == 1, (fragment, notes)


def test_every_placeholder_of_the_example_file_is_refused_and_no_real_value() -> None:
    example = read_env_file(EXAMPLE)
    problems = advice.placeholders(example)
    assert sorted(p.split()[0].split("=")[0] for p in problems) == sorted(example)
    real = {"JIRA_WEBHOOK_SECRET": "9f2c" * 16, "JIRA_BASE_URL": "https://acme.atlassian.net",
            "JIRA_EMAIL": "ai@acme.io", "MWAI_REPO_URL": "https://github.com/acme/yours.git",
            "GH_TOKEN": "ghp_" + "x" * 36, "MWAI_ALERT_EMAIL_TO": "ops@example.com.au"}
    assert advice.placeholders(real) == []
    assert advice.placeholders({"MWAI_ALERT_WEBHOOK_URL": "https://hooks.example.org/x",
                                "GH_REPO": "your-org/repo"}) != []


def test_read_only_commands_tolerate_bad_values_of_settings_they_do_not_use() -> None:
    notes: list[str] = []
    settings = Settings.from_env({"MWAI_WORKERS": "many", "MWAI_STUCK_AFTER_S": "600"},
                                 check_required=False, used={"MWAI_STUCK_AFTER_S"}, notes=notes)
    assert (settings.workers, settings.stuck_after_s) == (4, 600)
    assert notes and notes[0].startswith("MWAI_WORKERS='many': expected an integer")
    with pytest.raises(ConfigError, match="MWAI_STUCK_AFTER_S"):
        Settings.from_env({"MWAI_STUCK_AFTER_S": "soon"}, check_required=False,
                          used={"MWAI_STUCK_AFTER_S"})


def test_effective_rows_mask_secrets_wherever_they_appear() -> None:
    secret = "s3cr3t-value-1234"
    sourced = gather({"JIRA_WEBHOOK_SECRET": secret,
                      "MWAI_AGENT_COMMAND": f"agent --token {secret}"}, None, {})
    rows = {row["name"]: row for row in effective_rows(sourced)}
    assert rows["JIRA_WEBHOOK_SECRET"]["value"] == "***"
    assert rows["MWAI_AGENT_COMMAND"]["value"] == "agent --token ***"
    assert secret not in repr(rows)
    assert len(rows) == len(SETTINGS)


def test_log_levels_per_logger_and_debug_as_an_alias() -> None:
    levels = Settings.from_env({"MWAI_LOG_LEVEL": "warning, mwai.http=ERROR"},
                               check_required=False)
    assert log_levels(levels) == (("", "INFO"), ("", "WARNING"), ("mwai.http", "ERROR"))
    debug = Settings.from_env({"DEBUG": "true"}, check_required=False)
    assert log_levels(debug)[-1] == ("", "DEBUG")
    with pytest.raises(ConfigError, match="MWAI_LOG_LEVEL='LOUD'"):
        Settings.from_env({"MWAI_LOG_LEVEL": "LOUD"}, check_required=False)


def test_the_priority_prefix_only_when_stdout_is_the_journal(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    other = tmp_path / "other.log"
    other.touch()
    with out.open("w") as stream:
        status = os.fstat(stream.fileno())
        assert stream_is_journal(stream, {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"})
        moved = os.stat(other)  # stdout redirected elsewhere: the variable is stale
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": f"{moved.st_dev}:{moved.st_ino}"})
        assert not stream_is_journal(stream, {})
