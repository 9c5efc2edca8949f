"""End to end: a BMS client publishes over MQTT to nats-server's listener; the gateway
(a real Service: gRPC health) maps, checks and aligns it; the real domain services of
tests/sites/small.yaml use it at the next tick, and the historian stores it once in
`measurements`; garbage and a flood are counted and the gateway stays SERVING."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

import aiomqtt
import grpc
import nats
import psycopg
import pytest
import typed_stubs
from conftest import ROOT
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.adapters.bms import BmsNatsAdapter
from services.gateway.quality import Reason
from services.gateway.service import Gateway, GatewayConfig, gateway_setup
from services.launcher import LocalTwin, free_addresses
from services.runtime.nats_server import NatsServer
from services.runtime.service import Service
from twin.cooling.v1 import cooling_pb2
from twin.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gateway-live")]
SMALL = ROOT / "tests" / "sites" / "small.yaml"
VALUE = "BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu{}/supply"
MAP = r"""
sources:
  bms: {kind: bms, transport: nats}
points:
  - source: bms
    match: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu(?P<cdu>\d+)/supply'
    entity: 'cdu/{cdu}'
    quantity: supply_temperature_c
    range: [5, 60]
    stale_s: 300
"""
FLOOD = 3000


def payload(value, ms: int, quality: int = 1) -> bytes:
    return json.dumps({"value": value, "timestamp": ms, "quality": quality}).encode()


async def until(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_mqtt_point_reaches_the_cooling_domain_and_garbage_is_counted(tmp_path, postgres_url):
    map_path = tmp_path / "map.yaml"
    map_path.write_text(MAP)
    addresses = free_addresses()
    with (
        NatsServer(mqtt=True) as server,
        LocalTwin("small", addresses, nats_url=server.url, database_url=postgres_url) as twin,
    ):
        channel = grpc.insecure_channel(twin.addresses["twin"])
        clock = twin_pb2_grpc.TwinServiceStub(channel)
        spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=1.0)
        run_id = clock.Start(twin_pb2.StartRequest(spec=spec, paused=True), timeout=300).run_id

        def step(n: int) -> None:
            clock.Step(twin_pb2.StepRequest(run_id=run_id, ticks=n), timeout=60)

        config = GatewayConfig(
            site="small", nats_url=server.url, point_map=map_path, metrics_address="127.0.0.1:0"
        )
        asyncio.run(scenario(server, config, run_id, step))
        channel.close()
        # The historian stored what the gateway sent, once (the held 41.5 was re-sent at
        # every tick with its source time), in the run it arrived during: of the flood,
        # the values sent between ticks as they changed, the tick's value last.
        deadline = time.monotonic() + 30
        while (stored := measured(postgres_url, run_id)).get("cdu/1", [None])[-1] != 20.9:
            assert time.monotonic() < deadline, stored
            time.sleep(0.2)
        assert stored["cdu/0"] == [41.5]
        assert set(stored["cdu/1"]) <= {round(20.0 + i / 10, 6) for i in range(10)}


def measured(url: str, run_id: str) -> dict[str, list[float]]:
    """The stored supply temperatures of the run, per entity (rounded: float32 values)."""
    with psycopg.connect(url, prepare_threshold=None) as conn:
        rows = conn.execute(
            "SELECT entity, value FROM measurements WHERE run_id = %s"
            " AND quantity = 'supply_temperature_c' ORDER BY entity, time",
            (run_id,),
        ).fetchall()
    out: dict[str, list[float]] = {}
    for entity, value in rows:
        out.setdefault(entity, []).append(round(value, 6))
    return out


async def scenario(server: NatsServer, config: GatewayConfig, run_id: str, step) -> None:
    nc = await nats.connect(server.url)
    states: dict[int, cooling_pb2.CoolingState] = {}

    async def keep(msg) -> None:
        state = cooling_pb2.CoolingState.FromString(msg.data)
        if state.run_id == run_id:
            states[state.step] = state

    await nc.subscribe("twin.small.cooling.state", cb=keep)
    async with Service("gateway", gateway_setup, config=config, handle_signals=False) as svc:
        gateway = vars(svc)["gateway"]  # put there by gateway_setup, for tests
        assert isinstance(gateway, Gateway)
        stats = gateway.aligner.stats
        await asyncio.to_thread(step, 2)
        await until(lambda: 1 in states)
        modelled = states[1].tcs_supply_c[0]
        assert modelled != 41.5
        now_ms = int(time.time() * 1000)
        assert server.mqtt_port is not None
        async with aiomqtt.Client("127.0.0.1", server.mqtt_port) as mqtt:
            await mqtt.publish(VALUE.format(0), payload(41.5, now_ms), qos=1)
            await until(lambda: stats.accepted == 1)
            await asyncio.to_thread(step, 2)  # ticks 2, 3: used at the latest in step 3
            await until(lambda: 3 in states)
            # The gateway publishes on TICK 2; a node still stepping 2 uses it at once,
            # else at step 3 (measurements are not yet keyed by tick: see the README).
            assert 41.5 in (states[2].tcs_supply_c[0], states[3].tcs_supply_c[0])

            # Garbage: each rejected and counted; the held 41.5 stays in use.
            garbage = {
                VALUE.format(0): [
                    b"{not json",
                    payload(float("nan"), now_ms + 1),
                    payload(80.0, now_ms + 2),  # out of range
                    payload(42.0, now_ms + 3, quality=0),
                ],
                "BMS/v1/PUB/Value/HX/LiquidTemperature/hall-a/hx0": [payload(30.0, now_ms)],
            }
            for topic, bodies in garbage.items():
                for body in bodies:
                    await mqtt.publish(topic, body, qos=1)
            # Wrong units: metadata says kW for a temperature point.
            meta = json.dumps({"engUnit": "kilowatts"}).encode()
            await mqtt.publish(VALUE.format(0).replace("/Value/", "/Metadata/"), meta, qos=1)
            bms = gateway.adapters[0]
            assert isinstance(bms, BmsNatsAdapter)
            await until(lambda: VALUE.format(0) in bms.payloads.units)
            await mqtt.publish(VALUE.format(0), payload(35.0, now_ms + 4), qos=1)
            # A flood on cdu/1: all in range and in order; the last one is the tick's value.
            for i in range(FLOOD):
                await mqtt.publish(
                    VALUE.format(1), payload(20.0 + (i % 10) / 10, now_ms + i), qos=0
                )
        await until(lambda: stats.accepted + sum(stats.rejected.values()) == 1 + 6 + FLOOD)
        assert dict(+stats.rejected) == {
            "malformed": 1, "non_finite": 1, "out_of_range": 1, "bad_quality": 1,
            "unknown_point": 1, "unit": 1,
        }  # fmt: skip
        assert stats.accepted == 1 + FLOOD
        await asyncio.to_thread(step, 2)
        await until(lambda: 5 in states)
        # Held (last good value, not stale), in the step that received the tick's batch.
        used = [k for k in (4, 5) if states[k].tcs_supply_c[0] == 41.5]
        assert used, [states[k].tcs_supply_c[0] for k in (4, 5)]
        assert states[used[-1]].tcs_supply_c[1] == pytest.approx(20.9, abs=1e-5)

        # Still serving: gRPC health; and `twin gateway stats` reads the counters.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
            health = typed_stubs.aio_health(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            got = await gateway_pb2_grpc.GatewayServiceStub(channel).GetStats(
                gateway_pb2.GetStatsRequest(), timeout=5
            )
            assert (got.site_id, got.accepted, got.restarts) == ("small", 1 + FLOOD, 0)
            assert dict(got.rejected) == {
                r.value: dict(stats.rejected).get(r.value, 0) for r in Reason
            }
            assert (got.rejected["unit"], got.rejected["stale"]) == (1, 0)
            assert got.batches == gateway.batches >= 1
        # Prometheus reads the same counters on the gateway's /metrics port.
        url = f"http://127.0.0.1:{svc.metrics_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        exported = {
            (s.name, tuple(s.labels.items())): s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
        }
        assert exported[("twin_gateway_points_accepted_total", ())] == got.accepted
        for reason, n in got.rejected.items():
            assert exported[("twin_gateway_points_rejected_total", (("reason", reason),))] == n
        assert exported[("twin_gateway_batches_total", ())] >= got.batches
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "services.cli", "gateway", "stats", "--site", "small"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "TWIN_NATS_URL": server.url},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert f"accepted: {1 + FLOOD}" in lines and "rejected.unit: 1" in lines
        assert "rejected.stale: 0" in lines and "restarts: 0" in lines
    await nc.close()
