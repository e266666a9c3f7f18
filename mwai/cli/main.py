"""The ``mwai`` command's frame: the parser from the command groups, and the exit code.

Each command group is a module with ``register(subparsers, common)`` adding its
subcommands; ``mwai.__main__`` lists them (the demo and the benchmark sit above
the CLI, so the program, not this module, knows them). A command's handler
returns its exit code; an ``MwaiError`` that reaches here prints one line on
stderr and ends the command with the error's own ``exit_code``.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mwai import __version__
from mwai.cli.common import fail
from mwai.cli.parser import Handler, common_parser
from mwai.errors import EXIT_OK, MwaiError
from mwai.logs import configure_logging

# A command group adds its subcommands to the `mwai` parser.
CommandGroup = Callable[[Any, argparse.ArgumentParser], None]

EXIT_INTERRUPTED = 130


def build_parser(groups: Sequence[CommandGroup]) -> argparse.ArgumentParser:
    common = common_parser()
    parser = argparse.ArgumentParser(
        prog="mwai",
        description="mwai: hand Jira tickets to an AI, with a durable run queue you can watch.",
    )
    parser.add_argument("--version", action="version", version=f"mwai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in groups:
        register(sub, common)
    return parser


def main(groups: Sequence[CommandGroup], argv: Sequence[str] | None = None) -> int:
    parser = build_parser(groups)
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
    except MwaiError as exc:
        fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `mwai runs | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return EXIT_OK
