"""The alert rules (charts/ai-factory-twin/files/alerts.yaml): promtool checks them, runs
their unit tests (alerts_test.yaml), and every PromQL expression names only metrics the
services export (services/runtime/metrics.py) or Prometheus itself (``up``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from promql import PROMETHEUS_OWN, PROMTOOL, metric_names
from promql import promtool as run_promtool

from services.runtime import metrics

ROOT = Path(__file__).resolve().parent.parent
FILES = ROOT / "charts" / "ai-factory-twin" / "files"
RULES = FILES / "alerts.yaml"
RULE_TESTS = FILES / "alerts_test.yaml"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian prometheus)")


def promtool(*args: str, cwd: Path = FILES) -> subprocess.CompletedProcess:
    return run_promtool(*args, cwd=cwd)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_metric_names_parser() -> None:
    expr = (
        'sum by (site, cause) (rate(a_total{x="b_total"}[5m])) > on (site, run) '
        "group_left (c) d_celsius + 1e3 unless max_over_time(e_seconds[1h:1m]) and inf"
    )
    assert metric_names(expr) == {"a_total", "d_celsius", "e_seconds"}


def test_every_expression_names_only_exported_metrics() -> None:
    exported = metrics.exposed_names() | PROMETHEUS_OWN
    named: set[str] = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = names - exported
        assert not unknown, f"{rule['alert']}: {sorted(unknown)} are not exported"
        named |= names
    # The alerts of issue 14, each on the metric it is about.
    for name in (
        "up",
        "twin_clock_ticks_total",
        "twin_historian_lag_seconds",
        "twin_site_gpu_throttle_start_celsius",
        "twin_site_facility_supply_setpoint_celsius",
        "twin_site_interconnect_limit_watts",
        "twin_deviations_open",
    ):
        assert name in named, name


@needs_promtool
def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_alerts() -> None:
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for t in tests for case in t["alert_rule_test"]]
    for rule in rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']}: never seen firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']}: never seen quiet"


@needs_promtool
def test_a_changed_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests hold the thresholds: 97 % instead of 95 % leaves the 96 % case quiet."""
    text = RULES.read_text()
    assert "twin_site_interconnect_limit_watts > 0.95" in text
    (tmp_path / RULES.name).write_text(text.replace("limit_watts > 0.95", "limit_watts > 0.97"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode == 1
    assert "TwinFacilityPowerNearInterconnectLimit" in done.stdout + done.stderr
