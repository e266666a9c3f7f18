"""Logger names are an interface (operators filter on the `logger` field): each is
a constant in mwai.logs, every getLogger in mwai takes one, and docs/logging.md
names exactly the loggers that exist."""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatchcase
from pathlib import Path

from mwai import logs

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mwai"
DOC = ROOT / "docs" / "logging.md"
# Libraries' loggers the doc describes: their lines reach stdout like mwai's.
DOCUMENTED_LIBRARY_LOGGERS = {"aiohttp.access", "aiohttp.*", "asyncio"}
# A logger name in backticks: mwai's own or a library's (`mwai` alone is the command).
DOC_LOGGER = re.compile(r"`((?:mwai|aiohttp)(?:\.[a-z_*]+)+|asyncio)`")


def _constants() -> dict[str, str]:
    return {name: value for name, value in vars(logs).items()
            if name.endswith("_LOGGER") and isinstance(value, str)}


def _get_logger_calls(source: str, filename: str) -> list[tuple[str, ast.Call]]:
    calls = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "getLogger":
                calls.append((f"{filename}:{node.lineno}", node))
    return calls


def _constant_named(call: ast.Call) -> str | None:
    """The constant a getLogger call names (LOGGER or logs.LOGGER), else None.
    No argument (the root logger) counts as named."""
    if not call.args and not call.keywords:
        return ""
    if len(call.args) != 1 or call.keywords:
        return None
    arg = call.args[0]
    name = arg.id if isinstance(arg, ast.Name) else (
        arg.attr if isinstance(arg, ast.Attribute) else None)
    return name if name in _constants() else None


def _names_used_in_mwai() -> tuple[set[str], list[str]]:
    used, bypassing = set(), []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(ROOT))
        for location, call in _get_logger_calls(path.read_text(), where):
            constant = _constant_named(call)
            if constant is None:
                bypassing.append(location)
            elif constant:
                used.add(constant)
    return used, bypassing


def _documented() -> set[str]:
    return set(DOC_LOGGER.findall(DOC.read_text()))


def test_every_get_logger_in_mwai_takes_a_named_constant() -> None:
    used, bypassing = _names_used_in_mwai()
    assert bypassing == [], "getLogger with a literal or __name__; add a constant to mwai/logs.py"
    assert used == set(_constants()), "a constant no module logs with"


def test_the_scan_sees_a_logger_that_bypasses_the_constants() -> None:
    source = ("import logging\nfrom mwai import logs\nfrom mwai.logs import WEB_LOGGER\n"
              "a = logging.getLogger(__name__)\nb = logging.getLogger('mwai.jira')\n"
              "c = logging.getLogger(WEB_LOGGER)\nd = logging.getLogger(logs.FLOW_LOGGER)\n"
              "e = logging.getLogger()\n")
    calls = _get_logger_calls(source, "m.py")
    assert [location for location, call in calls if _constant_named(call) is None] == [
        "m.py:4", "m.py:5"]


def test_constants_keep_the_names_operators_filter_on() -> None:
    names = set(_constants().values())
    assert {"mwai.web", "mwai.workers", "mwai.run", "mwai.http", "mwai.flow", "mwai.agent",
            "mwai.git", "mwai.store", "mwai.sdnotify", "mwai.telemetry",
            "mwai.metrics"} <= names
    assert len(names) == len(_constants()), "two constants for one logger"


def test_the_log_doc_names_exactly_the_loggers_that_exist() -> None:
    documented = _documented()
    own = {name for name in _constants().values() if name.startswith("mwai.")}
    assert {name for name in documented if name.startswith("mwai.")} == own
    assert {name for name in documented if not name.startswith("mwai.")} == (
        DOCUMENTED_LIBRARY_LOGGERS)
    libraries = set(_constants().values()) - own
    assert all(any(fnmatchcase(name, pattern) for pattern in DOCUMENTED_LIBRARY_LOGGERS)
               for name in libraries), libraries
