"""The field telemetry path at Fairwater size: field protocols -> gateway -> bus ->
historian, with every part a real server or process on loopback.

    python bench/gateway.py [--speed 4] [--seconds 60]     # the table for the README
    python bench/gateway.py --quick                         # a 1/10 site, ~30 s (CI)

The field (bench/gateway_field.py, its own process) serves every GPU's power and
temperature as DCGM exporter text over HTTP and publishes every CDU's and meter's BMS
points as JSON over MQTT to nats-server's MQTT listener, at ``--speed`` times the real
rates (GPUs every 15 s, CDUs and meters every second). ``twin serve gateway`` (a process)
scrapes and subscribes, checks and aligns, and publishes a MeasurementBatch per source
at every tick (the bench publishes the clock's TICK every ``--tick-s``); ``twin serve
historian`` (a process) stores them in PostgreSQL's ``measurements`` table.

Latency is field time -> the MeasurementBatch holding the value received on the bus
(what a domain node reads; it applies the value at its next step): the gateway sends a
changed value every ``TWIN_GATEWAY_AHEAD_S`` (0.25 s) between ticks as well as at the
tick. The twin's own
state is not part of the run: the domain nodes at Fairwater size would take the cores
the measurement needs. Field time: the BMS message's ``timestamp``, the scrape's time
for DCGM (the exporter sends none). A value counts once, in the first batch that has it
(the gateway re-sends held values at every tick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from google.protobuf import json_format, struct_pb2
from pgserver.postgres_server import get_server
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_field import BMS_INTERVAL_S, GPU_INTERVAL_S, METRICS, Field, start_field

from services.gateway.service import stats_subject
from services.runtime import bus
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2

ROOT = Path(__file__).resolve().parent.parent
FAIRWATER = ROOT / "scenarios" / "fairwater-wi.yaml"
TARGET_POINTS_S = 100_000
TARGET_P99_S = 1.0


def service(
    name: str, env: dict[str, str], log: Path, profile: Path | None = None
) -> subprocess.Popen:
    """``twin serve NAME`` as its own process, with this worktree's code; under cProfile
    (written to ``profile`` when it stops) if given."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "proto" / "gen" / "python")])
    full = {
        **os.environ,
        "PYTHONPATH": path,
        "TWIN_GRPC_ADDRESS": "127.0.0.1:0",
        "TWIN_LOG_LEVEL": "WARNING",
        **env,
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                *(["-m", "cProfile", "-o", str(profile)] if profile else []),
                "-m",
                "services.cli",
                "serve",
                name,
            ],
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    """Subscribes to the site's telemetry: counts what is published and, for every value
    seen for the first time, its latency from the field time."""

    def __init__(self) -> None:
        self.measurements = 0
        self.batches = 0
        self.latencies: list[float] = []
        self.received: list[float] = []  # when each latency was seen (for its slices)
        self.from_bms: list[bool] = []
        self.recording = False
        self._newest: dict[tuple[str, int], float] = {}

    async def on_msg(self, msg) -> None:
        now = time.time()
        batch = telemetry_pb2.MeasurementBatch.FromString(msg.data)
        self.batches += 1
        self.measurements += len(batch.measurements)
        newest = self._newest
        for m in batch.measurements:
            key = (m.entity, m.quantity)
            if newest.get(key, -1.0) < m.time_s:
                newest[key] = m.time_s
                if self.recording:
                    self.latencies.append(now - m.time_s)
                    self.received.append(now)
                    self.from_bms.append(not m.entity.startswith("rack/"))


async def gateway_stats(nc, site: str) -> dict:
    reply = await nc.request(stats_subject(site), b"", timeout=60)
    return json_format.MessageToDict(struct_pb2.Struct.FromString(reply.data))


def offered(stats: dict) -> int:
    return int(stats["accepted"]) + int(sum(stats["rejected"].values()))


def stored(db: str) -> int:
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM measurements").fetchone()
        assert row is not None
        return row[0]


async def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.2)


