"""The table of every setting mwai reads: name, default, help text, kind, group.

It feeds ``Settings.from_env`` (mwai/settings.py), ``mwai check``, ``mwai settings``,
the README and deploy/mwai.env.example; a test checks that every field of
``Settings`` has a row and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    S("JIRA_EMAIL", "", "Email of the AI Runner Jira account (the basic auth user; on Data "
      "Center with JIRA_AUTH=basic, its username). Not needed with JIRA_AUTH=bearer.",
      group="jira", required_by=("jira",)),
    S("JIRA_API_TOKEN", "", "API token of the AI Runner Jira account; with JIRA_AUTH=bearer, "
      "its Data Center personal access token.", group="jira", secret=True,
      required_by=("jira",)),
    S("JIRA_AUTH", "basic", "How mwai authenticates to Jira: 'basic' (JIRA_EMAIL and "
      "JIRA_API_TOKEN; Cloud) or 'bearer' (JIRA_API_TOKEN is a Data Center personal access "
      "token, sent as 'Authorization: Bearer').", "choice", group="jira",
      choices=("basic", "bearer")),
    S("JIRA_AI_ACCOUNT_ID", "", "The AI Runner Jira account: its accountId on Cloud, its "
      "username on Data Center (JIRA_API_VERSION=2); tickets assigned to it are worked on.",
      group="jira", required_by=("jira",)),
    S("JIRA_HUMAN_ACCOUNT_ID", "", "The human who reviews plans and results: accountId on "
      "Cloud, username on Data Center (JIRA_API_VERSION=2).", group="jira",
      required_by=("jira",)),
    S("JIRA_API_VERSION", "3", "Jira REST API version: 3 (Cloud: ADF bodies, users by "
      "accountId) or 2 (Data Center: plain-text bodies, users by username).", "choice",
      group="jira", choices=("2", "3")),
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
    S("ANTHROPIC_BASE_URL", "https://api.anthropic.com", "Anthropic API base URL, with or "
      "without its trailing /v1.",
      group="llm"),
    S("OPENAI_API_KEY", "", "OpenAI (or compatible) API key.", group="llm", secret=True),
    S("OPENAI_MODEL", "gpt-4o", "OpenAI-compatible model name.", group="llm"),
    S("OPENAI_BASE_URL", "https://api.openai.com/v1", "OpenAI-compatible API base URL "
      "(a bare host gets /v1; a URL with a path is used as given).",
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
