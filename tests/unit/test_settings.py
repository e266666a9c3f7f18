"""Settings: one table, every problem at once, env files, secrets never echoed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mwai.__main__ import COMMAND_GROUPS
from mwai.cli.common import load_settings
from mwai.cli.main import build_parser
from mwai.errors import ConfigError
from mwai.settings import SETTINGS, Settings
from mwai.sources import read_env_file


def test_every_field_has_exactly_one_documented_row() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    rows = [s.field for s in SETTINGS]
    assert sorted(rows) == sorted(fields)
    assert len(rows) == len(set(rows))
    for setting in SETTINGS:
        assert setting.help.strip(), f"{setting.name} has no help text"


def test_defaults_match_the_design() -> None:
    settings = Settings.from_env({"JIRA_WEBHOOK_SECRET": "s", "MWAI_PROCESSOR": "noop"})
    assert settings.db == "./mwai.sqlite3"
    assert settings.listen == "127.0.0.1:8088"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8088)
    assert settings.workers == 4
    assert settings.synchronous == "FULL"
    assert settings.max_body_bytes == 256 * 1024
    assert settings.stuck_after_s == 3600
    assert settings.log_format == "json"
    assert settings.skip_labels == ("ai:ignore",)


def test_all_problems_are_reported_at_once_with_names() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"MWAI_WORKERS": "many", "MWAI_LISTEN": "8088", "DEBUG": "maybe",
                           "MWAI_PROCESSOR": "noop", "MWAI_LEASE_S": "0"})
    text = str(caught.value)
    assert len(caught.value.problems) == 5
    for fragment in ("MWAI_WORKERS='many': expected an integer",
                     "MWAI_LISTEN='8088': expected HOST:PORT",
                     "DEBUG='maybe': expected true or false",
                     "MWAI_LEASE_S='0': must be at least 1",
                     "JIRA_WEBHOOK_SECRET is required"):
        assert fragment in text


def test_jira_processor_requires_its_settings_noop_does_not() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"JIRA_WEBHOOK_SECRET": "s"})
    names = " ".join(caught.value.problems)
    for name in ("JIRA_BASE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_AI_ACCOUNT_ID",
                 "JIRA_HUMAN_ACCOUNT_ID", "GH_TOKEN", "MWAI_REPO_URL", "ANTHROPIC_API_KEY"):
        assert name in names
    Settings.from_env({"JIRA_WEBHOOK_SECRET": "s", "MWAI_PROCESSOR": "noop"})


def test_openai_provider_requires_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"JIRA_WEBHOOK_SECRET": "s", "MWAI_LLM_PROVIDER": "openai"})
    assert any("OPENAI_API_KEY is required" in p for p in caught.value.problems)
    assert not any("ANTHROPIC_API_KEY" in p for p in caught.value.problems)


def test_secret_values_are_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"JIRA_WEBHOOK_SECRET": "s", "MWAI_PROCESSOR": "noop",
                           "SENTRY_TRACES_SAMPLE_RATE": "abc", "JIRA_API_TOKEN": "tok-123"})
    assert "tok-123" not in str(caught.value)


def test_operator_commands_need_no_secret() -> None:
    settings = Settings.from_env({}, check_required=False)
    assert settings.jira_webhook_secret == ""


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"JIRA_WEBHOOK_SECRET": "s", "MWAI_PROCESSOR": "noop",
                                  "MWAI_WORKERS": "2"}, {"MWAI_WORKERS": "7"})
    assert settings.workers == 7


def test_secret_values_lists_the_configured_secrets() -> None:
    settings = Settings.defaults(jira_webhook_secret="w", gh_token="g", jira_api_token="j")
    assert sorted(settings.secret_values()) == ["g", "j", "w"]


def test_env_file_systemd_style(tmp_path: Path) -> None:
    path = tmp_path / "mwai.env"
    path.write_text('# comment\n\nJIRA_WEBHOOK_SECRET="quoted value"\nexport MWAI_WORKERS=3\n'
                    "MWAI_DB='/var/lib/mwai/mwai.sqlite3'\nEMPTY=\n")
    assert read_env_file(path) == {"JIRA_WEBHOOK_SECRET": "quoted value", "MWAI_WORKERS": "3",
                                   "MWAI_DB": "/var/lib/mwai/mwai.sqlite3", "EMPTY": ""}


def test_command_line_wins_over_the_environment_which_wins_over_the_env_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: the documented precedence is command line > environment > env file
    (`MWAI_WORKERS=2 mwai serve --env-file ...` runs 2 workers). It replaces the old
    rule ("the env file's values win over the environment")."""
    monkeypatch.setenv("JIRA_WEBHOOK_SECRET", "from-the-environment")
    monkeypatch.setenv("MWAI_WORKERS", "2")
    monkeypatch.setenv("MWAI_DB", str(tmp_path / "environment.sqlite3"))
    monkeypatch.delenv("MWAI_LEASE_S", raising=False)
    monkeypatch.delenv("MWAI_ENV_FILE", raising=False)
    path = tmp_path / "mwai.env"
    path.write_text('JIRA_WEBHOOK_SECRET="from-the-file"\nMWAI_WORKERS=3\n'
                    f"MWAI_DB={tmp_path / 'file.sqlite3'}\nMWAI_LEASE_S=70\n")
    parser = build_parser(COMMAND_GROUPS)

    settings = load_settings(parser.parse_args(["runs", "--env-file", str(path)]))
    assert settings.jira_webhook_secret == "from-the-environment"
    assert settings.workers == 2
    assert settings.db == str(tmp_path / "environment.sqlite3")
    assert settings.lease_s == 70.0  # only in the env file: still applies

    monkeypatch.setenv("MWAI_ENV_FILE", str(path))  # the same file, named by the variable
    assert load_settings(parser.parse_args(["runs"])).lease_s == 70.0

    option = load_settings(parser.parse_args(["serve", "--env-file", str(path), "--db",
                                              str(tmp_path / "option.sqlite3"),
                                              "--workers", "5"]), {"MWAI_WORKERS": 5})
    assert (option.db, option.workers) == (str(tmp_path / "option.sqlite3"), 5)


