"""The ``mwai`` command: parse arguments, build settings, call the code, map errors.

Exit codes: 0 success; 1 the thing asked about is wrong (an alert fired, a
check failed, the service failed at run time); 2 bad usage, bad configuration
or bad input (nothing was changed).

Commands live next to the code they drive: each module in ``COMMAND_MODULES``
has ``register(subparsers, common)`` adding its subcommands.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from mwai import __version__
from mwai.errors import (
    ConfigError,
    InvalidRunState,
    MwaiError,
    NotMwaiDatabase,
    RunNotFound,
    StoreError,
    StoreUnavailable,
)
from mwai.logs import configure_logging
from mwai.settings import SETTINGS, Settings, read_env_file

COMMAND_MODULES: tuple[str, ...] = ("mwai.demo", "mwai.bench", "mwai.views", "mwai.actions",
                                      "mwai.alerts")
CORE_COMMANDS = ("serve", "enqueue", "settings")
# Which module defines a command, so `mwai serve` (start-up time matters) and
# `mwai runs` import only what they use. A command missing here still works:
# every module is imported when the command is not recognised.
COMMAND_OWNERS: dict[str, str] = {
    **dict.fromkeys(("runs", "show", "stats", "monitor"), "mwai.views"),
    **dict.fromkeys(("requeue", "cancel", "unlock", "prune", "check"), "mwai.actions"),
    "alert": "mwai.alerts",
    "demo": "mwai.demo",
    "bench": "mwai.bench",
}

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]


class UsageError(MwaiError):
    """Bad command-line input; exit 2."""


def common_parser() -> argparse.ArgumentParser:
    """Options every command accepts."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env-file", metavar="PATH",
                        help="read settings from a systemd-style KEY=VALUE file "
                             "(its values win over the environment)")
    common.add_argument("--db", metavar="PATH",
                        help="SQLite database (default: $MWAI_DB or ./mwai.sqlite3)")
    return common


def load_settings(args: argparse.Namespace, overrides: Mapping[str, Any] | None = None,
                  require_secret: bool = False,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment, --env-file and command-line overrides.

    ``require_secret=True`` for commands that run the service: every setting the
    chosen processor needs is then required (the webhook secret first of all).
    """
    source = dict(os.environ if environ is None else environ)
    if getattr(args, "env_file", None):
        source.update(read_env_file(args.env_file))
    values = {name: str(value) for name, value in (overrides or {}).items()
              if value is not None}
    if getattr(args, "db", None):
        values["MWAI_DB"] = args.db
    return Settings.from_env(source, values, check_required=require_secret)


def print_json(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")


def fail(message: str) -> None:
    """One clear line on stderr."""
    sys.stderr.write(f"mwai: {message}\n")


# ----------------------------------------------------------------- commands


def _cmd_serve(args: argparse.Namespace) -> int:
    if getattr(args, "demo", False):
        from mwai.demo import cmd_serve_demo

        return cmd_serve_demo(args)
    overrides = {"MWAI_LISTEN": args.listen, "MWAI_WORKERS": args.workers,
                 "MWAI_PROCESSOR": args.processor}
    settings = load_settings(args, overrides, require_secret=True)
    configure_logging(settings.log_format, settings.debug)
    from mwai import telemetry
    from mwai.sdnotify import Notifier
    from mwai.web import serve

    telemetry.init_sentry(settings)
    try:
        asyncio.run(serve(settings, notifier=Notifier.from_environ(os.environ)))
    finally:
        telemetry.close_sentry()
    return EXIT_OK


def _cmd_enqueue(args: argparse.Namespace) -> int:
    from mwai.store import Store, dumps
    from mwai.webhook import WebhookError, validate_issue_key

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


def _modules_for(argv: Sequence[str] | None) -> tuple[str, ...]:
    words = [word for word in (sys.argv[1:] if argv is None else argv)
             if not word.startswith("-")]
    command = words[0] if words else ""
    if command in CORE_COMMANDS:
        return ()
    owner = COMMAND_OWNERS.get(command)
    if owner in COMMAND_MODULES:
        return (owner,)
    return COMMAND_MODULES


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="mwai",
        description="mwai: hand Jira tickets to an AI, with a durable run queue you can watch.",
    )
    parser.add_argument("--version", action="version", version=f"mwai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the webhook server and workers",
                           description="Run the HTTP server (webhook, health) and the workers "
                                       "until SIGTERM or Ctrl-C.")
    serve.add_argument("--listen", metavar="HOST:PORT", help="overrides MWAI_LISTEN")
    serve.add_argument("--workers", type=int, metavar="N", help="overrides MWAI_WORKERS")
    serve.add_argument("--processor", choices=("jira", "noop"), help="overrides MWAI_PROCESSOR")
    serve.add_argument("--demo", action="store_true",
                       help="serve against built-in fakes of Jira, GitHub and the LLM and a "
                            "sample repository, to try the webhook by hand (only --listen "
                            "applies; see mwai demo)")
    serve.set_defaults(handler=_cmd_serve)

    enqueue = sub.add_parser("enqueue", parents=[common], help="queue a run for an issue by hand",
                             description="Queue a run for ISSUE-KEY without HTTP (e.g. to retry "
                                         "by hand). A running `mwai serve` picks it up within "
                                         "MWAI_POLL_S.")
    enqueue.add_argument("issue_key", metavar="ISSUE-KEY")
    enqueue.add_argument("--priority", type=int, default=0,
                         help="higher runs first (default 0)")
    enqueue.add_argument("--json", action="store_true", help="print JSON")
    enqueue.set_defaults(handler=_cmd_enqueue)

    settings = sub.add_parser("settings", help="list every setting with its default and meaning")
    settings.add_argument("--json", action="store_true", help="print JSON")
    settings.add_argument("--markdown", action="store_true", help="print a Markdown table")
    settings.set_defaults(handler=_cmd_settings)

    for name in _modules_for(argv):
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # `kill -USR1 <pid>` prints where every thread of a stuck mwai is (to stderr,
    # the journal for the service) and lets it go on.
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (OSError, ValueError, AttributeError):
        pass  # stderr is not a real file (captured in tests): no dump, nothing else lost
    if not logging.getLogger().handlers:
        configure_logging("text")
        logging.getLogger().setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        fail(str(exc))
        return EXIT_USAGE
    except (UsageError, RunNotFound, InvalidRunState, NotMwaiDatabase) as exc:
        fail(str(exc))
        return EXIT_USAGE
    except StoreUnavailable as exc:
        fail(str(exc))
        return EXIT_PROBLEM
    except StoreError as exc:
        fail(str(exc))
        return EXIT_USAGE
    except MwaiError as exc:
        fail(str(exc))
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mwai runs | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
