"""A Fairwater-sized field for bench/gateway.py: the point map, and the site's own
protocols serving it — DCGM exporter text over HTTP for every GPU, BMS Event Bus JSON
over MQTT for every CDU and meter.

Layout (from the site file): one host per NVL72 compute tray (18 per rack, 4 GPUs each),
named ``c<cdu>-s<slot>-t<tray>`` and placed by the map's host table, as ``twin inventory
from-k8s`` would write it. One DCGM endpoint serves the hosts of one CDU row (in a real
site every host runs its own exporter; the bench groups them so that the HTTP requests,
which the gateway would spread over many connections, do not dominate the measurement).

Every ``BAD_POWER_EVERY``-th GPU power sample of a page is out of range (5 kW) and
every ``BAD_EVERY``-th BMS message carries a bad quality flag: the gateway must count
exactly these as rejected.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from twin_core.site import load_site

TRAYS, GPUS_PER_TRAY = 18, 4  # GB200 NVL72: 18 compute trays x 4 GPUs
GPU_INTERVAL_S = 15.0  # the brief: every GPU's power and temperature every 15 s
BMS_INTERVAL_S = 1.0  # every CDU and meter every second
BAD_EVERY = 1000  # every 1000th BMS message has a bad quality flag
BAD_POWER_EVERY = 500  # every 500th GPU power sample of a page is out of range
FEEDERS = 4  # scenarios/fairwater-wi.yaml: electrical.feeders
# The CDU points, per CDU: (pointType, tag, quantity, unit, range).
CDU_POINTS = (
    ("LiquidTemperature", "supply", "supply_temperature_c", "degC", (5, 60)),
    ("LiquidTemperature", "return", "return_temperature_c", "degC", (5, 80)),
    ("LiquidFlow", "secondary", "flow_m3_per_s", "L/min", (0, 0.2)),
    ("Power", "pump", "equipment_power_w", "kW", (0, 1e5)),
)
METRICS = (
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
)
LABELS = 'gpu="{g}",UUID="GPU-{h}-{g}",device="nvidia{g}",modelName="NVIDIA GB200",Hostname="{h}"'


@dataclass(frozen=True)
class Field:
    """What the bench emulates: ``rows`` (cdu, racks in its row), host names per row."""

    site: str
    rows: list[tuple[int, int]]
    meters: int

    @classmethod
    def from_site(cls, path: Path, max_cdus: int | None = None) -> Field:
        site = load_site(path)
        rows: list[tuple[int, int]] = []
        for hall in site.halls:
            rows += [(len(rows) + i, hall.racks_per_cdu) for i in range(hall.cdus)]
            if site.rack_types[hall.rack_type].gpus != TRAYS * GPUS_PER_TRAY:
                raise ValueError(f"halls: {hall.name}: the bench emulates NVL72 racks only")
        return cls(path.stem, rows[:max_cdus], 1 + FEEDERS)

    @property
    def gpus(self) -> int:
        return sum(racks for _, racks in self.rows) * TRAYS * GPUS_PER_TRAY

    def hosts(self, row: int) -> list[tuple[str, int]]:
        """(host, rack slot) of one CDU row."""
        cdu, racks = self.rows[row]
        return [(f"c{cdu}-s{s}-t{t}", s) for s in range(racks) for t in range(TRAYS)]

    def bms_topics(self) -> list[str]:
        topics = [
            f"BMS/v1/PUB/Value/CDU/{kind}/hall/cdu{cdu}/{tag}"
            for cdu, _ in self.rows
            for kind, tag, *_ in CDU_POINTS
        ]
        topics.append("BMS/v1/PUB/Value/Meter/ActivePower/site/main")
        topics += [f"BMS/v1/PUB/Value/Meter/ActivePower/site/feeder{i}" for i in range(FEEDERS)]
        return topics

    def points_per_s(self, speed: float) -> float:
        """Field points a second at ``speed`` x the real rates."""
        gpu = self.gpus * len(METRICS) / GPU_INTERVAL_S
        return speed * (gpu + len(self.bms_topics()) / BMS_INTERVAL_S)

    def pointmap(self, urls: list[str], speed: float) -> str:
        hosts = {
            h: {"slot": s, "cdu": cdu}
            for row, (cdu, _) in enumerate(self.rows)
            for h, s in self.hosts(row)
        }
        gpus_per_rack = TRAYS * GPUS_PER_TRAY
        host = r"(?P<host>[^/]+)/(?P<gpu>\d+)"
        cdu = r"[^/]+/cdu(?P<cdu>\d+)"
        points: list[dict] = [
            {
                "source": "gpus",
                "match": f"DCGM_FI_DEV_POWER_USAGE/{host}",
                "entity": "rack/{slot}/{cdu}",
                "quantity": "rack_power_w",
                "range": [0, 1500],
                "aggregate": "sum",
                "aggregate_scale": 1.3,
                "aggregate_offset": 4000,
                "stale_s": 3 * GPU_INTERVAL_S / speed,
            },
            # The rack's mean GPU temperature: the sum of its GPUs / their number.
            {
                "source": "gpus",
                "match": f"DCGM_FI_DEV_GPU_TEMP/{host}",
                "entity": "rack/{slot}/{cdu}",
                "quantity": "gpu_temperature_c",
                "range": [0, 120],
                "aggregate": "sum",
                "aggregate_scale": 1 / gpus_per_rack,
                "stale_s": 3 * GPU_INTERVAL_S / speed,
            },
        ]
        points += [
            {
                "source": "bms",
                "match": f"BMS/v1/PUB/Value/CDU/{kind}/{cdu}/{tag}",
                "entity": "cdu/{cdu}",
                "quantity": quantity,
                "unit": unit,
                "range": list(span),
                "stale_s": 250,
            }
            for kind, tag, quantity, unit, span in CDU_POINTS
        ]
        points += [
            {
                "source": "bms",
                "point": "BMS/v1/PUB/Value/Meter/ActivePower/site/main",
                "entity": "meter",
                "quantity": "meter_power_w",
                "unit": "MW",
                "range": [0, 1e9],
                "stale_s": 250,
            },
            {
                "source": "bms",
                "match": r"BMS/v1/PUB/Value/Meter/ActivePower/site/feeder(?P<i>\d)",
                "entity": "feeder/{i}",
                "quantity": "equipment_power_w",
                "unit": "MW",
                "range": [0, 3e8],
                "stale_s": 250,
            },
        ]
        doc = {
            "site": self.site,
            "sources": {
                "bms": {"kind": "bms", "transport": "nats"},
                "gpus": {
                    "kind": "dcgm",
                    "urls": urls,
                    "interval_s": GPU_INTERVAL_S / speed,
                    "timeout_s": 10,
                },
            },
            "hosts": hosts,
            "points": points,
        }
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(doc, Dumper=dumper, sort_keys=False, width=200)


# ------------------------------------------------------------------------ DCGM exporter


def exposition(hosts: list[tuple[str, int]], seed: int) -> tuple[bytes, int, int]:
    """A DCGM exporter page for ``hosts``: (body, samples, samples out of range)."""
    rng = random.Random(seed)
    lines: list[str] = []
    samples = bad = power = 0
    for metric, kind, help_text in METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for h, _ in hosts:
            for g in range(GPUS_PER_TRAY):
                samples += 1
                if metric == "DCGM_FI_DEV_POWER_USAGE":
                    power += 1
                    value = f"{rng.uniform(200, 1200):.3f}"
                    if power % BAD_POWER_EVERY == 0:
                        value, bad = "5000.000", bad + 1
                else:
                    value = str(rng.randint(35, 85))
                lines.append(f"{metric}{{{LABELS.format(g=g, h=h)}}} {value}")
    return ("\n".join(lines) + "\n").encode(), samples, bad


EMPTY = b"# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).\n"


class Exporters:
    """Every row's page on one asyncio HTTP server (``/row/<i>``); counts what it served.
    After ``stop()`` a page holds no samples, so the served count is final."""

    def __init__(self, pages: list[tuple[bytes, int, int]]) -> None:
        self.pages = pages
        self.served = self.served_bad = 0
        self.stopped = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                path = request.split(b" ", 2)[1].decode()
                row = int(path.rsplit("/", 1)[1])
                if self.stopped:
                    body = EMPTY
                else:
                    body, samples, bad = self.pages[row]
                    self.served += samples
                    self.served_bad += bad
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


# --------------------------------------------------------------------------- BMS client


def bms_payload(value: float, ms: int, quality: int = 1) -> bytes:
    return f'{{"value": {value:.3f}, "timestamp": {ms}, "quality": {quality}}}'.encode()


async def publish_bms(
    mqtt_port: int, topics: list[str], interval_s: float, until: asyncio.Event
) -> tuple[int, int]:
    """Every topic once per ``interval_s`` over MQTT 3.1.1 (QoS 0, spread over the
    interval) until ``until`` is set; (messages, of which bad quality)."""
    import aiomqtt

    sent = bad = 0
    rng = random.Random(7)
    async with aiomqtt.Client("127.0.0.1", mqtt_port, max_queued_outgoing_messages=0) as mqtt:
        start = time.monotonic()
        k = 0
        while not until.is_set():
            for i, topic in enumerate(topics):
                due = start + (k + i / len(topics)) * interval_s
                if (wait := due - time.monotonic()) > 0.002:
                    await asyncio.sleep(wait)
                sent += 1
                quality = 1
                if sent % BAD_EVERY == 0:
                    quality, bad = 0, bad + 1
                value = _bms_value(topic, rng)
                await mqtt.publish(topic, bms_payload(value, int(time.time() * 1e3), quality))
            k += 1
    return sent, bad


def _bms_value(topic: str, rng: random.Random) -> float:
    if "/supply" in topic:
        return 30 + rng.random()
    if "/return" in topic:
        return 40 + rng.random()
    if "LiquidFlow" in topic:
        return 1800 + 10 * rng.random()  # L/min: 12 racks x 150 L/min
    if "/pump" in topic:
        return 20 + rng.random()  # kW
    if "/main" in topic:
        return 420 + rng.random()  # MW
    return 105 + rng.random()  # MW a feeder


# -------------------------------------------------------------------- the field process


def run_field(field: Field, speed: float, mqtt_port: int, conn) -> None:
    """The field process: serve the DCGM pages and publish BMS until told to stop over
    ``conn`` (a Pipe); then send back the counts."""

    async def main() -> None:
        pages = [exposition(field.hosts(row), seed=row) for row in range(len(field.rows))]
        exporters = Exporters(pages)
        server = await asyncio.start_server(exporters.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn.send([f"http://127.0.0.1:{port}/row/{i}" for i in range(len(pages))])
        stop = asyncio.Event()
        await asyncio.to_thread(conn.recv)  # "go": the gateway is up
        bms = asyncio.create_task(
            publish_bms(mqtt_port, field.bms_topics(), BMS_INTERVAL_S / speed, stop)
        )
        await asyncio.to_thread(conn.recv)  # "stop"
        stop.set()
        exporters.stopped = True
        sent, bad = await bms
        conn.send(
            {
                "dcgm": exporters.served,
                "dcgm_bad": exporters.served_bad,
                "bms": sent,
                "bms_bad": bad,
            }
        )
        await asyncio.to_thread(conn.recv)  # "exit": serving empty pages until then
        server.close()

    asyncio.run(main())


def start_field(field: Field, speed: float, mqtt_port: int):
    """The field process and our end of its pipe; the endpoint URLs once it serves."""
    ours, theirs = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(
        target=run_field, args=(field, speed, mqtt_port, theirs), daemon=True
    )
    process.start()
    urls = ours.recv()
    return process, ours, urls
