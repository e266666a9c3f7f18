"""`mwai demo` and `mwai serve --demo`: the whole story offline, or the fakes and
mwai up for a hand-made request."""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import Any

from mwai.cli.parser import add_command, arg, flag
from mwai.demo.story import STORY_TIMEOUT_S, run_demo, serve_demo
from mwai.errors import UsageError
from mwai.logs import RUN_LOGGER


def _cmd_demo(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="mwai-demo-"))
    root = root.absolute()
    if (root / "origin.git").exists() or (root / "mwai.sqlite3").exists():
        raise UsageError(f"{root} holds an earlier demo; pass an empty --dir")

    def write(line: str) -> None:
        print(line, flush=True)

    # The timeline prints every event of every run; the run logger's warnings (a
    # failed check before its fix) would print them a second time, as raw log lines.
    logging.getLogger(RUN_LOGGER).setLevel(logging.ERROR)
    if args.serve:
        return asyncio.run(serve_demo(root, args.port, write))
    return asyncio.run(run_demo(root, write, args.timeout))


def cmd_serve_demo(args: argparse.Namespace) -> int:
    """`mwai serve --demo`: the fakes and mwai, up until Ctrl-C (port from --listen)."""
    port = int(args.listen.rpartition(":")[2]) if args.listen else 8088
    root = Path(tempfile.mkdtemp(prefix="mwai-demo-")).absolute()
    return asyncio.run(serve_demo(root, port, lambda line: print(line, flush=True)))


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_command(
        subparsers, None, "demo", "play the whole AI Runner story offline against built-in fakes",
        "Start fakes of Jira, GitHub and the LLM on 127.0.0.1, a sample git repository and "
        "mwai with a demo agent, then play: ticket assigned to AI -> plan -> approval -> two "
        "sub-tasks executed -> one PR with two commits -> Done. Exit 0 only if the whole story "
        "completed.",
        _cmd_demo,
        arg("--dir", metavar="PATH",
            help="empty directory for the database, repos and worktrees (default: a new "
                 "temporary directory, kept afterwards)"),
        arg("--timeout", type=float, default=STORY_TIMEOUT_S, metavar="SECONDS",
            help=f"give up after this long (default {STORY_TIMEOUT_S:g})"),
        flag("--serve", "keep the fakes and mwai running for a hand-made curl request (same as "
                        "`mwai serve --demo`)"),
        arg("--port", type=int, default=8088, help="port of mwai with --serve (default 8088)"))
