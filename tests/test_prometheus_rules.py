"""deploy/ (CONTRACT §9): the Prometheus rules pass `promtool check rules` and their unit tests
(`promtool test rules`, synthetic series in alerts_test.yml: a firing and a quiet case per rule),
each rule has a runbook line, and every metric the rules and the Grafana dashboard name is one
GET /metrics really exports (but node_exporter's and Prometheus' own `up`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Harness
from tests.test_ops import get

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "distbot.json"
# Named by the rules but exported by others: node_exporter (disk space) and Prometheus itself.
ELSEWHERE = {"node_filesystem_avail_bytes", "node_filesystem_size_bytes", "up"}
METRIC = re.compile(r"\b(?:distbot_\w+|node_\w+|up)\b")
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')  # label values: never metric names


def exported(exposition: str) -> set[str]:
    """The sample names a scrape can hold: each metric's TYPE line, with a histogram's series."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def named(expr: str) -> set[str]:
    return set(METRIC.findall(QUOTED.sub("", expr)))


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_promtool_checks_the_rules_and_their_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (.ci/run does)"
    for args in (["check", "rules", RULES.name], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    rules = [r for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]
    tested = set(re.findall(r"alertname: (\w+)", (RULES.parent / "alerts_test.yml").read_text(encoding="utf-8")))
    assert {r["alert"] for r in rules} == tested  # every rule has its cases
    assert all(r["annotations"]["runbook"].strip() and "\n" not in r["annotations"]["runbook"] for r in rules)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_rules_and_the_dashboard_name_only_exported_metrics(harness: Harness) -> None:
    status, _, text = await get(harness, "/metrics")
    assert status == 200
    names = exported(text)
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rules = [r for g in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]
    for source, exprs in (("alerts.yml", [r["expr"] for r in rules]), ("distbot.json", dashboard_exprs(board))):
        used = set().union(*(named(e) for e in exprs))
        assert used - names - ELSEWHERE == set(), f"{source} names metrics /metrics does not export"
        assert len(used & names) >= 15, used  # the pattern finds the names at all
    titles = " ".join(p["title"] for p in board["panels"] if p["type"] == "row")
    for part in ("Traffic", "Latency", "Outbox", "Campaigns", "Money flows", "Jobs"):
        assert part in titles
    # A wrong name would be caught: one the code does not export.
    assert named("rate(distbot_no_such_metric_total[5m]) > 0") - names == {"distbot_no_such_metric_total"}
