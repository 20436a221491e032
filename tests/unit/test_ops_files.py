"""The alert rules and the dashboard speak of metrics the service exports, and every
alert has its runbook entry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "availability-dashboard.json"
METRIC = re.compile(r"\b(availability_[a-z_]+)")
SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def exported_names() -> set[str]:
    """Metric names written as string literals in the service's code."""
    names: set[str] = set()
    for package in ("streams", "services"):
        for path in (ROOT / package).rglob("*.py"):
            if "gen" in path.parts:
                continue
            names.update(re.findall(r"[\"'](availability_[a-z_]+)[\"']", path.read_text()))
    return names


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_metric_used_by_alerts_and_dashboard_is_exported() -> None:
    exported = exported_names()
    assert "availability_worker_ready" in exported  # the scan finds what it should
    used = set(METRIC.findall(ALERTS.read_text())) | set(METRIC.findall(DASHBOARD.read_text()))
    used = {name for name in used if not name.endswith("_")}  # "availability_worker_*"
    unknown = sorted(name for name in used if base_name(name) not in exported)
    assert not unknown, unknown


def test_every_alert_has_a_runbook_entry_in_the_readme() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    headings = {
        line.removeprefix("#### ").strip().lower()
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("#### ")
    }
    assert rules
    for rule in rules:
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert anchor in headings, f"README has no '#### {rule['alert']}'"


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert all(target["expr"] for target in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