async def drive(args, field: Field, nats: NatsServer, db: str, work: Path) -> dict:
    site = field.site
    assert nats.mqtt_port is not None
    process, pipe, urls = start_field(field, args.speed, nats.mqtt_port)
    pointmap = work / "pointmap.yaml"
    start = time.perf_counter()
    pointmap.write_text(field.pointmap(urls, args.speed))
    env = {"TWIN_SITE": site, "TWIN_NATS_URL": nats.url}
    historian = service("historian", {**env, "TWIN_DATABASE_URL": db}, work / "historian.log")
    gateway = service(
        "gateway", {**env, "TWIN_POINT_MAP": str(pointmap)}, work / "gateway.log", args.profile
    )
    nc = await bus.connect(nats.url)
    js = nc.jetstream()
    probe = Probe()
    ticking = True
    ticker: asyncio.Task | None = None

    async def tick() -> None:
        message = clock_pb2.Clock(command=clock_pb2.CLOCK_COMMAND_TICK).SerializeToString()
        step = 0
        t0 = time.monotonic()
        while ticking:
            step += 1
            await nc.publish(bus.clock_subject(site), message)
            await asyncio.sleep(max(0.0, t0 + step * args.tick_s - time.monotonic()))

    async def gateway_up() -> bool:
        if gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited (log: {work / 'gateway.log'})")
        try:
            await gateway_stats(nc, site)
            return True
        except Exception:  # not answering yet
            return False

    async def historian_up() -> bool:
        try:
            await js.consumer_info(bus.stream_name(site), bus.MEASUREMENTS_DURABLE)
            return True
        except Exception:
            return False

    try:
        await wait_for(gateway_up, 600, f"gateway (log: {work / 'gateway.log'})")
        await wait_for(historian_up, 120, f"historian (log: {work / 'historian.log'})")
        startup_s = time.perf_counter() - start
        await nc.subscribe(bus.telemetry_subject(site), cb=probe.on_msg)
        ticker = asyncio.create_task(tick())
        pipe.send("go")
        # Warm-up: every point seen twice (the first sight resolves it against the map's
        # patterns and host table, ~10x the cost of a known point) before the measurement.
        warm0 = time.perf_counter()
        scans = 2 * field.gpus * len(METRICS)

        async def warm() -> bool:
            return offered(await gateway_stats(nc, site)) >= scans

        await asyncio.sleep(args.warmup_s)
        await wait_for(warm, 900, "the gateway's first scans")
        warmup_s = time.perf_counter() - warm0
        s0, c0, r0, t0 = await gateway_stats(nc, site), cpu_s(gateway.pid), stored(db), time.time()
        probe.recording = True
        m0 = probe.measurements
        await asyncio.sleep(args.seconds)
        s1, c1, r1, t1 = await gateway_stats(nc, site), cpu_s(gateway.pid), stored(db), time.time()
        probe.recording = False
        m1 = probe.measurements
        pipe.send("stop")
        counts = await asyncio.to_thread(pipe.recv)
        generated = counts["dcgm"] + counts["bms"]

        last: list[int] = []

        async def all_offered() -> bool:  # every generated point reached the gateway
            last.append(offered(await gateway_stats(nc, site)))
            return last[-1] >= generated or (len(last) > 25 and last[-1] == last[-25])

        await wait_for(all_offered, 120, "the gateway taking the last points")
        await asyncio.sleep(2 * args.tick_s)  # their tick

        async def drained() -> bool:
            info = await js.consumer_info(bus.stream_name(site), bus.MEASUREMENTS_DURABLE)
            return not info.num_pending and not info.num_ack_pending

        drain0 = time.perf_counter()
        await wait_for(drained, 300, "the historian's backlog")
        drain_s = time.perf_counter() - drain0
        final = await gateway_stats(nc, site)
    finally:
        ticking = False
        if ticker is not None:
            ticker.cancel()
        await nc.close()
        for p in (gateway, historian):
            p.terminate()
        for p in (gateway, historian):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        pipe.send("exit")
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
    window = t1 - t0
    return {
        "site": site,
        "gpus": field.gpus,
        "speed": args.speed,
        "offered_points_s": field.points_per_s(args.speed),
        "fairwater_points_s": field.points_per_s(1.0),
        "startup_s": startup_s,
        "warmup_s": warmup_s,
        "window_s": window,
        "points_s": (int(s1["accepted"]) - int(s0["accepted"])) / window,
        "offered_s": (offered(s1) - offered(s0)) / window,
        "gateway_cpu": (c1 - c0) / window,
        "published_s": (int(s1["published"]) - int(s0["published"])) / window,
        "ahead_s": (int(s1.get("ahead", 0)) - int(s0.get("ahead", 0))) / window,
        "bus_s": (m1 - m0) / window,
        "stored_s": (r1 - r0) / window,
        "drain_s": drain_s,
        "latency_p50_s": float(np.percentile(probe.latencies, 50)),
        "latency_p99_s": float(np.percentile(probe.latencies, 99)),
        "latency_values": len(probe.latencies),
        "latency_p99_slices_s": slices(probe, t0, 10.0),
        "latency_p99_by_source_s": by_source(probe),
        "generated": generated,
        "generated_bad": counts["dcgm_bad"] + counts["bms_bad"],
        "generated_bad_power": counts["dcgm_bad"],
        "generated_bad_quality": counts["bms_bad"],
        "gateway": {
            "offered": offered(final),
            "accepted": int(final["accepted"]),
            "rejected": {k: int(v) for k, v in final["rejected"].items() if v},
            "published": int(final["published"]),
        },
        "published_total": probe.measurements,
        "stored_total": stored(db),
    }


