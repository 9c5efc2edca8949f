"""What-if benchmark: studies of 1, 16, 128 and 1,024 variants of the Fairwater site (rack
granularity, dt = 10 s, one simulated day each) through the study API, in variant-days
per wall minute, next to the same variants run one by one with ``simulate``.

    python bench/whatif.py                       # CPU (2-core CI machine): target 1,000
    python bench/whatif.py --variants 1,16,128,1024,4096   # on an accelerator: 100,000

Columns: ``prepare s`` validates every variant and builds its arrays; ``compile s`` is the
first batch's compilation; ``run s`` the batched rollouts once compiled (the best of
repeated runs over at least 2 s, since a lone variant takes a fraction of a second). On a CPU the
batch runs on one XLA device (splitting it over host devices made 128 variants 4× slower
here); several accelerators share the variant axis. The rate is
variant-days per minute of ``run s`` (the steady-state figure the target is set for),
and ``end to end`` includes preparation and compilation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from twin_core import load_site, parse_spec, plan, simulate
from twin_core.batch import default_chunk, run_batch, sites_params
from twin_core.study import prepare

ROOT = Path(__file__).resolve().parent.parent
FAIRWATER = ROOT / "scenarios" / "fairwater-wi.yaml"
# Memory bandwidth of the accelerators we report a floor for (vendor datasheets).
BANDWIDTH_BYTES_PER_S = {"NVIDIA H200": 4.8e12, "NVIDIA H100 80GB HBM3": 3.35e12}
DAY = 86400.0


def study_of(n: int, days: float) -> dict:
    """``n`` variants: supply setpoints and ambient offsets spread over a plausible range."""
    setpoints = np.linspace(28.0, 36.0, n)
    offsets = np.resize([0.0, 2.0, 4.0, -2.0], n)
    return {
        "duration": f"{days * 24:g}h",
        "dt": "10s",
        "variants": [
            {"name": f"v{i}", "set": {"cooling.supply_c": float(s), "weather.offset_c": float(o)}}
            for i, (s, o) in enumerate(zip(setpoints[1:], offsets[1:], strict=True))
        ],
    }


def tree_bytes(tree) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def time_study(site, n: int, days: float, chunk: int | None):
    """(prepare s, compile s, run s, bytes per variant-step) for a study of ``n`` variants."""
    spec = parse_spec(study_of(n, days))
    start = time.perf_counter()
    variants = prepare(site, spec)
    horizon, dt = days * DAY, 10.0
    params = sites_params([s for _, _, s in variants], horizon, dt, "rack", jnp.float32)
    prepare_s = time.perf_counter() - start
    n_records, every = plan(horizon, dt, None)
    size = max(1, min(chunk or default_chunk(params[0]), n))
    start = time.perf_counter()
    run_batch(params[:size], 1, every, size)  # compiles the chunk's rollout (one record)
    compile_s = time.perf_counter() - start
    run_batch(params[:size], n_records, every, size)  # and the full-length scan
    run_s, spent = float("inf"), 0.0
    while spent < 2.0:  # the best of a few runs: one variant alone takes ~0.1 s
        start = time.perf_counter()
        run_batch(params, n_records, every, size)
        took = time.perf_counter() - start
        run_s, spent = min(run_s, took), spent + took
    touched = tree_bytes(params[0]) - np.asarray(params[0].hourly).nbytes
    return prepare_s, compile_s, run_s, touched, size


def one_by_one(site, days: float, count: int = 2) -> float:
    """Variant-days per minute running variants in turn with ``simulate`` (compiled once)."""
    spec = parse_spec(study_of(count + 1, days))
    sites = [s for _, _, s in prepare(site, spec)]
    simulate(sites[0], days * DAY, 10.0)  # compile
    start = time.perf_counter()
    for s in sites[1:]:
        simulate(s, days * DAY, 10.0)
    wall = time.perf_counter() - start
    return count * days / (wall / 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--variants", default="1,16,128,1024", help="study sizes")
    parser.add_argument("--days", type=float, default=1.0, help="simulated days per variant")
    parser.add_argument("--chunk", type=int, default=None, help="variants per compiled call")
    args = parser.parse_args()

    device = jax.devices()[0]
    accelerator = device.platform != "cpu"
    kind = getattr(device, "device_kind", device.platform)
    site = load_site(FAIRWATER)
    console = Console(width=200)
    console.print(
        f"device: {kind} ({device.platform}) x{len(jax.devices())}, jax {jax.__version__}; "
        f"site {site.name}: {site.rack_count:,} racks, {site.gpu_count:,} GPUs; "
        f"{args.days:g} day(s) per variant at dt = 10 s, float32"
    )
    target = 100_000 if accelerator else 1_000
    serial = one_by_one(site, args.days)
    bandwidth = BANDWIDTH_BYTES_PER_S.get(kind)
    table = Table(title="What-if studies, Fairwater, rack granularity, dt = 10 s")
    for col in (
        "variants",
        "chunk",
        "prepare s",
        "compile s",
        "run s",
        "variant-days / min",
        "target",
        "ratio",
        "end to end / min",
        "gain vs one by one",
        "run / bandwidth floor",
    ):
        table.add_column(col, justify="right")
    for n in (int(v) for v in args.variants.split(",")):
        prepare_s, compile_s, run_s, touched, size = time_study(site, n, args.days, args.chunk)
        rate = n * args.days / (run_s / 60)
        end_to_end = n * args.days / ((prepare_s + compile_s + run_s) / 60)
        steps = n * args.days * DAY / 10.0
        floor_s = touched * steps / bandwidth if bandwidth else None
        table.add_row(
            f"{n:,}",
            str(size),
            f"{prepare_s:.1f}",
            f"{compile_s:.1f}",
            f"{run_s:.2f}",
            f"{rate:,.0f}",
            f"{target:,}",
            f"{rate / target:.2f}",
            f"{end_to_end:,.0f}",
            f"{rate / serial:.1f}×",
            f"{run_s / floor_s:.0f}×" if floor_s else "-",
        )
    console.print(table)
    console.print(f"one by one (simulate, compiled once): {serial:,.0f} variant-days / min")


if __name__ == "__main__":
    jnp.zeros(1)  # initialise the backend before timing anything
    main()
