"""The ``mwai`` program: every command group, the demo and the benchmark included.

This module sits on top of every layer (import-linter holds it there): the CLI
frame (mwai.cli.main) does not know the demo or the benchmark, which are built
on the production packages and never imported by them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mwai.bench import command as bench_command
from mwai.cli import actions, alert, check, inspect, prune, serve
from mwai.cli import main as cli_main
from mwai.demo import command as demo_command


def _serve_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    serve.register(sub, common, serve_demo=demo_command.cmd_serve_demo)


# The order of `mwai --help`.
COMMAND_GROUPS: tuple[cli_main.CommandGroup, ...] = (
    _serve_commands, demo_command.register, bench_command.register, inspect.register,
    actions.register, prune.register, check.register, alert.register,
)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main.main(COMMAND_GROUPS, argv)


if __name__ == "__main__":
    sys.exit(main())
