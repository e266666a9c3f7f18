"""``mwai check``: the configuration, the database and (``--connect``) the APIs.

Every configuration problem is reported at once with the setting's name, then
whether the database opens with a current schema; ``--connect`` adds one call
to each remote service (mwai/cli/probes.py). Exit 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mwai import advice
from mwai.cli.common import database_bytes, format_bytes, gather_sources, print_json
from mwai.cli.parser import add_ops_command, flag
from mwai.cli.probes import check_connections
from mwai.errors import EXIT_OK, EXIT_PROBLEM, ConfigError, StoreError
from mwai.queue.schema import SCHEMA_VERSION
from mwai.queue.store import Store
from mwai.runner.agent.config import PRESETS, AgentConfig, agent_kind
from mwai.runner.agent.presets import CliReport, check_cli
from mwai.runner.verify.sandbox import Sandbox, SandboxConfig
from mwai.settings import SETTINGS_BY_NAME, Settings

_URL_SETTINGS = ("JIRA_BASE_URL", "GITHUB_API_URL", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL",
                 "MWAI_ALERT_WEBHOOK_URL", "MWAI_ALERT_SLACK_WEBHOOK_URL")


def extra_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(problems, warnings) that Settings.from_env does not look for."""
    problems: list[str] = []
    warnings: list[str] = []
    for name in _URL_SETTINGS:
        value = getattr(settings, SETTINGS_BY_NAME[name].field)
        if value and not re.match(r"https?://[^/\s]+", value):
            shown = "<hidden>" if SETTINGS_BY_NAME[name].secret else repr(value)
            problems.append(f"{name}={shown}: expected an http:// or https:// URL")
    if settings.alert_email_to and not settings.alert_smtp_host:
        problems.append("MWAI_ALERT_EMAIL_TO is set but MWAI_ALERT_SMTP_HOST is empty: "
                        "say which SMTP server sends the alert mail")
    if settings.repos_file and not Path(settings.repos_file).is_file():
        problems.append(f"MWAI_REPOS_FILE={settings.repos_file!r}: no such file")
    if settings.jira_webhook_secret and len(settings.jira_webhook_secret) < 16:
        warnings.append("JIRA_WEBHOOK_SECRET is shorter than 16 characters: use a long "
                        "random value (e.g. `openssl rand -hex 32`)")
    if agent_kind(settings) == "command":
        program = settings.agent_command.split()[0]
        if shutil.which(program) is None:
            problems.append(f"MWAI_AGENT_COMMAND: {program!r} is not found on PATH")
    if settings.processor == "jira":
        sandbox = Sandbox(SandboxConfig.of(settings))
        if not sandbox.config.enabled:
            warnings.append("MWAI_SANDBOX=off: the agent and the checks run unconfined, with "
                            "mwai's user and view of its files (docs/security.md)")
        elif problem := sandbox.problem():
            problems.append(f"MWAI_SANDBOX=bwrap: {problem}")
    if settings.lease_s <= settings.heartbeat_s:
        problems.append(f"MWAI_LEASE_S={settings.lease_s:g} must be longer than "
                        f"MWAI_HEARTBEAT_S={settings.heartbeat_s:g}, or live runs lose "
                        "their lease")
    return problems, warnings


def agent_cli_report(settings: Settings) -> CliReport | None:
    """The preset CLI's version and flags (MWAI_AGENT=claude-code|codex); None otherwise."""
    if agent_kind(settings) not in PRESETS:
        return None
    with tempfile.TemporaryDirectory(prefix="mwai-check-") as home:
        return check_cli(AgentConfig.of(settings), home)


