"""The web console under load: first meaningful paint of the overview, the console's CPU
per live update, and what 50 live viewers (Server-Sent Events) cost the twin.

A local twin (no historian) runs the small test site; the console runs beside it as its
own process. Three phases:

1. the run at real time (a live twin): first paint of the overview in chromium;
2. the run paced at --live-speed (10x: 10 ticks/s): 50 viewers at normal priority; does
   every viewer get every update, and how late (each frame carries its sequence number
   and the console's send time)?
3. the run as fast as possible (the cores saturated): tick rate in alternating windows
   without and with the viewers (a shared machine drifts; alternating keeps the
   comparison fair), the viewers at a lower CPU priority: they stand for browsers, which
   run on the operators' machines, not beside the twin (here they still share its cores).

    python bench/console.py [--viewers 50] [--window 15] [--pairs 3] [--scenario FILE]

Targets: tick slowdown <= 5 % and every update to every viewer within 500 ms (the issue);
first meaningful paint <= 1 s and console CPU <= 10 ms per update at 50 viewers are this
benchmark's own budgets (estimate: a local page should paint within a second; 4 updates
a second at 10 ms is 4 % of a core).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
from rich.console import Console
from rich.table import Table

from services.console.process import ConsoleProcess
from services.launcher import LocalTwin, free_addresses
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "tests" / "sites" / "small.yaml"
RATE_SETTLE_S = 4.0  # after a change of pace: the console's Watch adapts (2 s windows)
VIEWER_NICE = 10  # with the cores saturated: the viewers stand for remote browsers


# -- the viewers (a child process) --------------------------------------------------------


async def _viewer(host: str, port: int, until: float, out: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/live HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    seqs: list[int] = []
    delays: list[float] = []
    try:
        while time.time() < until:
            try:
                line = await asyncio.wait_for(reader.readline(), max(0.01, until - time.time()))
            except TimeoutError:
                break
            if line.startswith(b"data: "):
                frame = json.loads(line[6:])
                delays.append(time.time() - frame["sent_at"])
                seqs.append(frame["seq"])
    finally:
        writer.close()
    out.update(seqs=seqs, delays=delays)


async def _viewers(url: str, count: int, seconds: float) -> list[dict[str, Any]]:
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    until = time.time() + seconds
    results: list[dict[str, Any]] = [{} for _ in range(count)]
    await asyncio.gather(*(_viewer(host, int(port), until, r) for r in results))
    return results


def viewer_main(url: str, count: int, seconds: float, nice: int) -> None:
    os.nice(nice)
    results = asyncio.run(_viewers(url, count, seconds))
    gaps = 0
    received = []
    delays: list[float] = []
    for r in results:
        seqs = r["seqs"][1:]  # the first is the latest frame, sent on connecting
        received.append(len(seqs))
        gaps += sum(b - a - 1 for a, b in itertools.pairwise(seqs))
        delays.extend(r["delays"][1:])
    delays.sort()
    print(
        json.dumps(
            {
                "min_frames": min(received),
                "max_frames": max(received),
                "gaps": gaps,
                "delay_p50_ms": 1e3 * delays[len(delays) // 2] if delays else None,
                "delay_p99_ms": 1e3 * delays[int(len(delays) * 0.99)] if delays else None,
                "delay_max_ms": 1e3 * delays[-1] if delays else None,
            }
        )
    )


# -- the measurements ---------------------------------------------------------------------


def tick_rate(stub: Any, seconds: float) -> float:
    def step() -> int:
        return stub.GetSnapshot(twin_pb2.GetSnapshotRequest(), timeout=10).snapshot.step

    first, start = step(), time.monotonic()
    time.sleep(seconds)
    return (step() - first) / (time.monotonic() - start)


def stats(console: ConsoleProcess) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(console.url + "api/stats", timeout=5) as reply:
        return json.loads(reply.read())


def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def first_paint(url: str, loads: int = 5) -> tuple[float, float] | None:
    """Median (first contentful paint, overview with live values) in ms, or None without
    chromium."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    fcp, meaningful = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        for i in range(loads + 1):  # the first load warms the browser's caches
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => /[0-9]/.test(document.getElementById('pue').textContent)")
            done = page.evaluate("() => performance.now()")
            paint = page.evaluate(
                "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime"
            )
            page.close()
            if i:
                meaningful.append(done)
                fcp.append(paint or float("nan"))
        browser.close()
    return statistics.median(fcp), statistics.median(meaningful)


