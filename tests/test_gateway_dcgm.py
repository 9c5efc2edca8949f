"""DCGM exporter scraping: real HTTP endpoints on loopback (a good one, a slow one, a
dead one), parsed with prometheus_client's parser, GPUs summed into their rack."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from http.server import BaseHTTPRequestHandler

import nats
import pytest
from quiet_http import QuietThreadingHTTPServer

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

        self.server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
    from services.gateway.reading import Reading, Scan

    adapter = DcgmAdapter("gpus", DcgmSource(kind="dcgm", urls=["http://127.0.0.1:1/"]))
    emitted: list[Reading | Scan] = []
    point = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION/node-a/0"
    for mj, t in ((1_000_000.0, 10.0), (10_000_000.0, 25.0), (5.0, 40.0), (15_005.0, 55.0)):
        adapter._rate(Reading("gpus", point, mj, t), emitted.append)
    out = [r for r in emitted if isinstance(r, Reading)]
    assert len(out) == len(emitted)
    # 9e6 mJ in 15 s = 6e5 mJ/s (600 W); a counter reset (a reboot) gives no rate
    assert [(r.point, r.value, r.unit) for r in out] == [
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_RATE/node-a/0", 600_000.0, "mJ/s"),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_RATE/node-a/0", 1000.0, "mJ/s"),
    ]


def _full(text: str) -> list:
    from services.gateway.adapters.dcgm import _parse_full

    return _parse_full("gpus", text, 100.0)


def test_line_cache_reads_what_prometheus_client_reads():
    from services.gateway.adapters.dcgm import DcgmParser

    parser = DcgmParser("gpus")
    first = exposition("node-a", [600.0, 700.5], 1e6)
    # the same lines with new values: read from the cache; NaN, Inf and exponents too
    second = first.replace("} 600.0", "} NaN").replace("} 700.5", "} 7.005e2")
    second = second.replace("} 61", "} +Inf")
    unlabelled = "# a comment\n\nDCGM_FI_DEV_GPU_TEMP 50\nDCGM_FI_DEV_POWER_USAGE{} 1\n"

    def pairs(readings) -> list:  # NaN as a string: NaN != NaN
        return [(r.point, "nan" if math.isnan(r.value) else r.value, r.time_s) for r in readings]

    for text in (first, second, first, unlabelled):
        assert pairs(parser.parse(text, 100.0)) == pairs(_full(text))
    assert pairs(parser.parse(second, 100.0))[:3] == [
        ("DCGM_FI_DEV_POWER_USAGE/node-a/0", "nan", 100.0),
        ("DCGM_FI_DEV_POWER_USAGE/node-a/1", 700.5, 100.0),
        ("DCGM_FI_DEV_GPU_TEMP/node-a/0", math.inf, 100.0),
    ]


@pytest.mark.parametrize(
    ("line", "point", "time_s"),
    [
        ('DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="a\\"b"} 5', 'a"b', 100.0),  # escaped
        ('DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="a"} 5 1700000000000', "a", 1.7e9),
        ('DCGM_FI_DEV_POWER_USAGE{gpu="0", Hostname="a"} 5', "a", 100.0),  # a space
        # a counter family named <metric>_total: its samples are <metric>'s
        (
            '# TYPE DCGM_FI_DEV_POWER_USAGE_total counter\nDCGM_FI_DEV_POWER_USAGE_total{gpu="0",'
            'Hostname="a"} 5',
            "a",
            100.0,
        ),
    ],
)
def test_other_forms_go_to_the_full_parser(line, point, time_s):
    from services.gateway.adapters.dcgm import DcgmParser
    from services.gateway.reading import Scan

    parser = DcgmParser("gpus")
    read = parser.read(line + "\n", 100.0)
    assert not isinstance(read, Scan)
    assert read == _full(line + "\n")
    assert [(r.point, r.value, r.time_s) for r in read] == [
        (f"DCGM_FI_DEV_POWER_USAGE/{point}/0", 5.0, time_s)
    ]


def test_a_bad_line_after_cached_ones_makes_the_page_malformed():
    from services.gateway.adapters.dcgm import DcgmParser

    parser = DcgmParser("gpus")
    page = exposition("node-a", [600.0], 1e6)
    assert len(parser.parse(page, 100.0)) == 4
    for bad in (page.replace("} 600.0", "} 6_00"), page + "DCGM_FI_DEV_GPU_TEMP{gpu=0} 1\n"):
        with pytest.raises(ValueError):
            parser.parse(bad, 100.0)


POWER = 'DCGM_FI_DEV_POWER_USAGE{gpu="0",Hostname="a"}'


@pytest.mark.parametrize(
    "variant",
    [
        f"  {POWER} 5  \r\n",  # blanks and a CR around a line
        f"{POWER}\t5\n",  # a tab before the value
        f"{POWER} 5\n# HELP DCGM_FI_DEV_POWER_USAGE other words\n# TYPE X counter\n",
        f"{POWER} 5\n#\n# just a remark\n\n",
        f'{POWER} 5\nDCGM_FI_DEV_SM_CLOCK{{gpu="0",Hostname="a"}} NaN\n',  # unread: NaN
        f"{POWER} 5e-1\n{POWER.replace('0', '1')} -Inf\n",
    ],
)
def test_every_line_form_reads_as_prometheus_client_reads_it(variant):
    """Each page twice: its lines first unseen, then from the cache."""
    from services.gateway.adapters.dcgm import DcgmParser

    parser = DcgmParser("gpus")
    page = exposition("node-a", [600.0], 1e6) + variant
    expected = [(r.point, str(r.value)) for r in _full(page)]
    for _ in range(2):
        assert [(r.point, str(r.value)) for r in parser.parse(page, 100.0)] == expected


@pytest.mark.parametrize(
    "bad",
    [
        "DCGM_FI_DEV_GPU_TEMP\n",  # no value
        "5\n",  # no name
        'DCGM_FI_DEV_SM_CLOCK{gpu="0",Hostname="a"} 1e\n',  # an unread sample's bad value
        f"{POWER} 1.2.3\n",
        f"{POWER} --1\n",
        "# HELP 123 not a name\n",
    ],
)
def test_a_bad_line_in_a_cached_page_is_malformed(bad):
    from services.gateway.adapters.dcgm import DcgmParser

    parser = DcgmParser("gpus")
    page = exposition("node-a", [600.0], 1e6)
    assert len(parser.parse(page, 100.0)) == 4
    with pytest.raises(ValueError):
        parser.parse(page + bad, 100.0)


def test_scrapes_in_flight_are_bounded():
    """``max_in_flight: 1``: four endpoints that each take 0.3 s to answer, due every
    0.2 s, are fetched one at a time (a page is fetched only when it will be read soon),
    and each is still scraped."""
    from services.gateway.adapters.dcgm import DcgmAdapter
    from services.gateway.pointmap import DcgmSource

    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.3)
            host = self.path.strip("/")
            body = exposition(host, [600.0], 1e6).encode()
            with lock:
                state["now"] -= 1
                served.append(host)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    hosts = [f"node-{i}" for i in range(4)]
    cfg = DcgmSource(
        kind="dcgm", urls=[f"{url}/{h}" for h in hosts], interval_s=0.2, max_in_flight=1
    )
    adapter = DcgmAdapter("gpus", cfg)

    async def main() -> None:
        task = asyncio.create_task(adapter.run(lambda _: None))
        deadline = time.monotonic() + 10
        # The server lists a host before its page is sent; the adapter counts the scrape
        # once it has read the page: wait for both.
        while not (set(hosts) <= set(served) and adapter.scrapes >= len(hosts)):
            assert time.monotonic() < deadline, (served, adapter.scrapes)
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        server.shutdown()
        server.server_close()
    assert state["peak"] == 1
    assert adapter.scrapes >= 4
