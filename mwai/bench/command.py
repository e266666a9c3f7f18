"""`mwai bench`: run the benchmark, or render a saved run, and judge the targets."""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from mwai import __version__
from mwai.bench import loadgen as lg
from mwai.bench.machine import machine
from mwai.bench.report import render_markdown, render_table
from mwai.bench.run import FULL, QUICK, SECTIONS, Bench
from mwai.bench.service import BenchError
from mwai.bench.targets import evaluate
from mwai.cli.common import fail, print_json
from mwai.cli.parser import OneOf, add_command, arg, flag
from mwai.errors import EXIT_OK, EXIT_PROBLEM, UsageError


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise UsageError(f"--only takes a comma-separated list of {', '.join(SECTIONS)} "
                         f"(got {text!r})")
    return chosen


def run_bench(only: Sequence[str], quick: bool, prefer_wrk: bool, directory: str | None,
              keep: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mwai-bench-", dir=directory))
    try:
        bench = Bench(root, QUICK if quick else FULL, prefer_wrk, progress, keep)
        document: dict[str, Any] = {
            "mwai_version": __version__,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if quick else "full",
            "machine": machine(root),
            "load_generator": lg.generator_name(prefer_wrk),
        }
        started = time.monotonic()
        document["sections"] = bench.run(only)
        document["wall_s"] = round(time.monotonic() - started, 1)
        document["errors"] = sum(int(part.get("errors", 0))
                                 for part in document["sections"].values())
        document["targets"] = evaluate(document)
        if quick:
            document["note"] = ("Quick mode: sizes and durations are shrunk for a smoke test; "
                                "the verdicts are indicative only.")
        return document
    except BaseException:
        keep = True  # the service logs named in the error must still be there
        raise
    finally:
        if keep:
            progress(f"kept the databases and logs in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.from_json:
        try:
            document = orjson.loads(Path(args.from_json).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UsageError(f"cannot read {args.from_json}: {exc}") from None
        document["targets"] = evaluate(document)
        if args.note:
            document["note"] = args.note
    else:
        only = parse_only(args.only)

        def progress(message: str) -> None:
            if not args.silent:
                sys.stderr.write(f"bench: {message}\n")
                sys.stderr.flush()

        try:
            document = run_bench(only, args.quick, not args.no_wrk, args.dir, args.keep,
                                 progress)
            if args.note:
                document["note"] = f"{document.get('note', '')} {args.note}".strip()
        except BenchError as exc:
            fail(f"bench: {exc}")
            return EXIT_PROBLEM
    if args.json:
        print_json(document)
    elif args.markdown:
        sys.stdout.write(render_markdown(document))
    else:
        sys.stdout.write(render_table(document))
    missed = any(row["passed"] is False for row in document["targets"])
    return EXIT_PROBLEM if args.check and missed else EXIT_OK


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    add_command(
        subparsers, None, "bench", "measure intake, pickup, throughput, scale and footprint",
        "Start `mwai serve` (noop processor, synchronous=FULL) on temporary databases and "
        "measure it against the performance targets. Uses wrk as the load generator when "
        "installed, else aiohttp clients in several processes. Takes several minutes; --quick "
        "takes seconds.",
        _cmd_bench,
        flag("--quick", "tiny sizes and durations (smoke test; verdicts indicative only)"),
        arg("--only", metavar="SECTIONS",
            help=f"comma-separated sections to run: {','.join(SECTIONS)}"),
        OneOf((flag("--json", "print one JSON document"),
               flag("--markdown", "print the docs/benchmarks.md page"))),
        arg("--from-json", metavar="FILE",
            help="render a saved `mwai bench --json` document instead of measuring"),
        flag("--check", "exit 1 when a measured target is missed"),
        flag("--no-wrk", "use the built-in load generator even if wrk is installed"),
        arg("--dir", metavar="PATH",
            help="where the temporary databases go (default: the system temp directory; use "
                 "the production disk for meaningful fsync costs)"),
        flag("--keep", "keep the temporary databases and service logs"),
        flag("--silent", "no progress lines on stderr"),
        arg("--note", metavar="TEXT",
            help="a remark kept with the figures (e.g. what else ran on the machine)"))
