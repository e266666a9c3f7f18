"""The building blocks of the ``mwai`` parser that every command group uses.

A command is declared in one call, ``add_command``: its name, help, description,
handler and its arguments, each an ``Argument`` made by the helpers here
(``arg`` for any, ``flag``, ``duration``, ``count``; ``RUN_ID`` and ``JSON`` as
the operator commands share them). Its handler returns the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def common_parser() -> argparse.ArgumentParser:
    """Options every command accepts."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env-file", metavar="PATH",
                        help="read settings from a systemd-style KEY=VALUE file (default: "
                             "$MWAI_ENV_FILE, else /etc/mwai/mwai.env when it exists); "
                             "the environment and command-line options win over it")
    common.add_argument("--db", metavar="PATH",
                        help="SQLite database (default: $MWAI_DB or ./mwai.sqlite3)")
    common.add_argument("--utc", action="store_true",
                        help="show times in UTC (default: local time, its zone shown)")
    return common


@dataclass(frozen=True)
class Argument:
    """One ``add_argument`` call: the names (or the positional's dest) and its keywords."""

    names: tuple[str, ...]
    options: Mapping[str, Any]


@dataclass(frozen=True)
class OneOf:
    """Arguments of which a command accepts at most one (a mutually exclusive group)."""

    arguments: tuple[Argument, ...]


def arg(*names: str, **options: Any) -> Argument:
    return Argument(names, options)


def flag(name: str, help_text: str) -> Argument:
    """An option that is on or off."""
    return arg(name, action="store_true", help=help_text)


def duration(name: str, help_text: str, **options: Any) -> Argument:
    """An option given as a duration (30s, 10m, 1h, 7d): its handler parses it."""
    return arg(name, metavar="DURATION", help=help_text, **options)


def count(name: str, default: int, help_text: str) -> Argument:
    """A whole number N, with its default."""
    return arg(name, type=int, default=default, metavar="N", help=help_text)


RUN_ID = arg("run_id", metavar="RUN_ID", help="the run id (see `mwai runs`)")
OPTIONAL_RUN_ID = arg("run_id", metavar="RUN_ID", nargs="?",
                      help="the run id (see `mwai runs`); or select many with the options")
BY = arg("--by", metavar="NAME",
         help="who does this: recorded in each run's event, e.g. 'cancelled by NAME' "
              "(default: your login name)")
DRY_RUN = flag("--dry-run", "only list what would be done; change nothing")
JSON = flag("--json", "print one JSON document (stable field names; times as epoch seconds "
                      "plus *_iso UTC strings)")


def add_command(subparsers: Any, common: argparse.ArgumentParser | None, name: str,
                help_text: str, description: str | None, handler: Handler,
                *arguments: Argument | OneOf,
                raw_description: bool = False) -> argparse.ArgumentParser:
    """Add the command ``name`` (with the ``common`` options, if given) that runs ``handler``.

    ``raw_description``: print the description as written, its line breaks kept.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, parents=[] if common is None else [common], help=help_text,
        description=description,
        formatter_class=(argparse.RawDescriptionHelpFormatter if raw_description
                         else argparse.HelpFormatter))
    for item in arguments:
        if isinstance(item, OneOf):
            group = parser.add_mutually_exclusive_group()
            for argument in item.arguments:
                group.add_argument(*argument.names, **argument.options)
        else:
            parser.add_argument(*item.names, **item.options)
    parser.set_defaults(handler=handler)
    return parser


def add_ops_command(subparsers: Any, common: argparse.ArgumentParser, name: str,
                    help_text: str, description: str, handler: Handler,
                    *arguments: Argument) -> argparse.ArgumentParser:
    """An operator command (mwai/cli/{inspect,actions,check}.py): its description as
    written, and --json last."""
    return add_command(subparsers, common, name, help_text, description, handler,
                       *arguments, JSON, raw_description=True)
