"""A real Prometheus server (Debian's `prometheus`) on loopback scrapes a running small-site
twin, every service on its own /metrics port, with the chart's alert rules loaded: every
target is up, every rule evaluates, and the twin's gauges carry the values of the snapshot
GetSnapshot returns (read back through Prometheus' HTTP API)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from services import scrape_targets
from services.dashboards import DASHBOARDS
from services.launcher import LocalTwin, free_addresses
from services.runtime import metrics
from services.serve import SERVICES
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc
from twin_core.site import load_site

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "tests" / "sites" / "small.yaml"
RULES = ROOT / "charts" / "ai-factory-twin" / "files" / "alerts.yaml"
PROMETHEUS = shutil.which("prometheus")
STEPS = 6

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("distributed"),
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) not installed"),
]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Prometheus:
    """prometheus on 127.0.0.1:<free port>, scraping the targets of a file_sd ``targets``
    file (as ``twin up --prometheus-targets`` writes it) every second, with ``RULES``
    loaded; its HTTP API through ``api``."""

    def __init__(self, tmp: Path, targets: Path) -> None:
        (port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "twin", "file_sd_configs": [{"files": [str(targets)]}]}
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = tmp / "prometheus.log"
        assert PROMETHEUS is not None
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float = 90.0) -> Any:
        """Until ``check()`` returns something true; it, or a failure naming ``what``."""
        deadline = time.monotonic() + timeout_s
        last: object = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                last = check()
            except (OSError, AssertionError) as exc:  # not listening yet
                last = exc
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"{what}: last {last!r}")

    def query(self, expr: str) -> dict[str, tuple[dict, float]]:
        """An instant query: {metric name: (labels, value)} (one series per name)."""
        out = {}
        for series in self.api("query", query=expr)["result"]:
            labels = series["metric"]
            out[labels["__name__"]] = (labels, float(series["value"][1]))
        return out

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def test_prometheus_scrapes_a_running_twin(tmp_path: Path) -> None:
    """Each service on its own /metrics port, as ``twin up`` starts them (the launcher's
    ``metrics_addresses``), found by Prometheus through the file ``twin up
    --prometheus-targets`` writes."""
    metrics_at = free_addresses(names=SERVICES)
    assert len(set(metrics_at.values())) == len(SERVICES)
    with LocalTwin(
        "small", free_addresses(), metrics_addresses=metrics_at, ready_timeout_s=240
    ) as twin:
        targets = tmp_path / "targets.json"
        scrape_targets.write(targets, twin.metrics_addresses, twin.instance_id)
        prometheus = Prometheus(tmp_path, targets)
        try:
            check_scrape(twin, prometheus, set(metrics_at))
        finally:
            prometheus.close()


def check_scrape(twin: LocalTwin, prometheus: Prometheus, services: set[str]) -> None:
    meta = (("x-twin-instance", twin.instance_id),)
    spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=10, horizon_s=3600)
    with grpc.insecure_channel(twin.addresses["twin"]) as channel:
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        start = twin_pb2.StartRequest(spec=spec, paused=True)
        run_id = stub.Start(start, timeout=300, metadata=meta).run_id
        stub.Step(twin_pb2.StepRequest(run_id=run_id, ticks=STEPS), timeout=300, metadata=meta)
        snapshot = stub.GetSnapshot(
            twin_pb2.GetSnapshotRequest(run_id=run_id), timeout=30, metadata=meta
        ).snapshot
    assert snapshot.step == STEPS and snapshot.quantities  # paused: it stays so

    # Every service is a target, and up.
    def all_up() -> dict[str, str]:
        targets = prometheus.api("targets")["activeTargets"]
        health = {t["labels"]["twin_service"]: t["health"] for t in targets}
        instances = {t["labels"]["twin_instance"] for t in targets}
        assert instances <= {twin.instance_id}, instances
        return health if set(health) == services and set(health.values()) == {"up"} else {}

    prometheus.wait("every target up", all_up)

    # A scrape after the steps: the gauges are the paused run's.
    run = f'run="{run_id}"'
    prometheus.wait(
        "the run's step scraped",
        lambda: (
            prometheus.query(f"twin_run_step{{{run}}}").get("twin_run_step", ({}, -1))[1] == STEPS
        ),
    )
    got = prometheus.query(f'{{__name__=~"twin_site_.*|twin_run_.*",{run}}}')
    expected = {"twin_run_step": float(snapshot.step), "twin_run_time_seconds": snapshot.time_s}
    for scaled in metrics.QUANTITY_METRICS:
        expected[scaled.metric.name] = snapshot.quantities[scaled.key] * scaled.scale
    for scaled in metrics.TOTAL_METRICS:
        expected[scaled.metric.name] = snapshot.totals[scaled.key] * scaled.scale
    limits = metrics.Limits.of(load_site(SMALL))
    expected["twin_site_interconnect_limit_watts"] = limits.interconnect_limit_w
    expected["twin_site_gpu_throttle_start_celsius"] = limits.gpu_throttle_start_c
    expected["twin_site_facility_supply_setpoint_celsius"] = limits.facility_supply_setpoint_c
    for name, want in expected.items():
        assert name in got, f"{name} not scraped"
        labels, value = got[name]
        assert (labels["site"], labels["twin_service"]) == ("small", "twin"), name
        assert value == want, f"{name}: Prometheus has {value!r}, the snapshot {want!r}"
    assert got["twin_site_facility_watts"][1] > got["twin_site_it_watts"][1] > 0  # a live site
    # twin_run_state: paused, one state at a time.
    states = prometheus.api("query", query=f"twin_run_state{{{run}}} == 1")["result"]
    assert [s["metric"]["state"] for s in states] == ["paused"]

    # The clock counted every tick; the gRPC metrics the Start, Step and GetSnapshot calls.
    def counted(expr: str) -> float:
        result = prometheus.api("query", query=expr)["result"]
        return sum(float(r["value"][1]) for r in result)

    assert counted('twin_clock_ticks_total{site="small"}') == STEPS
    for method in ("Start", "Step", "GetSnapshot"):
        expr = f'grpc_server_handled_total{{grpc_method="{method}",grpc_code="OK"}}'
        assert counted(expr) == 1, method
    # The historian stores every step, and says so.
    prometheus.wait(
        "historian rows",
        lambda: counted('twin_historian_rows_total{writer="states"}') == STEPS,
    )
    assert counted("twin_historian_write_retries_total") == 0
    assert counted('twin_service_info{twin_service="historian",service="historian"}') == 1

    # Every alert rule evaluates against the real series without an error.
    def rules_evaluated() -> list[dict]:
        groups = prometheus.api("rules")["groups"]
        found = [r for g in groups for r in g["rules"]]
        done = all(r.get("lastEvaluation", "").startswith("20") for r in found)  # not 0001-
        return found if found and done else []

    evaluated = prometheus.wait("rules evaluated", rules_evaluated)
    assert {r["name"] for r in evaluated} == {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
    }
    errors = [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"]
    assert errors == []
    # A healthy paused small site: nothing fires (the run is paused, not stalled).
    firing = [r["name"] for r in evaluated if r["state"] != "inactive"]
    assert firing == []
    check_dashboard_expressions(prometheus, run_id)


# Panels with nothing to show here: no call failed, no what-if study ran.
QUIET = {("site-overview", "gRPC errors"), ("what-if", "Calls by method and code"),
         ("what-if", "Latency (p95)")}  # fmt: skip


def check_dashboard_expressions(prometheus: Prometheus, run_id: str) -> None:
    """Every live expression of the Grafana dashboards (services/dashboards), with the
    panel's variables set to this run, is answered by Prometheus, with series (a rate
    has them once two scrapes hold the counter: waited for)."""
    exprs = []
    for board, build in DASHBOARDS.items():
        for panel in build()["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == "prometheus":
                    expr = target["expr"].replace("$__rate_interval", "1m")
                    expr = expr.replace("$site", "small").replace("$run", run_id)
                    exprs.append((f"{board}/{panel['title']}", expr, (board, panel["title"])))
    assert len(exprs) >= 80  # the four dashboards hold 86 today

    def unanswered() -> list[str]:
        empty = []
        for where, expr, key in exprs:
            result = prometheus.api("query", query=expr)["result"]  # asserts success
            if not result and key not in QUIET:
                empty.append(f"{where}: {expr}")
        return empty

    deadline = time.monotonic() + 60
    while (empty := unanswered()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not empty, "no series:\n" + "\n".join(empty)
