"""`mwai serve`, `mwai enqueue` and `mwai settings`: run the service, queue by hand,
list the settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from mwai import advice, telemetry
from mwai.cli.check import agent_cli_report
from mwai.cli.common import gather_sources, load_settings, print_json
from mwai.cli.parser import Handler, add_command, arg, flag
from mwai.errors import EXIT_OK, ConfigError, UsageError, WebhookError
from mwai.logs import WEB_LOGGER, configure_logging, log_levels
from mwai.queue.store import Store
from mwai.queue.writes import dumps
from mwai.server.app import serve
from mwai.server.sdnotify import Notifier
from mwai.server.webhook import validate_issue_key
from mwai.settings import SETTINGS, Settings
from mwai.sources import effective_rows


def _cmd_serve(args: argparse.Namespace) -> int:
    if getattr(args, "demo", False):
        demo_handler: Handler | None = getattr(args, "serve_demo", None)
        if demo_handler is None:
            raise UsageError("--demo is not available in this program")
        return demo_handler(args)
    overrides = {"MWAI_LISTEN": args.listen, "MWAI_WORKERS": args.workers,
                 "MWAI_PROCESSOR": args.processor}
    # Until the service handles SIGHUP (a reload), one must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    notes: list[str] = []
    settings = load_settings(args, overrides, require_secret=True, report=notes.append)
    # The example file's webhook secret is public: a service started with it would
    # accept anyone's webhooks (the other placeholders only fail their calls).
    refused = advice.placeholders({"JIRA_WEBHOOK_SECRET": settings.jira_webhook_secret})
    if refused:
        raise ConfigError(refused)
    # A preset whose CLI lacks its flags would Block every ticket: refuse to start instead.
    agent = agent_cli_report(settings) if settings.processor == "jira" else None
    if agent is not None and agent.problems:
        raise ConfigError(list(agent.problems))
    configure_logging(settings.log_format, levels=log_levels(settings))
    log = logging.getLogger(WEB_LOGGER)
    for note in notes:
        log.warning("settings: %s", note)

    def reload() -> Settings:
        return load_settings(args, overrides, require_secret=True,
                             report=lambda note: log.warning("settings: %s", note))

    telemetry.init_sentry(settings)
    try:
        asyncio.run(serve(settings, notifier=Notifier.from_environ(os.environ), reload=reload))
    finally:
        telemetry.close_sentry()
    return EXIT_OK


def _cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        issue_key = validate_issue_key(args.issue_key, "ISSUE-KEY")
    except WebhookError as exc:
        raise UsageError(exc.message) from None
    settings = load_settings(args)

    async def enqueue() -> Any:
        store = Store(settings.db, settings.synchronous, settings.db_busy_timeout_ms)
        await store.open()
        try:
            payload = dumps({"event_type": "manual", "issue_key": issue_key})
            return await store.enqueue(issue_key, payload, source="cli",
                                       event_type="manual", priority=args.priority)
        finally:
            await store.close()

    result = asyncio.run(enqueue())
    if args.json:
        print_json({"ok": True, "run_id": result.run_id, "coalesced": result.coalesced})
    elif result.coalesced:
        print(f"{issue_key} already had queued run {result.run_id}; the trigger joined it")
    else:
        print(f"queued run {result.run_id} for {issue_key}")
    return EXIT_OK


def _cmd_settings(args: argparse.Namespace) -> int:
    if args.effective:
        return _effective_settings(args)
    rows = [{"name": s.name, "default": s.default, "group": s.group, "secret": s.secret,
             "help": s.help} for s in SETTINGS]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if args.markdown:
        print("| Setting | Default | Meaning |")
        print("|---|---|---|")
        for row in rows:
            default = f"`{row['default']}`" if row["default"] else ""
            print(f"| `{row['name']}` | {default} | {row['help']} |")
        return EXIT_OK
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            print(f"\n[{group}]")
        print(f"{row['name']}={row['default']}\n    {row['help']}")
    return EXIT_OK


def _effective_settings(args: argparse.Namespace) -> int:
    """Each setting's value as a command would use it, where it came from, secrets
    masked; the problems and warnings of the values follow (not fatal here)."""
    sourced = gather_sources(args)
    rows = effective_rows(sourced)
    notes = sourced.notes + advice.unknown_names(sourced.given)
    try:
        notes += advice.unsafe_combinations(Settings.from_env(sourced.values,
                                                              check_required=False))
    except ConfigError as exc:
        notes += exc.problems
    if args.json:
        print_json({"env_file": sourced.env_file, "settings": rows, "warnings": notes})
        return EXIT_OK
    print(f"# env file: {sourced.env_file or '(none)'}")
    width = max(len(str(row["name"])) + len(str(row["value"])) for row in rows) + 2
    for row in rows:
        pair = f"{row['name']}={row['value']}"
        print(f"{pair:<{width}} # {row['source']}")
    for note in notes:
        print(f"# warning: {note}")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser,
             serve_demo: Handler | None = None) -> None:
    """Add serve, enqueue and settings; ``serve_demo`` runs `mwai serve --demo`
    (the demo package sits above the CLI, so the program passes it in)."""
    serve_command = add_command(
        sub, common, "serve", "run the webhook server and workers",
        "Run the HTTP server (webhook, health) and the workers until SIGTERM or Ctrl-C.",
        _cmd_serve,
        arg("--listen", metavar="HOST:PORT", help="overrides MWAI_LISTEN"),
        arg("--workers", type=int, metavar="N", help="overrides MWAI_WORKERS"),
        arg("--processor", choices=("jira", "noop"), help="overrides MWAI_PROCESSOR"),
        flag("--demo", "serve against built-in fakes of Jira, GitHub and the LLM and a sample "
                       "repository, to try the webhook by hand (only --listen applies; see "
                       "mwai demo)"))
    serve_command.set_defaults(serve_demo=serve_demo)
    add_command(
        sub, common, "enqueue", "queue a run for an issue by hand",
        "Queue a run for ISSUE-KEY without HTTP (e.g. to retry by hand). A running `mwai "
        "serve` picks it up within MWAI_POLL_S.",
        _cmd_enqueue,
        arg("issue_key", metavar="ISSUE-KEY"),
        arg("--priority", type=int, default=0, help="higher runs first (default 0)"),
        flag("--json", "print JSON"))
    add_command(
        sub, common, "settings", "list every setting with its default and meaning",
        "List every setting with its default and meaning; --effective shows the value each "
        "command uses and its source (precedence: command line > environment > env file > "
        "default), secrets masked.",
        _cmd_settings,
        flag("--json", "print JSON"),
        flag("--markdown", "print a Markdown table"),
        flag("--effective", "show the effective value and source of each setting"))
