"""Prometheus metrics (services/runtime/metrics.py): the catalog and its names, the
/metrics endpoint of a service, the gRPC interceptor's counts per method and code, the
bus counters, and the gauges made of a snapshot, the historian's and the gateway's own
counters. A real Prometheus scraping a running twin: tests/test_prometheus.py."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.quality import Reason, Stats
from services.historian.measurements import MeasurementStats
from services.historian.writer import WriterStats
from services.runtime import metrics
from services.runtime.codec import decode, reject
from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.service import Service
from twin.twin.v1 import clock_pb2, deviation_pb2, snapshot_pb2, twin_pb2, twin_pb2_grpc
from twin_core import contract
from twin_core.site import load_site

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "tests" / "sites" / "small.yaml"
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# Prometheus base units: a name never carries a scaled unit.
SCALED_UNITS = ("_mw", "_kw", "_mwh", "_kwh", "_ms", "_minutes", "_hours", "_tonnes", "_t_")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------------ the catalog


def test_catalog_names_follow_the_prometheus_conventions() -> None:
    for m in metrics.CATALOG:
        assert NAME_RE.match(m.name), m.name
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not any(u in m.name + "_" for u in SCALED_UNITS), m.name
        assert all(NAME_RE.match(label) for label in m.labels), m.name
    assert len({m.name for m in metrics.CATALOG}) == len(metrics.CATALOG)
    # The gauges, in base units, each labelled by site and run.
    for name in (
        "twin_site_facility_watts",
        "twin_site_it_watts",
        "twin_site_cooling_watts",
        "twin_site_pue_ratio",
        "twin_site_gpu_temp_max_celsius",
        "twin_site_tcs_supply_max_celsius",
        "twin_site_facility_supply_celsius",
        "twin_site_chillers_running",
        "twin_site_grid_watts",
        "twin_site_battery_watts",
        "twin_site_ppa_watts",
        "twin_site_cost_usd_per_second",
        "twin_site_emissions_grams_per_second",
    ):
        assert metrics.BY_NAME[name].labels == ("site", "run"), name


def test_every_contract_quantity_and_total_is_a_gauge() -> None:
    assert [s.key for s in metrics.QUANTITY_METRICS] == list(contract.SERIES)
    assert {s.key for s in metrics.TOTAL_METRICS} == set(contract.TOTALS)
    scales = {s.metric.name: s.scale for s in (*metrics.QUANTITY_METRICS, *metrics.TOTAL_METRICS)}
    assert scales["twin_site_delivered_flop_per_second"] == 1e15  # PFLOP/s
    assert scales["twin_site_emissions_grams_per_second"] == 1e6  # t/s
    assert scales["twin_run_emissions_grams"] == 1e6  # t
    assert scales["twin_site_price_usd_per_joule"] == 1 / 3.6e9  # USD/MWh
    assert scales["twin_site_carbon_grams_per_joule"] == 1 / 3.6e6  # g/kWh


def test_a_unit_without_a_prometheus_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^heat_btu: unit 'BTU' has no Prometheus name"):
        metrics._derive("heat_btu", "BTU", metrics.UNITS, "twin_site_")
    with pytest.raises(ValueError, match=r"^heat: a quantity in 'W' must be named \*_w$"):
        metrics._derive("heat", "W", metrics.UNITS, "twin_site_")


def test_docs_metrics_md_is_the_catalog() -> None:
    """docs/metrics.md is generated: `python -m services.runtime.metrics > docs/metrics.md`."""
    assert (ROOT / "docs" / "metrics.md").read_text() == metrics.markdown()
    for m in metrics.CATALOG:  # and the module's table names every family (or its pattern)
        stem = m.name if "_site_" not in m.name and "twin_run_" not in m.name else None
        if stem and not m.name.startswith("twin_gateway_"):
            assert stem in (metrics.__doc__ or ""), stem


# ------------------------------------------------------------------- the endpoint


def test_metrics_address_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"^TWIN_METRICS_ADDRESS: 'metrics' is not host:port"):
        RuntimeConfig.from_env({"TWIN_METRICS_ADDRESS": "metrics"})
    env = {"TWIN_GRPC_ADDRESS": "0.0.0.0:50051", "TWIN_METRICS_ADDRESS": "0.0.0.0:50051"}
    with pytest.raises(
        ConfigError, match=r"^TWIN_METRICS_ADDRESS: must differ from TWIN_GRPC_ADDRESS$"
    ):
        RuntimeConfig.from_env(env)
    env = {"TWIN_HEALTH_ADDRESS": "0.0.0.0:8081", "TWIN_METRICS_ADDRESS": "0.0.0.0:8081"}
    with pytest.raises(
        ConfigError, match=r"^TWIN_METRICS_ADDRESS: must differ from TWIN_HEALTH_ADDRESS$"
    ):
        RuntimeConfig.from_env(env)
    assert RuntimeConfig.from_env({"TWIN_METRICS_ADDRESS": " "}).metrics_address is None


class _Twin(twin_pb2_grpc.TwinServiceServicer):
    """GetSnapshot answers, Pause refuses, Watch streams two snapshots and then fails."""

    async def GetSnapshot(self, request, context):
        return twin_pb2.GetSnapshotResponse(snapshot=snapshot_pb2.SiteSnapshot(step=7))

    async def Pause(self, request, context):
        await context.abort(grpc.StatusCode.NOT_FOUND, "run_id: unknown run 'x'")

    async def Watch(self, request, context):
        for step in (1, 2):
            yield twin_pb2.WatchResponse(snapshot=snapshot_pb2.SiteSnapshot(step=step))
        raise RuntimeError("a bug")


SERVICE = "twin.twin.v1.TwinService"


def test_grpc_metrics_count_each_call_with_its_code() -> None:
    config = RuntimeConfig.from_env({}, metrics_address="127.0.0.1:0", site="metrics-test")

    async def setup(svc: Service) -> None:
        svc.grpc.add_servicer(twin_pb2_grpc.add_TwinServiceServicer_to_server, _Twin())

    async def main() -> None:
        async with Service("twin", setup, config=config, use_nats=False) as svc:
            port = svc.metrics_port
            assert port > 0
            before = await asyncio.to_thread(scrape, port)
            async with aio.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
                stub = twin_pb2_grpc.TwinServiceStub(channel)
                for _ in range(3):
                    await stub.GetSnapshot(twin_pb2.GetSnapshotRequest())
                with pytest.raises(aio.AioRpcError) as refused:
                    await stub.Pause(twin_pb2.PauseRequest(run_id="x"))
                assert refused.value.code() == grpc.StatusCode.NOT_FOUND
                seen = []
                with pytest.raises(aio.AioRpcError) as failed:
                    async for reply in stub.Watch(twin_pb2.WatchRequest()):
                        seen.append(reply.snapshot.step)
                assert (seen, failed.value.code()) == ([1, 2], grpc.StatusCode.INTERNAL)
            after = await asyncio.to_thread(scrape, port)
            info = value(after, "twin_service_info", service="twin", site="metrics-test",
                         instance_id="")  # fmt: skip
            assert info == 1.0

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        unary = {"grpc_service": SERVICE, "grpc_type": "unary"}
        get = {**unary, "grpc_method": "GetSnapshot"}
        pause = {**unary, "grpc_method": "Pause"}
        watch = {"grpc_service": SERVICE, "grpc_method": "Watch", "grpc_type": "server_stream"}
        assert delta("grpc_server_started_total", **get) == 3
        assert delta("grpc_server_handled_total", **get, grpc_code="OK") == 3
        assert delta("grpc_server_handled_total", **pause, grpc_code="NOT_FOUND") == 1
        assert delta("grpc_server_handled_total", **pause, grpc_code="OK") == 0
        assert delta("grpc_server_handled_total", **watch, grpc_code="INTERNAL") == 1
        assert delta("grpc_server_handling_seconds_count", **get) == 3
        assert delta("grpc_server_handling_seconds_bucket", **get, le="+Inf") == 3
        assert delta("grpc_server_handling_seconds_count", **pause) == 1

    asyncio.run(main())


def test_the_metrics_port_closes_with_the_service() -> None:
    config = RuntimeConfig.from_env({}, metrics_address="127.0.0.1:0")

    async def main() -> int:
        async with Service("power", None, config=config, use_nats=False) as svc:
            port = svc.metrics_port
            assert await asyncio.to_thread(scrape, port)
        return port

    port = asyncio.run(main())
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_bus_counters_garbled_and_rejected() -> None:
    garbled = metrics.bus_garbled.labels("twin.twin.v1.Clock")
    rejected = metrics.bus_rejected.labels("Clock.test_invalid")
    g0, r0 = garbled._value.get(), rejected._value.get()
    assert decode(clock_pb2.Clock, b"\xff\xff\xff", subject="twin.x.clock") is None
    reject(None, "Clock.test_invalid", "twin.x.clock", "step: -2")
    reject(None, "Clock.test_invalid", "twin.x.clock", "step: -3")
    assert (garbled._value.get() - g0, rejected._value.get() - r0) == (1, 2)


# ------------------------------------------------------------------ pulled gauges


def _by_name(samples: list[metrics.Sample]) -> dict[tuple[str, tuple], float]:
    return {(m.name, tuple(sorted(labels.items()))): v for m, labels, v in samples}


def test_snapshot_gauges_carry_the_snapshot_in_base_units() -> None:
    snapshot = snapshot_pb2.SiteSnapshot(
        run_id="r1", site_id="small", step=42, time_s=420.0, real_time_factor=12.5,
        state=snapshot_pb2.RUN_STATE_PAUSED,
    )  # fmt: skip
    snapshot.quantities.update(
        {"facility_w": 4.8e6, "pue": 1.2, "emissions_t_per_s": 2e-5, "price_usd_per_mwh": 72.0,
         "delivered_pflops": 3.5, "chillers_running": 2.0}
    )  # fmt: skip
    snapshot.totals.update({"cost_usd": 31.0, "emissions_t": 0.5})
    sensor, load = deviation_pb2.DEVIATION_CAUSE_SENSOR, deviation_pb2.DEVIATION_CAUSE_LOAD
    for cause in (sensor, sensor, load):
        snapshot.deviations.add(cause=cause)
    limits = metrics.Limits.of(load_site(SMALL))
    assert limits == metrics.Limits(5e6, 85.0, 30.0)  # tests/sites/small.yaml, the catalog
    got = _by_name(metrics.snapshot_samples(snapshot, limits))
    run = (("run", "r1"), ("site", "small"))

    def at(name: str, *extra: tuple[str, str]) -> float:
        return got[(name, tuple(sorted(run + extra)))]

    assert at("twin_site_facility_watts") == 4.8e6
    assert at("twin_site_pue_ratio") == 1.2
    assert at("twin_site_emissions_grams_per_second") == 20.0  # 2e-5 t/s
    assert at("twin_site_price_usd_per_joule") == 72.0 / 3.6e9  # 72 USD per 3.6e9 J
    assert at("twin_site_delivered_flop_per_second") == 3.5e15
    assert at("twin_site_chillers_running") == 2.0
    assert at("twin_run_cost_usd") == 31.0 and at("twin_run_emissions_grams") == 5e5
    assert (at("twin_run_step"), at("twin_run_time_seconds")) == (42, 420.0)
    assert at("twin_run_real_time_factor") == 12.5
    assert at("twin_run_state", ("state", "paused")) == 1.0
    assert at("twin_run_state", ("state", "running")) == 0.0
    assert at("twin_deviations_open", ("cause", "sensor")) == 2
    assert at("twin_deviations_open", ("cause", "load")) == 1
    assert at("twin_deviations_open", ("cause", "equipment")) == 0
    assert at("twin_site_interconnect_limit_watts") == 5e6
    assert at("twin_site_gpu_throttle_start_celsius") == 85.0
    assert at("twin_site_facility_supply_setpoint_celsius") == 30.0
    # Quantities the snapshot lacks are absent, not 0.
    assert ("twin_site_grid_watts", run) not in got


def test_a_snapshot_before_any_state_has_only_the_run_gauges() -> None:
    snapshot = snapshot_pb2.SiteSnapshot(site_id="small", state=snapshot_pb2.RUN_STATE_STOPPED)
    names = {m.name for m, _, _ in metrics.snapshot_samples(snapshot, None)}
    assert names == {m.name for m in metrics.RUN_METRICS}


def test_historian_gauges_read_the_writers_stats() -> None:
    states = WriterStats(batches=3, steps=40, db_failures=2, acked=160)
    measured = MeasurementStats()
    states.pending, states.newest_committed_s = 250, 1000.0
    measured.measurements, measured.pending, measured.newest_committed_s = 9, 0, 990.0
    got = _by_name(metrics.historian_samples({"states": states, "measurements": measured}, 1012.5))
    w = (("writer", "states"),)
    m = (("writer", "measurements"),)
    assert got[("twin_historian_batches_total", w)] == 3
    assert got[("twin_historian_rows_total", w)] == 40
    assert got[("twin_historian_rows_total", m)] == 9
    assert got[("twin_historian_write_retries_total", w)] == 2
    assert got[("twin_historian_acked_messages_total", w)] == 160
    assert got[("twin_historian_consumer_pending_messages", w)] == 250
    assert got[("twin_historian_lag_seconds", w)] == 12.5  # 1012.5 - 1000, messages pending
    assert got[("twin_historian_lag_seconds", m)] == 0.0  # caught up


def test_gateway_counters_are_its_get_stats_numbers() -> None:
    stats = Stats(accepted=17, published=12, ticks=4)
    stats.rejected[Reason.NON_FINITE.value] += 3
    reported = {**stats.as_dict(), "batches": 8, "restarts": 1}
    got = _by_name(metrics.gateway_samples(reported))
    assert got[("twin_gateway_points_accepted_total", ())] == 17
    assert got[("twin_gateway_points_rejected_total", (("reason", Reason.NON_FINITE.value),))] == 3
    assert got[("twin_gateway_values_published_total", ())] == 12
    assert got[("twin_gateway_ticks_total", ())] == 4
    assert got[("twin_gateway_batches_total", ())] == 8
    assert got[("twin_gateway_adapter_restarts_total", ())] == 1
    # One rejected series per reason the gateway knows, zeros included.
    reasons = {dict(k[1])["reason"] for k in got if k[0] == "twin_gateway_points_rejected_total"}
    assert reasons == {r.value for r in Reason}


def test_a_failing_provider_does_not_fail_the_scrape() -> None:
    def broken() -> list[metrics.Sample]:
        raise RuntimeError("gone")

    remove_broken = metrics.pulled.add(broken)
    remove_good = metrics.pulled.add(lambda: [(metrics.MONITOR_EVENTS, {"site": "p"}, 4)])
    try:
        families = {f.name: f for f in metrics.pulled.collect()}
        samples = families["twin_monitor_deviation_events"].samples
        assert [(s.name, s.labels, s.value) for s in samples if s.labels == {"site": "p"}] == [
            ("twin_monitor_deviation_events_total", {"site": "p"}, 4.0)
        ]
    finally:
        remove_broken()
        remove_good()
    assert all(s.labels != {"site": "p"} for f in metrics.pulled.collect() for s in f.samples)
