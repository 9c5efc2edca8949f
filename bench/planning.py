"""Planning benchmarks: a Monte Carlo failure study of Fairwater, and the scaling of one
what-if study from 1 to 2 Dask workers.

    python bench/planning.py --monte-carlo 1000 --skip-dask   # 1,000 samples x 30 days, dt 30 s
    python bench/planning.py --monte-carlo 10,40 --skip-dask  # a quick check, extrapolated

The Monte Carlo rows print each run's wall time (sampling, parameters, compilation and
rollout) and the time of 1,000 samples x 30 days against the 10-minute target: measured
when the last run is that big, else extrapolated from the per-sample slope between the
first and last runs.

The same study (the small test site by default, a grid of supply temperatures) runs in
chunks of ``--chunk`` variants on a LocalCluster of 1, then 2 one-thread worker processes
on 127.0.0.1, next to the in-process chunked run. Each worker is pinned to a core of its
own, as each worker of a cluster has a machine of its own: unpinned, one JAX process
already keeps both cores of this machine busy (its runtime threads spin beside the
one that computes), so a second worker would only measure the contention.

    python bench/planning.py                      # small site, 32 variants x 7 d, chunks of 4
    python bench/planning.py --variants 64 --duration 24h --chunk 8

Columns: ``first s`` is the first study on fresh workers (each imports JAX and compiles
the chunk's rollout once); ``warm s`` the same study again on the same workers (the best
of ``--repeat``); ``per chunk s`` is ``warm s`` x workers / chunks, the cost of one chunk
on one worker, from which a cluster of N workers takes about chunks / N x that;
``speed-up`` is the 1-worker warm time over this row's. Every run's result is checked
equal to the in-process run's.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from services.study_cluster import open_client, parse_target, run_study_on_dask
from twin_core import load_site, parse_spec, run_study
from twin_core.durations import parse_duration
from twin_core.montecarlo import parse_monte_carlo, run_monte_carlo

ROOT = Path(__file__).parent.parent
MC_TARGET_S = 600.0  # 1,000 samples x 30 days of Fairwater at dt = 30 s in 10 minutes
MC_SAMPLE_DAYS = 1000 * 30


def monte_carlo(site_path: Path, counts: list[int], duration: str, dt: str) -> None:
    """Monte Carlo failure studies of ``counts`` samples each: wall times, and the time of
    1,000 samples x 30 days from the per-sample slope between the first and the last
    count (compilation and set-up are the intercept), or measured when a run is that big."""
    site = load_site(site_path)
    days = parse_duration(duration) / 86400
    table = Table(title=f"Monte Carlo on {site.name}: x {days:g} days each, dt {dt}")
    for heading in ("samples", "wall s", "s per sample-day"):
        table.add_column(heading, justify="right")
    walls = []
    result = None
    for samples in counts:
        spec = parse_monte_carlo({"samples": samples, "duration": duration, "dt": dt})
        start = time.perf_counter()
        result = run_monte_carlo(site, spec)
        walls.append(time.perf_counter() - start)
        table.add_row(str(samples), f"{walls[-1]:.1f}", f"{walls[-1] / (samples * days):.4f}")
    Console().print(table)
    if counts[-1] * days >= MC_SAMPLE_DAYS:
        estimate, how = walls[-1], "measured"
    elif len(counts) > 1 and walls[-1] > walls[0]:
        slope = (walls[-1] - walls[0]) / ((counts[-1] - counts[0]) * days)
        estimate = walls[0] + slope * (MC_SAMPLE_DAYS - counts[0] * days)
        how = f"extrapolated: {walls[0]:.0f} s + {slope:.4f} s per further sample-day"
    else:
        # no usable slope (one run, or a shared machine's noise above the samples' cost)
        estimate = walls[-1] / (counts[-1] * days) * MC_SAMPLE_DAYS
        how = "extrapolated in proportion to the last run (compilation included: an upper bound)"
    Console().print(
        f"1,000 samples x 30 days: {estimate:.0f} s ({how}); target {MC_TARGET_S:.0f} s, "
        f"ratio {MC_TARGET_S / estimate:.2f}"
    )
    assert result is not None
    d = result.distributions
    drivers = ", ".join(f"{c.equipment} {c.share:.0%}" for c in result.contributions if c.share)
    t, lost = d["throttled_gpu_hours"], d["lost_eflop"]
    Console().print(
        f"last run: throttled GPU-h mean {t.mean:.4g} P50 {t.p50:.4g} P95 {t.p95:.4g} "
        f"P99 {t.p99:.4g}; lost EFLOP mean {lost.mean:.4g}; drivers: {drivers}"
    )


def pin_to_a_core(dask_worker) -> int:
    """Pin every thread of a LocalCluster worker to the core of its index (run with
    ``client.run``, which passes the worker); returns the core."""
    cores = sorted(os.sched_getaffinity(0))
    core = cores[int(dask_worker.name) % len(cores)]
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:  # a thread that ended meanwhile
            continue
    return core


def main() -> None:
    parser = argparse.ArgumentParser(description="A what-if study on 1 and 2 Dask workers.")
    parser.add_argument("--site", type=Path, default=ROOT / "tests" / "sites" / "small.yaml")
    parser.add_argument("--variants", type=int, default=31, help="grid points (plus the base)")
    parser.add_argument("--duration", default="7d")
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--monte-carlo", default="", help="sample counts, e.g. 1000, or 10,40 to extrapolate"
    )
    parser.add_argument("--mc-site", type=Path, default=ROOT / "scenarios" / "fairwater-wi.yaml")
    parser.add_argument("--mc-duration", default="30d")
    parser.add_argument("--mc-dt", default="30s")
    parser.add_argument("--skip-dask", action="store_true", help="the Monte Carlo row only")
    args = parser.parse_args()
    if args.monte_carlo:
        counts = [int(n) for n in args.monte_carlo.split(",")]
        monte_carlo(args.mc_site, counts, args.mc_duration, args.mc_dt)
    if args.skip_dask:
        return

    site = load_site(args.site)
    grid = [float(v) for v in np.linspace(26.0, 38.0, args.variants)]
    spec = parse_spec({"duration": args.duration, "dt": "10s", "vary": {"cooling.supply_c": grid}})
    total = args.variants + 1
    chunks = -(-total // args.chunk)
    start = time.perf_counter()
    local = run_study(site, spec, chunk=args.chunk).to_dict()
    rows = [("in-process", "-", time.perf_counter() - start, None, None)]
    for workers in (int(w) for w in args.workers.split(",")):
        with open_client(parse_target(f"local:{workers}")) as client:
            client.run(pin_to_a_core)
            start = time.perf_counter()
            first = run_study_on_dask(client, site, spec, chunk=args.chunk)
            first_s = time.perf_counter() - start
            warm = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                again = run_study_on_dask(client, site, spec, chunk=args.chunk)
                warm.append(time.perf_counter() - start)
                assert again.to_dict() == local, "a Dask run differs from the in-process run"
            assert first.to_dict() == local, "a Dask run differs from the in-process run"
        best = min(warm)
        rows.append((f"{workers} worker(s)", str(workers), first_s, best, best * workers / chunks))

    table = Table(
        title=f"{site.name}: {total} variants x {args.duration}, dt 10 s, "
        f"{chunks} chunks of {args.chunk}"
    )
    for heading in ("run", "workers", "first s", "warm s", "per chunk s", "speed-up"):
        table.add_column(heading, justify="right")
    one = next((best for _, w, _, best, _ in rows if w == "1"), None)
    for name, workers, first_s, best, per_chunk in rows:
        table.add_row(
            name,
            workers,
            f"{first_s:.1f}",
            "-" if best is None else f"{best:.2f}",
            "-" if per_chunk is None else f"{per_chunk:.3f}",
            "-" if best is None or one is None else f"{one / best:.2f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