def slices(probe: Probe, t0: float, width: float) -> list[float]:
    """The latency p99 of each ``width``-second slice of the window: a falling series
    says the gateway was still catching up with its first scans."""
    at = (np.asarray(probe.received) - t0) // width
    lat = np.asarray(probe.latencies)
    return [float(np.percentile(lat[at == k], 99)) for k in np.unique(at)]


def by_source(probe: Probe) -> dict[str, float]:
    lat, bms = np.asarray(probe.latencies), np.asarray(probe.from_bms, dtype=bool)
    return {
        name: float(np.percentile(lat[sel], 99)) if sel.any() else float("nan")
        for name, sel in (("dcgm", ~bms), ("bms", bms))
    }


def table(r: dict) -> Table:
    t = Table(
        title=f"Field gateway, {r['site']}: {r['gpus']:,} GPUs at {r['speed']:g}x the real "
        f"rates, {r['window_s']:.0f} s measured (loopback, one process each)"
    )
    for col in ("figure", "value", "target", "ratio"):
        t.add_column(col, justify="right")
    p99 = r["latency_p99_s"]
    t.add_row("field points / s offered", f"{r['offered_points_s']:,.0f}", "-", "-")
    t.add_row("  of which at the real rates", f"{r['fairwater_points_s']:,.0f}", "-", "-")
    t.add_row(
        "points / s adapters -> bus (accepted)",
        f"{r['points_s']:,.0f}",
        f"{TARGET_POINTS_S:,}",
        f"{r['points_s'] / TARGET_POINTS_S:.2f}",
    )
    t.add_row("gateway CPU (cores)", f"{r['gateway_cpu']:.2f}", "-", "-")
    per_core = r["points_s"] / r["gateway_cpu"]
    t.add_row(
        "points / s per gateway CPU-second",
        f"{per_core:,.0f}",
        f"{TARGET_POINTS_S:,}",
        f"{per_core / TARGET_POINTS_S:.2f}",
    )
    t.add_row(
        "measurements / s on the bus (per tick, held ones too)",
        f"{r['published_s']:,.0f}",
        "-",
        "-",
    )
    t.add_row("  and between ticks, as they changed", f"{r['ahead_s']:,.0f}", "-", "-")
    t.add_row("rows / s into measurements", f"{r['stored_s']:,.0f}", "-", "-")
    t.add_row("historian backlog after the field stops (s)", f"{r['drain_s']:.1f}", "-", "-")
    t.add_row("latency field -> bus p50 (s)", f"{r['latency_p50_s']:.3f}", "-", "-")
    t.add_row(
        "latency field -> bus p99 (s)",
        f"{p99:.3f}",
        f"{TARGET_P99_S:g}",
        f"{TARGET_P99_S / p99:.2f}",
    )
    t.add_row(
        "  p99 by source: DCGM / BMS (s)",
        " / ".join(f"{v:.3f}" for v in r["latency_p99_by_source_s"].values()),
        "-",
        "-",
    )
    t.add_row(
        "  p99 of each 10 s of the window (s)",
        " ".join(f"{v:.2f}" for v in r["latency_p99_slices_s"]),
        "-",
        "-",
    )
    g = r["gateway"]
    rejected = ", ".join(f"{k} {v:,}" for k, v in sorted(g["rejected"].items())) or "none"
    t.add_row("points generated / offered to checks", f"{r['generated']:,} / {g['offered']:,}")
    t.add_row(
        "rejected (injected bad: out of range, bad flag)", f"{rejected} ({r['generated_bad']:,})"
    )
    t.add_row("gateway start with its map (s)", f"{r['startup_s']:.1f}", "-", "-")
    t.add_row("first two scans of every point (s)", f"{r['warmup_s']:.1f}", "-", "-")
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--site", type=Path, default=FAIRWATER, help="site file")
    parser.add_argument("--cdus", type=int, default=None, help="only the first N CDU rows")
    parser.add_argument("--speed", type=float, default=4.0, help="x the real field rates")
    parser.add_argument("--seconds", type=float, default=None, help="measured (60; quick 15)")
    parser.add_argument("--warmup-s", type=float, default=None, help="at least (then 2 scans)")
    parser.add_argument("--tick-s", type=float, default=1.0, help="the twin's tick")
    parser.add_argument("--quick", action="store_true", help="24 CDU rows, 15 s measured")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the gateway")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.cdus = args.cdus or 24
    if args.seconds is None:
        args.seconds = 15.0 if args.quick else 60.0
    if args.warmup_s is None:
        args.warmup_s = max(2 * GPU_INTERVAL_S, BMS_INTERVAL_S) / args.speed + 2
    field = Field.from_site(args.site, args.cdus)
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        work = Path(tmp)
        server = get_server(str(work / "pg"), cleanup_mode="stop")
        try:
            with NatsServer(mqtt=True) as nats:
                result = asyncio.run(drive(args, field, nats, server.get_uri(), work))
        finally:
            server.cleanup()
    Console(width=140).print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
