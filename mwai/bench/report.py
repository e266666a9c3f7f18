"""Render a `mwai bench` document: the terminal table and the docs/benchmarks.md page."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from mwai.bench.targets import intake_level


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "not measured"}[passed]


def _rows(document: dict[str, Any]) -> Iterator[tuple[str, list[tuple[str, ...]]]]:
    """(section title, table rows) for the figures of every section that ran."""
    sections = document.get("sections", {})
    if "intake" in sections:
        rows: list[tuple[str, ...]] = [
            ("concurrency", "mwai webhooks/s", "p50 ms", "p99 ms", "max ms", "errors",
             "bare aiohttp req/s", "bare p99 ms", "ratio")]
        for level in sections["intake"]["levels"]:
            mwai, bare = level["mwai"], level["bare_aiohttp"]
            rows.append((str(level["concurrency"]), _fmt(mwai["rate_per_s"]),
                         _fmt(mwai["p50_ms"]), _fmt(mwai["p99_ms"]), _fmt(mwai["max_ms"]),
                         _fmt(mwai["errors"]), _fmt(bare["rate_per_s"]), _fmt(bare["p99_ms"]),
                         _fmt(level["ratio"])))
        yield f"Intake ({sections['intake']['duration_s']} s per level)", rows
    if "pickup" in sections:
        pickup = sections["pickup"]
        rows = [("webhooks", "claimed", "p50 ms", "p99 ms", "max ms", "after-ack p50 ms",
                 "after-ack p99 ms")]
        rows.append((_fmt(pickup["webhooks"]), _fmt(pickup["claimed"]), _fmt(pickup["p50_ms"]),
                     _fmt(pickup["p99_ms"]), _fmt(pickup["max_ms"]),
                     _fmt(pickup["after_ack"]["p50_ms"]), _fmt(pickup["after_ack"]["p99_ms"])))
        yield "Pickup (webhook -> claim, idle workers)", rows
    if "throughput" in sections:
        part = sections["throughput"]
        rows = [("workers", "completed", "runs/s", "events written", "events/s")]
        for row in part["workers"]:
            rows.append((str(row["workers"]), _fmt(row["completed"]), _fmt(row["runs_per_s"]),
                         _fmt(row["events_written"]), _fmt(row["events_per_s"])))
        yield (f"No-op run throughput ({_fmt(part['queued_runs'])} runs pre-queued, "
               f"{part['window_s']} s window)"), rows
    if "footprint" in sections:
        part = sections["footprint"]
        rows = [("ready (empty db)", "RSS idle", "RSS under load (peak)")]
        rows.append((_fmt(part["ready_empty_s"], "s"), _fmt(part["rss_idle_mb"], "MB"),
                     _fmt(part["rss_load_mb"], "MB")))
        yield "Footprint", rows
    if "sandbox" in sections and sections["sandbox"].get("available"):
        part = sections["sandbox"]
        rows = [("launch of /bin/true", "p50 ms", "p99 ms", "max ms")]
        for name in ("plain", "sandboxed"):
            rows.append((name, _fmt(part[name]["p50_ms"]), _fmt(part[name]["p99_ms"]),
                         _fmt(part[name]["max_ms"])))
        yield (f"Sandbox start ({part['launches']} launches; overhead p50 "
               f"{_fmt(part['overhead_p50_ms'], 'ms')})"), rows
    if "dashboard" in sections:
        part = sections["dashboard"]
        rows = [("live viewers", "connected", "updates/viewer/s", "webhooks/s without",
                 "with viewers", "p99 ms with", "ratio")]
        rows.append((_fmt(part["viewers"]), _fmt(part["viewers_connected"]),
                     _fmt(part["updates_per_viewer_per_s"]),
                     _fmt(part["without"]["rate_per_s"]),
                     _fmt(part["with_viewers"]["rate_per_s"]),
                     _fmt(part["with_viewers"]["p99_ms"]), _fmt(part["ratio"])))
        yield (f"Intake (c=32) with live dashboard viewers (means of alternating windows, "
               f"{part['rounds']} with viewers)"), rows
    if "scale" in sections:
        rows = [("runs", "events", "db MB", "ready s", "/health/detailed p50 ms", "p99 ms",
                 "mwai stats --since 7d s", "mwai runs --status failed s")]
        for size in sections["scale"]["sizes"]:
            health = size["health_detailed"]
            rows.append((_fmt(size["runs"]), _fmt(size["events"]), _fmt(size["db_mb"]),
                         _fmt(size["ready_s"]), _fmt(health["p50_ms"]), _fmt(health["p99_ms"]),
                         _cli_cell(size["stats"]), _cli_cell(size["runs_failed"])))
        yield "Scale", rows
        rows = [("runs", "runs page p50 ms", "p99 ms", "middle page p50 ms", "p99 ms",
                 "run page p50 ms", "p99 ms")]
        for size in sections["scale"]["sizes"]:
            pages = size.get("dashboard") or {}
            cells = [_fmt(size["runs"])]
            for name in ("runs_page", "runs_page_deep", "run_page"):
                page = pages.get(name) or {}
                cells += [_fmt(page.get("p50_ms")), _fmt(page.get("p99_ms"))]
            rows.append(tuple(cells))
        yield "Dashboard pages (one request at a time)", rows
        prune = sections["scale"].get("prune")
        if prune:
            intake = prune["intake"] or {}
            rows = [("old runs", "deleted", "prune wall s", "deleted/s", "projected s",
                     "webhooks/s", "p99 ms", "max ms", "errors")]
            rows.append((_fmt(prune["old_runs_before"]), _fmt(prune["deleted"]),
                         _cli_cell(prune["prune"]), _fmt(prune["runs_per_s"]),
                         _fmt(prune["projected_s"]), _fmt(intake.get("rate_per_s")),
                         _fmt(intake.get("p99_ms")), _fmt(intake.get("max_ms")),
                         _fmt(intake.get("errors"))))
            yield "Webhooks during `mwai prune --older-than 30d`", rows


def _cli_cell(result: dict[str, Any]) -> str:
    if not result.get("available"):
        return "not available"
    text = _fmt(result["wall_s"])
    if result.get("killed_after_interrupt_s"):
        return f"{text} (Ctrl-C ignored, killed {result['killed_after_interrupt_s']} s later)"
    if result.get("interrupt_sent_after_s"):
        stopped = result.get("exit_code") != 0
        return f"{text} ({'stopped' if stopped else 'finished despite Ctrl-C'})"
    return text if result.get("exit_code") == 0 else f"{text} (exit {result['exit_code']})"


def _target_rows(document: dict[str, Any]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("target", "limit", "measured", "verdict")]
    for row in document.get("targets", []):
        limit = f"{row['op']} {_fmt(row['limit'], row['unit'])}"
        rows.append((row["target"], limit, _fmt(row["value"], row["unit"]),
                     _verdict(row["passed"])))
    return rows


def render_table(document: dict[str, Any]) -> str:
    def table(rows: Sequence[Sequence[str]]) -> list[str]:
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                .rstrip() for row in rows]

    lines = [f"mwai bench {document['mwai_version']} ({document['mode']}), {document['date']}",
             f"load generator: {document['load_generator']}", ""]
    for title, rows in _rows(document):
        lines += [title, *table(rows), ""]
    lines += ["Targets", *table(_target_rows(document))]
    return "\n".join(lines) + "\n"


def render_markdown(document: dict[str, Any]) -> str:
    def table(rows: Sequence[Sequence[str]]) -> list[str]:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                for row in rows[1:]]
        return out

    info = document["machine"]
    lines = [
        "# mwai benchmarks",
        "",
        f"Generated by `mwai bench --json` ({document['mode']} mode) on {document['date']} "
        f"with mwai {document['mwai_version']}; rendered with `mwai bench --from-json FILE "
        "--markdown`.",
        "",
        "> These figures must be regenerated on a quiet machine before they are quoted: "
        "`mwai bench --json > bench.json && mwai bench --from-json bench.json --markdown "
        "> docs/benchmarks.md`. " + document.get("note", ""),
        "",
        "## Machine",
        "",
        *table([("what", "value"),
                ("CPU", f"{info['cpu']} x {info['cpus']}"),
                ("memory", _fmt(info["memory_mb"], "MB")),
                ("OS", str(info["os"])),
                ("Python / SQLite / aiohttp",
                 f"{info['python']} / {info['sqlite']} / {info['aiohttp']}"),
                ("database filesystem", str(info["db_filesystem"])),
                ("load average at start", ", ".join(str(x) for x in info["load_average"])),
                ("load generator", document["load_generator"]),
                ("service settings", "MWAI_PROCESSOR=noop, MWAI_SYNCHRONOUS=FULL, "
                                     "JSON logs to a file")]),
        "",
        "## Targets",
        "",
        *table(_target_rows(document)),
        "",
    ]
    for title, rows in _rows(document):
        lines += [f"## {title}", "", *table(rows), ""]
    missed = missed_targets(document)
    if missed:
        lines += ["## Missed targets", "",
                  *[f"- {line}" for line in missed], "",
                  "Where the time goes, with the profiles: "
                  "[performance.md](performance.md#where-the-time-goes-profiles).", ""]
    return "\n".join(lines)


def missed_targets(document: dict[str, Any]) -> list[str]:
    """One line per missed target saying by how much."""
    lines = []
    for row in document.get("targets", []):
        if row["passed"] is not False:
            continue
        value, limit = float(row["value"]), float(row["limit"])
        if row["op"] == "==":
            how = f"{_fmt(value)} instead of {_fmt(limit)}"
        elif row["op"] == ">=":
            how = f"{value / limit:.0%} of the target" if limit else "below the target"
        else:
            how = f"{value / limit:.1f}x the limit" if limit else "over the limit"
        line = (f"{row['target']}: {_fmt(value, row['unit'])} "
                f"(target {row['op']} {_fmt(limit, row['unit'])}; {how})")
        if row["key"] == "intake_p99":
            line += _closed_loop_note(document)
        lines.append(line)
    return lines


def _closed_loop_note(document: dict[str, Any]) -> str:
    """Little's law: with 32 requests always in flight, mean latency = 32 / rate."""
    level = intake_level(document, 32)
    if level is None:
        return ""
    bare = level["bare_aiohttp"]
    return (f". The generator keeps 32 requests in flight, so the mean latency is 32 / rate: "
            f"a 10 ms mean needs 3,200 webhooks/s; the bare aiohttp endpoint itself did "
            f"{_fmt(bare['rate_per_s'])} req/s with p99 {_fmt(bare['p99_ms'], 'ms')} here")