def test_env_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_text("GOOD=1\nthis is not a setting\n")
    with pytest.raises(ConfigError, match="bad.env:2: expected KEY=VALUE"):
        read_env_file(path)
    with pytest.raises(ConfigError, match="cannot read it"):
        read_env_file(tmp_path / "missing.env")


def test_readme_configuration_table_is_current() -> None:
    """README's table is `mwai settings --markdown`; regenerate it when this fails."""
    import contextlib
    import io

    from mwai.__main__ import main

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- settings:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- settings:end -->")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["settings", "--markdown"]) == 0
    assert readme[start:end] == printed.getvalue()


def test_github_app_replaces_the_token_but_needs_all_three_settings() -> None:
    base = {"JIRA_WEBHOOK_SECRET": "s", "JIRA_BASE_URL": "https://x.atlassian.net",
            "JIRA_EMAIL": "ai@x", "JIRA_API_TOKEN": "t", "JIRA_AI_ACCOUNT_ID": "a",
            "JIRA_HUMAN_ACCOUNT_ID": "h", "MWAI_REPO_URL": "/srv/repo.git",
            "ANTHROPIC_API_KEY": "k"}
    with pytest.raises(ConfigError, match="GH_TOKEN is required"):
        Settings.from_env(base)
    with pytest.raises(ConfigError, match="GH_APP_PRIVATE_KEY_FILE and GH_APP_INSTALLATION_ID"):
        Settings.from_env({**base, "GH_APP_ID": "123"})
    settings = Settings.from_env({**base, "GH_APP_ID": "123", "GH_APP_PRIVATE_KEY_FILE": "/k.pem",
                                  "GH_APP_INSTALLATION_ID": "9"})
    assert settings.gh_token == "" and settings.gh_app_id == "123"


def test_a_data_center_personal_access_token_needs_no_email() -> None:
    base = {"JIRA_WEBHOOK_SECRET": "s", "JIRA_BASE_URL": "https://jira.example.com",
            "JIRA_API_TOKEN": "pat", "JIRA_AI_ACCOUNT_ID": "ai-runner",
            "JIRA_HUMAN_ACCOUNT_ID": "jsmith", "MWAI_REPO_URL": "/srv/repo.git",
            "ANTHROPIC_API_KEY": "k", "GH_TOKEN": "g", "JIRA_API_VERSION": "2"}
    with pytest.raises(ConfigError, match="JIRA_EMAIL is required"):
        Settings.from_env(base)
    with pytest.raises(ConfigError, match="JIRA_AUTH"):
        Settings.from_env({**base, "JIRA_AUTH": "token"})
    settings = Settings.from_env({**base, "JIRA_AUTH": "bearer"})
    assert (settings.jira_auth, settings.jira_email) == ("bearer", "")