def viewers_for(url: str, count: int, seconds: float, nice: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--viewer-process", url, str(count), str(seconds), str(nice)],
        stdout=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--window", type=float, default=15.0, help="seconds per window")
    parser.add_argument("--pairs", type=int, default=3, help="windows without/with viewers")
    parser.add_argument("--live-speed", type=float, default=10.0, help="real-time factor")
    parser.add_argument("--scenario", type=Path, default=SMALL)
    parser.add_argument("--viewer-process", nargs=4, metavar=("URL", "N", "SECONDS", "NICE"))
    args = parser.parse_args()
    if args.viewer_process:
        url, n, seconds, nice = args.viewer_process
        viewer_main(url, int(n), float(seconds), int(nice))
        return
    spec = clock_pb2.RunSpec(scenario_yaml=args.scenario.read_text(), dt_s=1.0)
    start = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(real_time_factor=1.0))
    with (
        LocalTwin("bench", free_addresses(), history=False, ready_timeout_s=300) as twin,
        grpc.insecure_channel(twin.addresses["twin"]) as channel,
        ConsoleProcess(twin.addresses["twin"], instance_id=twin.instance_id) as console,
    ):
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        stub.Start(start, timeout=300)
        time.sleep(3)  # the run under way
        paint = first_paint(console.url)
        assert console.process is not None
        pid = console.process.pid

        # A live twin (paced): do the viewers get every update, and how late?
        pace = clock_pb2.Speed(real_time_factor=args.live_speed)
        stub.SetSpeed(twin_pb2.SetSpeedRequest(speed=pace), timeout=10)
        time.sleep(RATE_SETTLE_S)
        child = viewers_for(console.url, args.viewers, args.window + 2, 0)
        time.sleep(1)
        s0 = stats(console)
        live_rate = tick_rate(stub, args.window)
        live = {**json.loads(child.communicate(timeout=60)[0]),
                "published": stats(console)["published"] - s0["published"]}  # fmt: skip

        # As fast as possible: what do the viewers cost the twin and the console?
        fastest = clock_pb2.Speed(as_fast_as_possible=True)
        stub.SetSpeed(twin_pb2.SetSpeedRequest(speed=fastest), timeout=10)
        time.sleep(RATE_SETTLE_S)
        base_rates, load_rates, cost_idle, cost_load, saturated = [], [], [], [], []
        for _ in range(args.pairs):
            s0, c0 = stats(console), cpu_s(pid)
            base_rates.append(tick_rate(stub, args.window))
            s1, c1 = stats(console), cpu_s(pid)
            cost_idle.append((c1 - c0) / max(1, s1["published"] - s0["published"]))
            child = viewers_for(console.url, args.viewers, args.window + 2, VIEWER_NICE)
            time.sleep(1)  # every viewer connected
            s0, c0 = stats(console), cpu_s(pid)
            load_rates.append(tick_rate(stub, args.window))
            s1, c1 = stats(console), cpu_s(pid)
            cost_load.append((c1 - c0) / max(1, s1["published"] - s0["published"]))
            out, _ = child.communicate(timeout=60)
            saturated.append({**json.loads(out), "published": s1["published"] - s0["published"]})
        final = stats(console)
    report(args, paint, live_rate, live, base_rates, load_rates, cost_idle, cost_load,
           saturated, final)  # fmt: skip


