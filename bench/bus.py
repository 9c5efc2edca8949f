"""Co-simulation over the bus: coupled ticks per second and tick latency of the Fairwater
scenario with all services as separate processes on loopback, against the monolithic
step time measured in the same run.

    python bench/bus.py [--ticks 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections import defaultdict
from pathlib import Path

import grpc
import jax
import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from services.launcher import LocalTwin, free_addresses
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc
from twin_core import build_params, init_state, load_drivers, load_site
from twin_core.rollout import run_jit

ROOT = Path(__file__).resolve().parent.parent


def monolithic_step_us(seconds: int = 600) -> float:
    site = load_site(ROOT / "scenarios" / "fairwater-wi.yaml")
    p = build_params(site, load_drivers(site), horizon_s=seconds, dt=1.0)
    s0 = init_state(p)
    jax.block_until_ready(run_jit(p, s0, seconds // 60, 60))
    start = time.perf_counter()
    jax.block_until_ready(run_jit(p, s0, seconds // 60, 60))
    return (time.perf_counter() - start) / seconds * 1e6


def cpu_seconds(postmaster: int | None) -> dict[str, float]:
    """CPU time (user + system) of this process's descendants by what they are (each
    service by name, nats-server) and of the twin's PostgreSQL (not our child)."""
    totals: defaultdict[str, float] = defaultdict(float)
    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        try:
            cmd = proc.cmdline()
            times = proc.cpu_times()
        except psutil.Error:  # exited meanwhile
            continue
        name = cmd[-1] if "serve" in cmd else Path(cmd[0]).name if cmd else "?"
        totals[name] += times.user + times.system
    if postmaster is not None:
        with contextlib.suppress(psutil.Error):
            main = psutil.Process(postmaster)
            for proc in [main, *main.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    totals["postgres"] += times.user + times.system
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--ticks", type=int, default=2000)
    parser.add_argument("--latency-ticks", type=int, default=300)
    args = parser.parse_args()
    mono_us = monolithic_step_us()
    with (
        LocalTwin("fairwater-wi", free_addresses(), ready_timeout_s=120) as twin,
        grpc.insecure_channel(twin.addresses["twin"]) as channel,
    ):
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        spec = clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=1.0)
        run_id = stub.Start(twin_pb2.StartRequest(spec=spec, paused=True), timeout=300).run_id
        stub.Step(twin_pb2.StepRequest(run_id=run_id, ticks=50), timeout=60)  # warm up
        latencies = []
        for _ in range(args.latency_ticks):  # one tick per call: the full round trip
            start = time.perf_counter()
            stub.Step(twin_pb2.StepRequest(run_id=run_id, ticks=1), timeout=60)
            latencies.append(time.perf_counter() - start)
        postmaster = twin.postgres.pid if twin.postgres is not None else None
        cpu_before, load_before = cpu_seconds(postmaster), os.getloadavg()[0]
        start = time.perf_counter()
        stub.Step(twin_pb2.StepRequest(run_id=run_id, ticks=args.ticks), timeout=600)
        rate = args.ticks / (time.perf_counter() - start)
        cpu_after = cpu_seconds(postmaster)
        cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
        load_after = os.getloadavg()[0]
    p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
    table = Table(title="Fairwater co-simulation over NATS (5 processes, loopback, float32)")
    for col in ("figure", "value", "target", "ratio"):
        table.add_column(col, justify="right")
    table.add_row("coupled ticks / s", f"{rate:,.0f}", "200", f"{rate / 200:.2f}")
    table.add_row("tick latency p50 (ms)", f"{p50:.2f}", "-", "-")
    table.add_row("tick latency p99 (ms)", f"{p99:.2f}", "20", f"{20 / p99:.2f}")
    table.add_row("monolithic step (µs)", f"{mono_us:.1f}", "-", "-")
    table.add_row("bus tick / monolithic step", f"{1e6 / rate / mono_us:.0f}×", "-", "-")
    Console().print(table)
    # Where the CPU went while stepping (all processes share this machine's cores).
    per_tick = Table(title=f"CPU per tick while stepping {args.ticks} ticks (ms)")
    per_tick.add_column("process")
    per_tick.add_column("ms / tick", justify="right")
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        per_tick.add_row(name, f"{seconds / args.ticks * 1e3:.2f}")
    per_tick.add_row("all", f"{sum(cpu.values()) / args.ticks * 1e3:.2f}")
    Console().print(per_tick)
    cores = os.cpu_count()
    print(f"load average (1 min) {load_before:.2f} before, {load_after:.2f} after; {cores} cores")


if __name__ == "__main__":
    main()
