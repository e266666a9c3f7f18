"""The ``mwai`` command's frame: the parser from the command groups, and the exit code.

Each command group is a module with ``register(subparsers, common)`` adding its
subcommands; ``mwai.__main__`` lists them (the demo and the benchmark sit above
the CLI, so the program, not this module, knows them). A command's handler
returns its exit code; an ``MwaiError`` that reaches here prints one line on
stderr and ends the command with the error's own ``exit_code`` (the table is in
mwai/errors.py). Nothing else an operator can cause prints a traceback: an
unexpected OS error is one line and exit 1.

Comforts: ``mwai`` alone prints the help; a mistyped command, flag or choice
gets "did you mean"; ``mwai completion bash|zsh`` prints a completion script.
"""

from __future__ import annotations

import argparse
import difflib
import faulthandler
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import shtab

from mwai import __version__
from mwai.cli.common import fail, show_times_in_utc
from mwai.cli.parser import Handler, add_command, arg, common_parser
from mwai.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, MwaiError
from mwai.logs import configure_logging

# A command group adds its subcommands to the `mwai` parser.
CommandGroup = Callable[[Any, argparse.ArgumentParser], None]

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class MwaiParser(argparse.ArgumentParser):
    """argparse, whose errors suggest the closest command, choice or flag (exit 2)."""

    def error(self, message: str) -> NoReturn:
        found = _INVALID_CHOICE.search(message)
        if found:
            choices = re.findall(r"'([^']*)'", found.group(2))
            message += did_you_mean(found.group(1), choices)
        super().error(message)

    def unknown_flags(self, extras: Sequence[str]) -> NoReturn:
        """Arguments no option of this (sub)command takes, with the closest flag."""
        flags = [option for action in self._actions for option in action.option_strings]
        hints = [word + did_you_mean(word.split("=")[0], flags) if word.startswith("-")
                 else word for word in extras]
        self.error("unrecognized arguments: " + " ".join(hints))


def _completion(parser: argparse.ArgumentParser) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        sys.stdout.write(shtab.complete(parser, shell=args.shell))
        return EXIT_OK

    return handler


def build_parser(groups: Sequence[CommandGroup]) -> MwaiParser:
    common = common_parser()
    parser = MwaiParser(
        prog="mwai",
        description="mwai: hand Jira tickets to an AI, with a durable run queue you can watch.",
        epilog="Exit codes: 0 ok; 1 runtime failure or a problem found; 2 bad input (nothing "
               "changed); 3 alert notifier failed; 130 interrupted. `mwai COMMAND --help` for "
               "each command; `mwai completion bash|zsh` for shell completion.")
    parser.add_argument("--version", action="version", version=f"mwai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in groups:
        register(sub, common)
    add_command(
        sub, None, "completion", "print a shell completion script (bash or zsh)",
        "Print the completion script of mwai for SHELL. bash: mwai completion bash | sudo tee "
        "/etc/bash_completion.d/mwai; zsh: mwai completion zsh > \"${fpath[1]}/_mwai\".",
        _completion(parser),
        arg("shell", choices=("bash", "zsh"), metavar="SHELL", help="bash or zsh"))
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> MwaiParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            chosen = action.choices[command]
            assert isinstance(chosen, MwaiParser)
            return chosen
    assert isinstance(parser, MwaiParser)
    return parser


def main(groups: Sequence[CommandGroup], argv: Sequence[str] | None = None) -> int:
    parser = build_parser(groups)
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments:
        parser.print_help()
        return EXIT_OK
    args, extras = parser.parse_known_args(arguments)
    if extras:
        _subparser(parser, args.command).unknown_flags(extras)
    show_times_in_utc(bool(getattr(args, "utc", False)))
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
    except MwaiError as exc:
        fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `mwai runs | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK
    except (IsADirectoryError, NotADirectoryError, FileNotFoundError) as exc:
        # A path given by the operator that no check caught: bad input.
        fail(f"{exc.filename or exc}: {exc.strerror or exc}")
        return EXIT_USAGE
    except OSError as exc:
        # A fault of the machine (disk, permissions, network): one line, not a traceback.
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_PROBLEM