def report(args, paint, live_rate, live, base_rates, load_rates, cost_idle, cost_load,
           saturated, final) -> None:  # fmt: skip
    base, load = statistics.median(base_rates), statistics.median(load_rates)
    slowdown = 1 - load / base
    idle_ms, load_ms = 1e3 * statistics.median(cost_idle), 1e3 * statistics.median(cost_load)
    table = Table(title=f"console: {args.viewers} SSE viewers, {args.scenario.stem} site")
    for column in ("measure", "value", "target", "ratio (value / target)"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    if paint is not None:
        table.add_row("first contentful paint (live run)", f"{paint[0]:.0f} ms", "—", "—")
        table.add_row(
            "first meaningful paint (live values shown)",
            f"{paint[1]:.0f} ms", "<= 1000 ms", f"{paint[1] / 1000:.2f}",
        )  # fmt: skip
    else:
        table.add_row("first meaningful paint", "no chromium", "<= 1000 ms", "—")
    table.add_row(
        f"live run: ticks/s measured (paced at {args.live_speed:g}x)", f"{live_rate:.1f}", "—", "—"
    )
    table.add_row(
        "live run: update delay p99", f"{live['delay_p99_ms']:.0f} ms", "<= 500 ms",
        f"{live['delay_p99_ms'] / 500:.2f}",
    )  # fmt: skip
    table.add_row(
        "live run: update delay max", f"{live['delay_max_ms']:.0f} ms", "<= 500 ms",
        f"{live['delay_max_ms'] / 500:.2f}",
    )  # fmt: skip
    table.add_row(
        "live run: updates lost", f"{live['gaps']} of {live['published']}", "0", "—"
    )  # fmt: skip
    spread = f"{min(base_rates):.1f}..{max(base_rates):.1f}"
    table.add_row("fastest: ticks/s without viewers (windows)", f"{base:.1f} ({spread})", "—", "—")
    spread = f"{min(load_rates):.1f}..{max(load_rates):.1f}"
    table.add_row(
        f"fastest: ticks/s with {args.viewers} viewers (windows)", f"{load:.1f} ({spread})",
        "—", "—",
    )  # fmt: skip
    table.add_row(
        "fastest: tick slowdown", f"{100 * slowdown:.1f} %", "<= 5 %", f"{slowdown / 0.05:.2f}"
    )  # fmt: skip
    worst = max(v["delay_max_ms"] for v in saturated)
    table.add_row("fastest: update delay max (cores saturated)", f"{worst:.0f} ms", "—", "—")
    lost = sum(v["gaps"] for v in saturated)
    table.add_row("fastest: updates lost", f"{lost} of {sum(v['published'] for v in saturated)}",
                  "0", "—")  # fmt: skip
    table.add_row("console CPU per update, no viewers", f"{idle_ms:.2f} ms", "—", "—")
    table.add_row(
        f"console CPU per update, {args.viewers} viewers", f"{load_ms:.2f} ms", "<= 10 ms",
        f"{load_ms / 10:.2f}",
    )  # fmt: skip
    per_viewer_us = max(0.0, load_ms - idle_ms) / args.viewers * 1e3
    table.add_row("  of which per viewer", f"{per_viewer_us:.0f} µs", "—", "—")
    rate = statistics.median(v["published"] for v in saturated) / args.window
    added = max(0.0, load_ms - idle_ms) * rate / 10  # ms per s -> % of a core
    table.add_row(f"console CPU the {args.viewers} viewers add", f"{added:.2f} % of a core",
                  "—", "—")  # fmt: skip
    table.add_row(
        "hub: encode + queue per update",
        f"{1e3 * final['publish_s'] / max(1, final['published']):.2f} ms", "—", "—",
    )  # fmt: skip
    table.add_row(
        "hub: Watch messages per published update",
        f"{final['received'] / max(1, final['published']):.2f}", "—", "—",
    )  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main()
