"""DCGM exporter scraping: real HTTP endpoints on loopback (a good one, a slow one, a
dead one), parsed with prometheus_client's parser, GPUs summed into their rack."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nats
import pytest

from services.gateway.adapters.dcgm import parse_dcgm
from services.gateway.pointmap import parse_pointmap
from services.gateway.service import Gateway
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2 as tm

LABELS = (
    'gpu="{gpu}",UUID="GPU-{host}-{gpu}",device="nvidia{gpu}",modelName="NVIDIA GB200",'
    'Hostname="{host}"'
)


def exposition(host: str, watts: list[float], energy_mj: float) -> str:
    lines = [
        "# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).",
        "# TYPE DCGM_FI_DEV_POWER_USAGE gauge",
    ]
    lines += [
        f"DCGM_FI_DEV_POWER_USAGE{{{LABELS.format(gpu=g, host=host)}}} {w}"
        for g, w in enumerate(watts)
    ]
    lines += [
        "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).",
        "# TYPE DCGM_FI_DEV_GPU_TEMP gauge",
        f"DCGM_FI_DEV_GPU_TEMP{{{LABELS.format(gpu=0, host=host)}}} 61",
        "# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).",
        "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter",
        f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{LABELS.format(gpu=0, host=host)}}} {energy_mj}",
        "# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.",
        "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge",
        f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{LABELS.format(gpu=0, host=host)}}} 0.875",
        "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).",
        "# TYPE DCGM_FI_DEV_SM_CLOCK gauge",
        f"DCGM_FI_DEV_SM_CLOCK{{{LABELS.format(gpu=0, host=host)}}} 1980",
    ]
    return "\n".join(lines) + "\n"


def test_parse_dcgm_exposition():
    readings = parse_dcgm("gpus", exposition("node-a", [600.0, 700.5], 1e6), now=100.0)
    assert [(r.point, r.value, r.time_s) for r in readings] == [
        ("DCGM_FI_DEV_POWER_USAGE/node-a/0", 600.0, 100.0),
        ("DCGM_FI_DEV_POWER_USAGE/node-a/1", 700.5, 100.0),
        ("DCGM_FI_DEV_GPU_TEMP/node-a/0", 61.0, 100.0),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION/node-a/0", 1e6, 100.0),
        ("DCGM_FI_PROF_GR_ENGINE_ACTIVE/node-a/0", 0.875, 100.0),
    ]  # SM clock: not a metric the gateway reads


class Exporter:
    """DCGM-format endpoints: /node-a, /node-b; /slow answers after 2 s."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/slow":
                    time.sleep(2)
                body = bodies.get(self.path.strip("/"), "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter():
    e = Exporter()
    yield e
    e.close()


def test_rack_power_from_dcgm_with_dead_and_slow_endpoints(exporter):
    exporter.bodies["node-a"] = exposition("node-a", [600.0, 700.0], 1e6)
    exporter.bodies["node-b"] = exposition("node-b", [500.0, 500.0], 1e6)
    exporter.bodies["slow"] = exposition("node-c", [1.0], 1e6)
    text = rf"""
sources:
  gpus:
    kind: dcgm
    urls: ["{exporter.url}/node-a", "{exporter.url}/node-b", "{exporter.url}/slow",
           "{exporter.url}/missing", "http://127.0.0.1:1/metrics"]
    interval_s: 0.2
    timeout_s: 0.5
hosts:
  node-a: {{slot: 0, cdu: 0}}
  node-b: {{slot: 3, cdu: 1}}
points:
  - source: gpus
    match: 'DCGM_FI_DEV_POWER_USAGE/(?P<host>[^/]+)/(?P<gpu>\d+)'
    entity: 'rack/{{slot}}/{{cdu}}'
    quantity: rack_power_w
    aggregate: sum
    aggregate_scale: 1.1
    aggregate_offset: 2000
    range: [0, 2000]
    stale_s: 30
"""

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, "small", parse_pointmap(text))
            sub = await nc.subscribe("telemetry.small.gpus")
            await gateway.start()
            s = gateway.aligner.stats
            deadline = time.monotonic() + 10
            while s.accepted < 4 or s.rejected["timeout"] < 1 or s.rejected["unreachable"] < 2:
                assert time.monotonic() < deadline, s
                await asyncio.sleep(0.05)
            await gateway.publish_tick()
            batch = tm.MeasurementBatch.FromString((await sub.next_msg(timeout=5)).data)
            got = {m.entity: m.value for m in batch.measurements}
            # rack power = sum(GPU power) x aggregate_scale + aggregate_offset
            assert got == {
                "rack/0/0": pytest.approx(1300 * 1.1 + 2000),
                "rack/3/1": pytest.approx(1000 * 1.1 + 2000),
            }
            assert {m.quantity for m in batch.measurements} == {tm.QUANTITY_RACK_POWER_W}
            # node-c is in no host table: its GPU is an unknown point, not a rack
            assert all(not t.done() for t in gateway._tasks)
            await gateway.stop()
            await nc.close()

    asyncio.run(main())


def test_energy_counter_gives_mean_power_between_scrapes():
    from services.gateway.adapters.dcgm import DcgmAdapter
    from services.gateway.pointmap import DcgmSource
    from services.gateway.reading import Reading

    adapter = DcgmAdapter("gpus", DcgmSource(kind="dcgm", urls=["http://127.0.0.1:1/"]))
    out: list[Reading] = []
    point = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION/node-a/0"
    for mj, t in ((1_000_000.0, 10.0), (10_000_000.0, 25.0), (5.0, 40.0), (15_005.0, 55.0)):
        adapter._rate(Reading("gpus", point, mj, t), out.append)
    # 9e6 mJ in 15 s = 6e5 mJ/s (600 W); a counter reset (a reboot) gives no rate
    assert [(r.point, r.value, r.unit) for r in out] == [
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_RATE/node-a/0", 600_000.0, "mJ/s"),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_RATE/node-a/0", 1000.0, "mJ/s"),
    ]