async def check_database(path: str) -> tuple[bool, str]:
    if not Path(path).exists():
        parent = Path(path).absolute().parent
        if not parent.is_dir():
            return False, f"MWAI_DB={path}: directory {parent} does not exist"
        if not os.access(parent, os.W_OK):
            return False, f"MWAI_DB={path}: directory {parent} is not writable"
        return True, f"MWAI_DB={path} does not exist yet; `mwai serve` creates it"
    store = Store(path, readonly=True, create=False)
    try:
        await store.open()
        health = await store.health_counts(3600)
    except StoreError as exc:
        return False, f"MWAI_DB: {exc}"
    finally:
        await store.close()
    return True, (f"database {path}: opens, schema version {SCHEMA_VERSION} (current), "
                  f"{health.queued} queued, {health.running} running, "
                  f"{format_bytes(database_bytes(path))}")


def _cmd_check(args: argparse.Namespace) -> int:
    sourced = gather_sources(args)
    source = sourced.values
    # The example file's placeholders first: a service started with them accepts
    # webhooks signed with a secret published in this repository.
    problems: list[str] = advice.placeholders(source)
    warnings: list[str] = sourced.notes + advice.unknown_names(sourced.given)
    settings: Settings | None = None
    try:
        settings = Settings.from_env(source, check_required=True)
    except ConfigError as exc:
        problems += exc.problems
        # Still check what can be checked when only required values are missing.
        with contextlib.suppress(ConfigError):
            settings = Settings.from_env(source, check_required=False)
    agent = None
    if settings is not None:
        more, more_warnings = extra_problems(settings)
        problems += more
        warnings += more_warnings
        lease_lost = settings.lease_s <= settings.heartbeat_s  # a problem already
        warnings += [note for note in advice.unsafe_combinations(settings)
                     if not (lease_lost and note.startswith("MWAI_LEASE_S"))]
        agent = agent_cli_report(settings)
        if agent is not None:
            problems += agent.problems
            if not agent.tested and not agent.problems:
                warnings.append(f"{agent.line()}: it may work; docs/agents.md lists the "
                                "versions mwai is tested with")
    db_path = settings.db if settings else source.get("MWAI_DB",
                                                      SETTINGS_BY_NAME["MWAI_DB"].default)
    db_ok, db_line = run_async_value(check_database(db_path))
    report: dict[str, Any] = {"configuration": {"ok": not problems, "problems": problems,
                                                "warnings": warnings},
                              "database": {"ok": db_ok, "detail": db_line}}
    if agent is not None:
        report["agent"] = {"kind": agent.kind, "program": agent.program,
                           "version": agent.version, "tested": agent.tested,
                           "problems": list(agent.problems)}
    connect_ok = True
    if args.connect:
        if settings is None:
            report["connect"] = []
            problems.append("--connect skipped: fix the configuration first")
        else:
            results = run_async_value(check_connections(settings))
            report["connect"] = results
            connect_ok = all(item["ok"] is not False for item in results)
    ok = not problems and db_ok and connect_ok
    report["ok"] = ok
    if args.json:
        print_json(report)
        return EXIT_OK if ok else EXIT_PROBLEM
    print("configuration: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    for problem in problems:
        print(f"  PROBLEM {problem}")
    for warning in warnings:
        print(f"  warning {warning}")
    if agent is not None:
        print(f"agent: {agent.line()}")
    print(f"database: {'ok' if db_ok else 'PROBLEM'}: {db_line}")
    for item in report.get("connect", []):
        state = {True: "ok", False: "FAILED", None: "skipped"}[item["ok"]]
        print(f"{item['service']}: {state}: {item['detail']}")
    return EXIT_OK if ok else EXIT_PROBLEM


def run_async_value(coro: Any) -> Any:
    return asyncio.run(coro)


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_ops_command(
        subparsers, common, "check",
        "validate the configuration, the database and (--connect) the APIs",
        "Report every configuration problem with the setting's name, check that the database "
        "opens and its schema is current, and with --connect call Jira (GET /myself), GitHub "
        "(GET /user) and the LLM provider (list models). Exit 1 if anything is wrong.",
        _cmd_check,
        flag("--connect", "also call the configured Jira, GitHub and LLM endpoints"))
