"""Issue 19, point 9 (the deploy/ part): Prometheus alert rules that promtool accepts
and a Grafana dashboard, both querying only metrics mwai really exports (read
from a live /metrics scrape of `mwai serve`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.acceptance.service import Service

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "mwai-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "mwai.json"
PROMTOOL = shutil.which("promtool")
# Metric names in PromQL: mwai's own and the process collector's (Prometheus's own
# `up` is not mwai's to export).
METRIC_NAME = re.compile(r"\b((?:mwai|process)_[a-z_]+)\b")


def rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a scrape of `mwai serve` can carry, from its # TYPE lines."""
    service = Service(tmp_path_factory.mktemp("metrics")).start()
    try:
        with urllib.request.urlopen(service.url + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        service.stop()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        suffixes = {"histogram": ("_bucket", "_sum", "_count", "_created"),
                    "counter": ("", "_created"), "summary": ("_sum", "_count", "_created")}
        names |= {name + suffix for suffix in suffixes.get(kind, ("",))}
    assert "mwai_queue_depth" in names and "mwai_runs_failed_total" in names
    return names


def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL, "promtool is not installed (apt-get install prometheus); .ci/run does"
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in result.stdout


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_query_uses_metrics_mwai_exports(source: str, exported: set[str]) -> None:
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    assert expressions
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert used and used <= exported, sorted(used - exported)


def test_the_dashboard_imports_as_a_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "mwai"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in dashboard["panels"]:
        assert panel["targets"] and panel["datasource"]["type"] == "prometheus"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    used = set(re.findall(r"\$(\w+)", json.dumps(dashboard["panels"])))
    assert used <= variables, used - variables
