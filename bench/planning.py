"""Planning benchmark: the scaling of one what-if study from 1 to 2 Dask workers.

The same study (the small test site by default, a grid of supply temperatures) runs in
chunks of ``--chunk`` variants on a LocalCluster of 1, then 2 one-thread worker processes
on 127.0.0.1, next to the in-process chunked run.

    python bench/planning.py                      # small site, 16 variants x 6 h
    python bench/planning.py --variants 64 --duration 24h

Columns: ``first s`` is the first study on fresh workers (each imports JAX and compiles
the chunk's rollout once); ``warm s`` the same study again on the same workers (the best
of ``--repeat``); ``per chunk s`` is ``warm s`` x workers / chunks, the cost of one chunk
on one worker, from which a cluster of N workers takes about chunks / N x that. Every
run's result is checked equal to the in-process run's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from services.study_cluster import open_client, parse_target, run_study_on_dask
from twin_core import load_site, parse_spec, run_study

ROOT = Path(__file__).parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description="A what-if study on 1 and 2 Dask workers.")
    parser.add_argument("--site", type=Path, default=ROOT / "tests" / "sites" / "small.yaml")
    parser.add_argument("--variants", type=int, default=16, help="grid points (plus the base)")
    parser.add_argument("--duration", default="6h")
    parser.add_argument("--chunk", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

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
    for heading in ("run", "workers", "first s", "warm s", "per chunk s"):
        table.add_column(heading, justify="right")
    for name, workers, first_s, best, per_chunk in rows:
        table.add_row(
            name,
            workers,
            f"{first_s:.1f}",
            "-" if best is None else f"{best:.2f}",
            "-" if per_chunk is None else f"{per_chunk:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
