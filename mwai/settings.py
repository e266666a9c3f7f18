"""The frozen ``Settings`` built from the table of every setting (mwai/setting_table.py).

The table feeds ``Settings.from_env``, ``mwai check``, ``mwai settings`` and the
README; a test checks that every dataclass field has a row and the other way round.
Nothing here reads ``os.environ`` at import time: callers pass the mapping in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from mwai.errors import ConfigError
from mwai.setting_table import SETTINGS as SETTINGS
from mwai.setting_table import SETTINGS_BY_NAME as SETTINGS_BY_NAME
from mwai.setting_table import Setting as Setting

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_listen(raw: str) -> str:
    host, sep, port = raw.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8088")
    return raw.strip()


def _parse_csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _parse_levels(raw: str) -> tuple[tuple[str, str], ...]:
    """'INFO,mwai.http=WARNING' -> (('', 'INFO'), ('mwai.http', 'WARNING')); '' is the root."""
    levels: list[tuple[str, str]] = []
    for part in _parse_csv(raw):
        logger, _, level = part.rpartition("=")
        if level.strip().upper() not in LOG_LEVELS:
            raise ValueError("expected LEVEL or LOGGER=LEVEL items separated by commas, "
                             "a LEVEL being one of " + ", ".join(LOG_LEVELS))
        levels.append((logger.strip(), level.strip().upper()))
    return tuple(levels)


def _parser(setting: Setting) -> Callable[[str], Any]:
    def parse_number(raw: str) -> float | int:
        kind = int if setting.kind == "int" else float
        try:
            value = kind(raw.strip())
        except ValueError:
            raise ValueError(f"expected a{'n integer' if kind is int else ' number'}") from None
        if setting.minimum is not None and value < setting.minimum:
            raise ValueError(f"must be at least {setting.minimum:g}")
        return value

    def parse_choice(raw: str) -> str:
        value = raw.strip()
        if setting.name == "MWAI_SYNCHRONOUS":
            value = value.upper()
        if value not in setting.choices:
            raise ValueError("expected one of " + ", ".join(setting.choices))
        return value

    return {
        "int": parse_number,
        "float": parse_number,
        "bool": _parse_bool,
        "choice": parse_choice,
        "listen": _parse_listen,
        "csv": _parse_csv,
        "levels": _parse_levels,
        "path": lambda raw: raw.strip(),
        "str": lambda raw: raw,
    }[setting.kind]


@dataclass(frozen=True)
class Settings:
    """All settings, typed. Build with ``Settings.from_env(environ)``."""

    jira_webhook_secret: str
    db: str
    listen: str
    workers: int
    processor: str
    log_format: str
    log_level: tuple[tuple[str, str], ...]
    debug: bool
    env_file: str
    synchronous: str
    db_busy_timeout_ms: int
    max_body_bytes: int
    max_attempts: int
    retry_base_s: float
    retry_max_s: float
    lease_s: float
    heartbeat_s: float
    recovery_interval_s: float
    reconcile_interval_s: float
    poll_s: float
    shutdown_grace_s: float
    stuck_after_s: float
    queue_age_alert_s: float
    rate_limit_per_s: float
    rate_limit_burst: int
    client_timeout_s: float
    jira_base_url: str
    jira_email: str
    jira_api_token: str
    jira_auth: str
    jira_ai_account_id: str
    jira_human_account_id: str
    jira_api_version: str
    jira_status_backlog: str
    jira_status_plan_review: str
    jira_status_in_progress: str
    jira_status_in_testing: str
    jira_status_done: str
    jira_status_blocked: str
    skip_labels: tuple[str, ...]
    gh_token: str
    gh_app_id: str
    gh_app_private_key_file: str
    gh_app_installation_id: str
    github_api_url: str
    gh_repo: str
    repo_url: str
    base_branch: str
    repos_file: str
    work_dir: str
    llm_provider: str
    anthropic_api_key: str
    anthropic_model: str
    anthropic_base_url: str
    openai_api_key: str
    openai_model: str
    openai_base_url: str
    llm_max_tokens: int
    llm_timeout_s: float
    http_timeout_s: float
    http_retries: int
    agent: str
    agent_command: str
    agent_program: str
    agent_model: str
    agent_max_turns: int
    agent_base_url: str
    agent_allowed_commands: tuple[str, ...]
    claude_code_oauth_token: str
    codex_api_key: str
    agent_timeout_s: float
    agent_pass_env: tuple[str, ...]
    agent_max_output_bytes: int
    agent_max_change_bytes: int
    prompt_max_chars: int
    checks: str
    setup: str
    max_fix_attempts: int
    check_timeout_s: float
    checks_network: bool
    sandbox: str
    sandbox_hide: tuple[str, ...]
    sandbox_memory_bytes: int
    sandbox_max_processes: int
    sandbox_cpu_s: int
    sandbox_max_output_bytes: int
    sentry_dsn: str
    sentry_environment: str
    sentry_traces_sample_rate: float
    metrics_token: str
    ui_token: str
    ui_admin_token: str
    ui_trusted_user_header: str
    alert_webhook_url: str
    alert_slack_webhook_url: str
    alert_email_to: tuple[str, ...]
    alert_email_from: str
    alert_smtp_host: str
    alert_smtp_port: int
    alert_smtp_user: str
    alert_smtp_password: str
    alert_smtp_starttls: bool
    alert_command: str
    alert_cooldown_s: float

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        overrides: Mapping[str, str] | None = None,
        check_required: bool = True,
        used: Collection[str] | None = None,
        notes: list[str] | None = None,
    ) -> Settings:
        """Parse every setting; raise ConfigError listing *all* problems at once.

        ``overrides`` (setting name -> raw value) win over ``environ``: command-line
        options use them. ``check_required=False`` serves the operator commands
        (mwai runs, stats...): they need no secret and no Jira/GitHub/LLM setting.
        ``used``: the settings the command uses; a bad value of any other falls back
        to its default, with a note appended to ``notes`` instead of a problem.
        """
        source = {**environ, **(overrides or {})}
        values, problems = _parse_all(source)
        if used is not None:
            tolerated = [p for p in problems if p.partition("=")[0] not in used]
            problems = [p for p in problems if p not in tolerated]
            for problem in tolerated:
                name = problem.partition("=")[0]
                values[SETTINGS_BY_NAME[name].field] = _parser(SETTINGS_BY_NAME[name])(
                    SETTINGS_BY_NAME[name].default)
                if notes is not None:
                    notes.append(f"{problem} (not used by this command; `mwai serve` "
                                 "refuses it)")
        if "processor" in values and check_required:
            problems += _missing_required(values)
        if problems:
            raise ConfigError(problems)
        return cls(**values)

    @classmethod
    def defaults(cls, **changes: Any) -> Settings:
        """Settings from defaults only (tests, demo), with field overrides."""
        values, problems = _parse_all({})
        assert not problems, problems
        return dataclasses.replace(cls(**values), **changes)

    def secret_values(self) -> list[str]:
        """The non-empty secret values, for scrubbing and leak tests."""
        return [
            str(getattr(self, s.field)) for s in SETTINGS if s.secret and getattr(self, s.field)
        ]

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _parse_all(source: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    values: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        raw = source.get(setting.name, setting.default)
        try:
            values[setting.field] = _parser(setting)(raw)
        except ValueError as exc:
            shown = "<hidden>" if setting.secret else repr(raw)
            problems.append(f"{setting.name}={shown}: {exc}")
    return values, problems


def _missing_required(values: Mapping[str, Any]) -> list[str]:
    problems = []
    processor = values["processor"]
    for setting in SETTINGS:
        if setting.name == "GH_TOKEN" and values.get("gh_app_id"):
            continue  # a GitHub App authenticates instead
        if setting.name == "JIRA_EMAIL" and values.get("jira_auth") == "bearer":
            continue  # a personal access token names its user by itself
        # A value that failed to parse is already reported; only flag empty ones.
        if processor in setting.required_by and not values.get(setting.field, "?"):
            problems.append(
                f"{setting.name} is required (MWAI_PROCESSOR={processor}): {setting.help}"
            )
    if values.get("gh_app_id") and not (values.get("gh_app_private_key_file")
                                        and values.get("gh_app_installation_id")):
        problems.append("GH_APP_ID is set: GH_APP_PRIVATE_KEY_FILE and GH_APP_INSTALLATION_ID "
                        "are required too")
    if processor == "jira":
        if not values.get("repo_url") and not values.get("repos_file"):
            problems.append(
                "MWAI_REPO_URL or MWAI_REPOS_FILE is required (MWAI_PROCESSOR=jira): "
                "say which git repository the agent works on"
            )
        provider = values.get("llm_provider", "anthropic")
        key_field = f"{provider}_api_key"
        if not values.get(key_field):
            problems.append(
                f"{key_field.upper()} is required (MWAI_LLM_PROVIDER={provider}): "
                "the plans are written by this LLM"
            )
    return problems
