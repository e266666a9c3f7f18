"""Every setting mwai reads, in one table, and the frozen ``Settings`` built from it.

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

PROCESSORS = ("jira", "noop")
LOG_FORMATS = ("json", "text")
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
LLM_PROVIDERS = ("anthropic", "openai")
# "": MWAI_AGENT_COMMAND when it is set (as before presets existed), else builtin.
AGENT_KINDS = ("", "claude-code", "codex", "builtin", "command")


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    name: str
    default: str
    help: str
    kind: str = "str"  # str | int | float | bool | choice | listen | path | csv | levels
    group: str = "core"
    choices: tuple[str, ...] = ()
    secret: bool = False
    # Processors that cannot work without a value for this setting.
    required_by: tuple[str, ...] = ()
    minimum: float | None = None

    @property
    def field(self) -> str:
        return self.name.removeprefix("MWAI_").lower()


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # core
    S("JIRA_WEBHOOK_SECRET", "", "Shared secret of the webhook: sent by Jira Automation in the "
      "X-Moveware-Webhook-Secret header, or the HMAC key of a native Jira webhook "
      "(X-Hub-Signature). Required: mwai refuses to start without it.", secret=True,
      required_by=PROCESSORS),
    S("MWAI_DB", "./mwai.sqlite3", "Path of the SQLite database file.", "path"),
    S("MWAI_LISTEN", "127.0.0.1:8088", "HOST:PORT the HTTP server listens on.", "listen"),
    S("MWAI_WORKERS", "4", "Number of worker coroutines processing runs.", "int", minimum=1),
    S("MWAI_PROCESSOR", "jira", "What a run does: 'jira' runs the AI Runner flow; 'noop' "
      "completes runs at once (smoke tests, benchmarks).", "choice", choices=PROCESSORS),
    S("MWAI_LOG_FORMAT", "json", "Log line format on stdout: 'json' (one object per line, for "
      "journald/Vector) or 'text' (for humans).", "choice", choices=LOG_FORMATS),
    S("MWAI_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL, then "
      "optional LOGGER=LEVEL pairs, e.g. 'INFO,mwai.http=WARNING'. SIGHUP re-reads it.",
      "levels"),
    S("DEBUG", "false", "true: the same as MWAI_LOG_LEVEL=DEBUG (kept for old env files).",
      "bool"),
    S("MWAI_ENV_FILE", "", "KEY=VALUE file every mwai command reads (the environment and the "
      "command line win over it); empty: /etc/mwai/mwai.env when it exists. --env-file "
      "overrides it.", "path"),
    S("MWAI_SYNCHRONOUS", "FULL", "SQLite synchronous mode. FULL: an acknowledged webhook is "
      "on disk (fsync per group commit). NORMAL: faster, a power loss may lose the last "
      "acknowledged webhooks.", "choice", choices=SYNCHRONOUS_MODES),
    S("MWAI_DB_BUSY_TIMEOUT_MS", "1000", "How long a write waits for a lock held by another "
      "process before the webhook answers 503.", "int", minimum=0),
    S("MWAI_MAX_BODY_BYTES", "262144", "Largest webhook body accepted (413 above).", "int",
      minimum=1024),
    S("MWAI_MAX_ATTEMPTS", "3", "Attempts of a run before it fails for good (transient errors "
      "and lost workers each spend one).", "int", minimum=1),
    S("MWAI_RETRY_BASE_S", "5", "First retry delay after a transient error; doubles each "
      "attempt, with jitter.", "float", minimum=0),
    S("MWAI_RETRY_MAX_S", "600", "Longest retry delay.", "float", minimum=0),
    S("MWAI_LEASE_S", "60", "How long a claimed run stays owned without a heartbeat before "
      "another worker may take it over.", "float", minimum=1),
    S("MWAI_HEARTBEAT_S", "10", "How often running runs renew their lease.", "float",
      minimum=0.05),
    S("MWAI_RECOVERY_INTERVAL_S", "30", "How often expired leases are looked for and their "
      "runs re-queued.", "float", minimum=0.05),
    S("MWAI_RECONCILE_INTERVAL_S", "300", "How often (and once at start) mwai searches Jira "
      "for tickets it should act on that changed since its last pass, and queues what a "
      "lost webhook would have queued (Jira Automation does not redeliver); 0 turns the "
      "catch-up off.", "float", minimum=0),
    S("MWAI_POLL_S", "5", "Safety poll of idle workers (enqueue wakes them at once anyway).",
      "float", minimum=0.01),
    S("MWAI_SHUTDOWN_GRACE_S", "30", "On SIGTERM, how long running runs may finish before "
      "they are put back to queued (no attempt spent).", "float", minimum=0),
    S("MWAI_STUCK_AFTER_S", "3600", "A running run not updated for this long counts as stuck "
      "(/health/detailed, mwai alert).", "float", minimum=1),
    S("MWAI_QUEUE_AGE_ALERT_S", "900", "A queued run older than this makes /health/detailed "
      "degraded and mwai alert fire.", "float", minimum=1),
    S("MWAI_RATE_LIMIT_PER_S", "0", "Webhooks per second accepted from one client address "
      "(0: no limit; use when no reverse proxy limits the rate).", "float", minimum=0),
    S("MWAI_RATE_LIMIT_BURST", "20", "Burst size of the per-client rate limit.", "int",
      minimum=1),
    S("MWAI_CLIENT_TIMEOUT_S", "75", "A client connection that sends no complete request "
      "for this long is closed (idle or slow clients); a webhook body not received within "
      "it is answered 408. Keep it above the upstream keepalive_timeout of a reverse "
      "proxy (60 seconds in nginx).", "float", minimum=0.1),
    # jira
    S("JIRA_BASE_URL", "", "Base URL of the Jira site, e.g. https://example.atlassian.net.",
      group="jira", required_by=("jira",)),
    S("JIRA_EMAIL", "", "Email of the AI Runner Jira account (basic auth user).", group="jira",
      required_by=("jira",)),
    S("JIRA_API_TOKEN", "", "API token of the AI Runner Jira account.", group="jira",
      secret=True, required_by=("jira",)),
    S("JIRA_AI_ACCOUNT_ID", "", "accountId of the AI Runner Jira account; tickets assigned to "
      "it are worked on.", group="jira", required_by=("jira",)),
    S("JIRA_HUMAN_ACCOUNT_ID", "", "accountId of the human who reviews plans and results.",
      group="jira", required_by=("jira",)),
    S("JIRA_API_VERSION", "3", "Jira REST API version: 3 (Cloud, ADF bodies) or 2 (Data "
      "Center, plain-text bodies).", "choice", group="jira", choices=("2", "3")),
    S("JIRA_STATUS_BACKLOG", "Backlog", "Status of tickets waiting for a plan.", group="jira"),
    S("JIRA_STATUS_PLAN_REVIEW", "Plan Review", "Status of a planned ticket awaiting approval.",
      group="jira"),
    S("JIRA_STATUS_IN_PROGRESS", "In Progress", "Status of approved / executing tickets.",
      group="jira"),
    S("JIRA_STATUS_IN_TESTING", "In Testing", "Status of a sub-task whose change awaits "
      "review.", group="jira"),
    S("JIRA_STATUS_DONE", "Done", "Status of finished tickets.", group="jira"),
    S("JIRA_STATUS_BLOCKED", "Blocked", "Status of a ticket that needs a human.", group="jira"),
    S("MWAI_SKIP_LABELS", "ai:ignore", "Comma-separated labels that make mwai leave a ticket "
      "alone.", "csv", group="jira"),
    # github and git
    S("GH_TOKEN", "", "GitHub token (contents + pull requests write) used to push and open "
      "pull requests (or configure a GitHub App below).", group="github", secret=True,
      required_by=("jira",)),
    S("GH_APP_ID", "", "GitHub App id: authenticate as an App installation instead of "
      "GH_TOKEN (needs GH_APP_PRIVATE_KEY_FILE and GH_APP_INSTALLATION_ID).", group="github"),
    S("GH_APP_PRIVATE_KEY_FILE", "", "PEM file of the GitHub App's private key.", "path",
      group="github"),
    S("GH_APP_INSTALLATION_ID", "", "Installation id of the GitHub App on the repository's "
      "owner.", group="github"),
    S("GITHUB_API_URL", "https://api.github.com", "GitHub REST API base URL (GitHub "
      "Enterprise: https://HOST/api/v3).", group="github"),
    S("GH_REPO", "", "owner/name of the GitHub repository (single-repo setups).",
      group="github"),
    S("MWAI_REPO_URL", "", "Git URL of the repository the agent works on (single-repo "
      "setups; or use MWAI_REPOS_FILE).", group="github"),
    S("BASE_BRANCH", "main", "Branch that pull requests target and new branches start from.",
      group="github"),
    S("MWAI_REPOS_FILE", "", "TOML file mapping Jira project keys to repo_url, base_branch "
      "and github_repo (multi-repo setups).", "path", group="github"),
    S("MWAI_WORK_DIR", "./mwai-work", "Directory for the bare mirror clones and the per-run "
      "worktrees.", "path", group="github"),
    # llm
    S("MWAI_LLM_PROVIDER", "anthropic", "LLM used for plans and the built-in agent: "
      "'anthropic' (Messages API) or 'openai' (any OpenAI-compatible chat API).", "choice",
      group="llm", choices=LLM_PROVIDERS),
    S("ANTHROPIC_API_KEY", "", "Anthropic API key.", group="llm", secret=True),
    S("ANTHROPIC_MODEL", "claude-sonnet-4-5", "Anthropic model name.", group="llm"),
    S("ANTHROPIC_BASE_URL", "https://api.anthropic.com", "Anthropic API base URL.",
      group="llm"),
    S("OPENAI_API_KEY", "", "OpenAI (or compatible) API key.", group="llm", secret=True),
    S("OPENAI_MODEL", "gpt-4o", "OpenAI-compatible model name.", group="llm"),
    S("OPENAI_BASE_URL", "https://api.openai.com/v1", "OpenAI-compatible API base URL.",
      group="llm"),
    S("MWAI_LLM_MAX_TOKENS", "8192", "Largest LLM answer requested.", "int", group="llm",
      minimum=1),
    S("MWAI_LLM_TIMEOUT_S", "300", "Time limit of one LLM request.", "float", group="llm",
      minimum=1),
    S("MWAI_HTTP_TIMEOUT_S", "30", "Time limit of one Jira or GitHub request.", "float",
      group="llm", minimum=0.1),
    S("MWAI_HTTP_RETRIES", "4", "Retries of a Jira/GitHub/LLM request after 429, 5xx or a "
      "timeout, before the run itself is retried later.", "int", group="llm", minimum=0),
    # agent
    S("MWAI_AGENT", "", "Coding agent: 'claude-code' or 'codex' (mwai builds the published "
      "CLI's command line, see docs/agents.md), 'builtin' (the LLM edit agent) or 'command' "
      "(MWAI_AGENT_COMMAND as given). Empty: 'command' when MWAI_AGENT_COMMAND is set, else "
      "'builtin'.", "choice", group="agent", choices=AGENT_KINDS),
    S("MWAI_AGENT_COMMAND", "", "With MWAI_AGENT=command: the headless coding agent command "
      "run in the worktree (the prompt on stdin and in $MWAI_TASK_FILE). Prefer the presets "
      "(MWAI_AGENT=claude-code or codex).", group="agent"),
    S("MWAI_AGENT_PROGRAM", "", "Path of the preset's CLI; empty: 'claude' or 'codex' found "
      "on PATH.", "path", group="agent"),
    S("MWAI_AGENT_MODEL", "", "Model of the preset's CLI (--model); empty: the CLI's default.",
      group="agent"),
    S("MWAI_AGENT_MAX_TURNS", "60", "Turn limit of a Claude Code run (--max-turns; Codex has "
      "none: MWAI_AGENT_TIMEOUT_S bounds it).", "int", group="agent", minimum=1),
    S("MWAI_AGENT_BASE_URL", "", "Model API base URL of the preset's CLI (a gateway; with or "
      "without /v1). Empty: ANTHROPIC_BASE_URL for claude-code, OPENAI_BASE_URL for codex.",
      group="agent"),
    S("MWAI_AGENT_ALLOWED_COMMANDS", "", "Outside the sandbox: comma-separated command "
      "prefixes Claude Code may run through its shell tool (the repository's checks, e.g. "
      "'python -m pytest,make test'); anything else is denied.", "csv", group="agent"),
    S("CLAUDE_CODE_OAUTH_TOKEN", "", "Claude subscription token (`claude setup-token`) for "
      "MWAI_AGENT=claude-code, used when ANTHROPIC_API_KEY is empty.", group="agent",
      secret=True),
    S("CODEX_API_KEY", "", "API key of MWAI_AGENT=codex (Codex ignores OPENAI_API_KEY).",
      group="agent", secret=True),
    S("MWAI_AGENT_TIMEOUT_S", "1800", "Time limit of one agent run; its process group is "
      "killed after it.", "float", group="agent", minimum=1),
    S("MWAI_AGENT_PASS_ENV", "", "Comma-separated environment variables passed to the agent "
      "besides PATH, HOME and LANG (e.g. ANTHROPIC_API_KEY for claude).", "csv",
      group="agent"),
    S("MWAI_AGENT_MAX_OUTPUT_BYTES", "65536", "Agent output kept (the rest is truncated).",
      "int", group="agent", minimum=1024),
    S("MWAI_AGENT_MAX_CHANGE_BYTES", "1048576", "Largest change the built-in agent may write "
      "in one run.", "int", group="agent", minimum=1),
    S("MWAI_PROMPT_MAX_CHARS", "60000", "Largest prompt sent to the LLM or the agent (ticket "
      "text is cut to fit).", "int", group="agent", minimum=1000),
    # checks and sandbox (docs/security.md)
    S("MWAI_CHECKS", "", "Commands proving a change, separated by ';;' (the repos file has a "
      "checks list per repository). Empty: detected (README); 'none': no checks.", group="checks"),
    S("MWAI_SETUP", "", "Commands run before the checks, with network, separated by ';;'.",
      group="checks"),
    S("MWAI_MAX_FIX_ATTEMPTS", "3", "Times a failed check's output goes back to the agent before "
      "the sub-task is Blocked.", "int", group="checks", minimum=0),
    S("MWAI_CHECK_TIMEOUT_S", "900", "Time limit of a check.", "float", group="checks", minimum=1),
    S("MWAI_CHECKS_NETWORK", "false", "true: checks may use the network.", "bool", group="checks"),
    S("MWAI_SANDBOX", "bwrap", "Confinement of the agent and the checks: 'bwrap' (bubblewrap) "
      "or 'off' (unconfined, logged as a WARNING).", "choice", group="checks",
      choices=("bwrap", "off")),
    S("MWAI_SANDBOX_HIDE", "/etc/mwai", "Directories hidden from the sandbox besides mwai's "
      "database and work directories, HOME, /root, /home, /run (comma-separated).", "csv",
      group="checks"),
    S("MWAI_SANDBOX_MEMORY_BYTES", "8589934592", "Address space of a sandboxed process (0: no "
      "limit).", "int", group="checks", minimum=0),
    S("MWAI_SANDBOX_MAX_PROCESSES", "1024", "Processes of the sandbox's uid (0: no limit).",
      "int", group="checks", minimum=0),
    S("MWAI_SANDBOX_CPU_S", "3600", "CPU time of a sandboxed process (0: no limit).", "int",
      group="checks", minimum=0),
    S("MWAI_SANDBOX_MAX_OUTPUT_BYTES", "104857600", "A sandboxed command printing more is "
      "stopped.", "int", group="checks", minimum=1024),
    # observability
    S("SENTRY_DSN", "", "Sentry DSN; empty disables Sentry.", group="observability",
      secret=True),
    S("SENTRY_ENVIRONMENT", "production", "Sentry environment name.", group="observability"),
    S("SENTRY_TRACES_SAMPLE_RATE", "0.1", "Share of requests and runs traced (0 to 1).",
      "float", group="observability", minimum=0),
    S("MWAI_METRICS_TOKEN", "", "Bearer token required by GET /metrics (empty: open).",
      group="observability", secret=True),
    # dashboard
    S("MWAI_UI_TOKEN", "", "Token of the web dashboard (/dashboard/): its login page takes it "
      "and sets a signed session cookie. Empty (and MWAI_UI_ADMIN_TOKEN empty): the dashboard "
      "answers loopback clients only.", group="dashboard", secret=True),
    S("MWAI_UI_ADMIN_TOKEN", "", "Token that also allows the dashboard's actions (requeue, "
      "cancel, enqueue). Empty: MWAI_UI_TOKEN allows them.", group="dashboard", secret=True),
    S("MWAI_UI_TRUSTED_USER_HEADER", "", "Header set by a reverse proxy on 127.0.0.1 that "
      "authenticates users (single sign-on, e.g. X-Forwarded-User from oauth2-proxy); its "
      "value is the user recorded on actions. Empty: no header is trusted.",
      group="dashboard"),
    # alerts
    S("MWAI_ALERT_WEBHOOK_URL", "", "mwai alert: POST a JSON alert to this URL.",
      group="alerts", secret=True),
    S("MWAI_ALERT_SLACK_WEBHOOK_URL", "", "mwai alert: Slack incoming webhook URL.",
      group="alerts", secret=True),
    S("MWAI_ALERT_EMAIL_TO", "", "mwai alert: comma-separated recipients (needs "
      "MWAI_ALERT_SMTP_HOST).", "csv", group="alerts"),
    S("MWAI_ALERT_EMAIL_FROM", "mwai@localhost", "mwai alert: sender address.",
      group="alerts"),
    S("MWAI_ALERT_SMTP_HOST", "", "mwai alert: SMTP server host.", group="alerts"),
    S("MWAI_ALERT_SMTP_PORT", "25", "mwai alert: SMTP server port.", "int", group="alerts",
      minimum=1),
    S("MWAI_ALERT_SMTP_USER", "", "mwai alert: SMTP user (optional).", group="alerts"),
    S("MWAI_ALERT_SMTP_PASSWORD", "", "mwai alert: SMTP password (optional).", group="alerts",
      secret=True),
    S("MWAI_ALERT_SMTP_STARTTLS", "false", "mwai alert: use STARTTLS.", "bool",
      group="alerts"),
    S("MWAI_ALERT_COMMAND", "", "mwai alert: command run with the alert JSON on stdin.",
      group="alerts"),
    S("MWAI_ALERT_COOLDOWN_S", "3600", "mwai alert: the same alert is not re-sent within "
      "this time.", "float", group="alerts", minimum=0),
)
del S

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

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
