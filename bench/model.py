"""Model benchmark: one Fairwater rollout at dt = 1 s, at rack granularity (identical racks
merged, the default, next to every rack advanced: the baseline) and per GPU, and the
power-quality mode (an hour at dt = 50 ms, sub-second phases, the meter kept at every
step), printed as a table with targets and ratios. Batched what-if throughput is
bench/whatif.py.

    python bench/model.py                 # CPU targets (2-core CI machine)
    python bench/model.py --gpus 500000   # on an accelerator

Compile time is measured on its own (lower + compile); the timed runs re-use the
compiled rollout, so figures are steady-state simulation speed: the median of
``--repeats`` runs, with the range of real-time factors beside it (these machines are
shared, and one run can be off by half). Each row runs in its own process, on the XLA
CPU thread pool ``twin simulate`` gives its granularity (one thread at rack granularity,
the default pool per GPU: services/runtime/xla_threads.py).

The floor of a step is the memory traffic it cannot avoid: the carried state read and
written once (its pytree's bytes, twice) at the memory bandwidth, measured in the same
run with a large NumPy copy on a CPU (datasheet figures on an accelerator). A step far
above its floor is bound by kernel launches and arithmetic, not by memory.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from services.runtime import xla_threads
from twin_core import Granularity, build_params, init_state, load_drivers, load_site, spectrum
from twin_core.compress import compress
from twin_core.rollout import TRACED, run_jit
from twin_core.site import with_overrides

ROOT = Path(__file__).resolve().parent.parent
FAIRWATER = ROOT / "scenarios" / "fairwater-wi.yaml"
# Memory bandwidth of the accelerators we report a floor for (vendor datasheets).
BANDWIDTH_BYTES_PER_S = {"NVIDIA H200": 4.8e12, "NVIDIA H100 80GB HBM3": 3.35e12}
# The power-quality row: an hour of Fairwater at dt = 50 ms (10 Hz Nyquist), at least
# 100x real time (issue 15).
PQ, PQ_DT, PQ_TARGET = "rack, pq 50 ms", 0.05, 100


def fairwater(gpus: int | None):
    """The Fairwater site, or one scaled (more CDUs per hall) to about ``gpus`` GPUs."""
    site = load_site(FAIRWATER)
    if gpus is None:
        return site
    halls = len(site.halls)
    per_cdu = site.halls[0].racks_per_cdu * 72
    cdus = -(-gpus // (per_cdu * halls))
    scale = cdus / site.halls[0].cdus
    overrides: dict = {f"halls.{i}.cdus": cdus for i in range(halls)}
    for i, job in enumerate(site.workload.training):
        overrides[f"workload.training.{i}.racks"] = int(job.racks * scale)
    for i, pool in enumerate(site.workload.inference):
        overrides[f"workload.inference.{i}.racks"] = int(pool.racks * scale)
    c = site.cooling
    overrides["cooling.dry_coolers.units"] = int(c.dry_coolers.units * scale) + 1
    overrides["cooling.chillers.units"] = int(c.chillers.units * scale) + 1
    overrides["cooling.facility_water.pumps"] = int(c.facility_water.pumps * scale) + 1
    overrides["cooling.facility_water.duty_pumps"] = int(c.facility_water.duty_pumps * scale)
    overrides["cooling.facility_water.loop_volume_m3"] = c.facility_water.loop_volume_m3 * scale
    overrides["power.interconnect_limit_mw"] = site.power.interconnect_limit_mw * scale
    overrides["power.transformers.rating_mva"] = site.power.transformers.rating_mva * scale
    overrides["power.ups.rating_mw"] = site.power.ups.rating_mw * scale
    return load_site(FAIRWATER, overrides)


def pq_site(site):
    """``site`` with its first training job on its rack type's default (sub-second phase)
    iteration (site.TrainingJob)."""
    two_phase = ("iteration_s", "compute_fraction", "compute_util", "comm_util")
    return with_overrides(site, {f"workload.training.0.{f}": None for f in two_phase})


def tree_bytes(tree) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def copy_bandwidth(mib: int = 256, rounds: int = 5) -> float:
    """Memory bandwidth of this host (bytes read + written per second): the best of
    ``rounds`` copies of a ``mib`` MiB array, far larger than any cache."""
    src = np.ones(mib * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def time_single(
    site,
    granularity: Granularity,
    seconds: int,
    merged: bool,
    dt: float = 1.0,
    trace: int | None = None,
    repeats: int = 5,
):
    """(compile s, wall s of each of ``repeats`` runs, state bytes read and written per
    step, elements, the rollout's outputs) for one rollout; ``merged``: identical racks and
    CDUs advanced once (compress.py); ``trace``: a quantity kept at every step
    (rollout.py)."""
    every = round(60 / dt)  # a record a minute
    n_records = round(seconds / dt) // every
    drivers = load_drivers(site)
    p = build_params(site, drivers, horizon_s=seconds, dt=dt, granularity=granularity, host=True)
    p = jax.device_put(compress(p) if merged else p)
    elements = int(np.prod(np.shape(p.compute.gpu_weight)))
    s0 = init_state(p)
    start = time.perf_counter()
    compiled = run_jit.lower(p, s0, n_records, every, trace=trace).compile()
    compile_s = time.perf_counter() - start
    out = jax.block_until_ready(compiled(p, s0))  # warm caches and allocations
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(p, s0))
        walls.append(time.perf_counter() - start)
    # Lower bound on memory traffic per step: the carried state read once and written once.
    return compile_s, walls, 2 * tree_bytes(s0), elements, out


def in_own_process(granularity: Granularity, site, seconds, merged, dt, trace, repeats):
    """``time_single`` in a fresh process whose XLA CPU thread pool is the one ``twin
    simulate`` gives that granularity (one thread at rack granularity: xla_threads.py),
    which a process cannot change once JAX's client has started. Returns (compile s,
    walls, state bytes, elements, the traced meter or None)."""
    on_cpu = jax.devices()[0].platform == "cpu"
    init = xla_threads.use_one_thread if on_cpu and granularity == "rack" else None
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=init) as pool:
        job = pool.submit(_measured, site, granularity, seconds, merged, dt, trace, repeats)
        return job.result()


def _measured(site, granularity, seconds, merged, dt, trace, repeats):
    compile_s, walls, touched, elements, out = time_single(
        site, granularity, seconds, merged, dt, trace, repeats
    )
    meter = None if trace is None else np.asarray(out[1][2]).reshape(-1)
    return compile_s, walls, touched, elements, meter


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--gpus", type=int, default=None, help="scale Fairwater to ~N GPUs")
    parser.add_argument("--rack-seconds", type=int, default=3600, help="simulated s, rack run")
    parser.add_argument("--gpu-seconds", type=int, default=600, help="simulated s, per-GPU run")
    parser.add_argument(
        "--pq-seconds", type=int, default=3600, help="simulated s, power-quality run"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row (median)")
    args = parser.parse_args()

    device = jax.devices()[0]
    accelerator = device.platform != "cpu"
    kind = getattr(device, "device_kind", device.platform)
    site = fairwater(args.gpus)
    console = Console(width=180)
    bandwidth = BANDWIDTH_BYTES_PER_S.get(kind) if accelerator else copy_bandwidth()
    console.print(
        f"device: {kind} ({device.platform}) x{len(jax.devices())}, jax {jax.__version__}; "
        f"site {site.name}: "
        f"{site.rack_count:,} racks, {site.gpu_count:,} GPUs; memory bandwidth "
        + (f"{bandwidth / 1e9:,.1f} GB/s" if bandwidth else "unknown")
        + (" (datasheet)" if accelerator else " (measured: NumPy copy)")
    )

    single = Table(title="Fairwater rollout at dt = 1 s (float32)")
    for col in (
        "granularity",
        "racks merged",
        "elements",
        "compile s",
        "step µs",
        "× real time",
        "range ×",
        "target",
        "ratio",
        "vs every rack",
        "state kB r+w",
        "floor µs",
        "step/floor",
    ):
        single.add_column(col, justify="right")
    targets = {"rack": 20_000, "gpu": 5_000 if accelerator else 200, PQ: PQ_TARGET}
    baseline = None
    runs: tuple[tuple[Granularity, int, bool], ...] = (
        ("rack", args.rack_seconds, False),
        ("rack", args.rack_seconds, True),
        ("gpu", args.gpu_seconds, True),
    )
    rows: list[tuple[Granularity, int, bool, float, str, Any, int | None]]
    rows = [(g, n, m, 1.0, g, site, None) for g, n, m in runs]
    # The power-quality mode: sub-second phases (the rack type's default iteration for the
    # flagship job), the meter kept at every step.
    rows.append(("rack", args.pq_seconds, True, PQ_DT, PQ, pq_site(site), TRACED))
    pq_out = None
    for granularity, seconds, merged, dt, label, run_site, trace in rows:
        compile_s, walls, touched, elements, meter = in_own_process(
            granularity, run_site, seconds, merged, dt, trace, args.repeats
        )
        wall = float(np.median(walls))
        speed = seconds / wall
        if trace is not None:
            pq_out = meter
        if granularity == "rack" and not merged and trace is None:
            baseline = speed
        step_us = wall / round(seconds / dt) * 1e6
        floor_us = touched / bandwidth * 1e6 if bandwidth else float("nan")
        single.add_row(
            label,
            "yes" if merged else "no",
            f"{elements:,}",
            f"{compile_s:.1f}",
            f"{step_us:,.1f}",
            f"{speed:,.0f}",
            f"{seconds / max(walls):,.0f}-{seconds / min(walls):,.0f}",
            f"{targets[label]:,}",
            f"{speed / targets[label]:.2f}",
            f"{speed / baseline:.2f}×" if label == "rack" and baseline else "-",
            f"{touched / 1e3:,.1f}",
            f"{floor_us:.2f}" if bandwidth else "-",
            f"{step_us / floor_us:,.0f}" if bandwidth else "-",
        )
    console.print(single)
    if pq_out is not None:
        k = spectrum.kpis(pq_out, PQ_DT)
        console.print(
            f"{PQ}: meter band energy 0.1-2 Hz {k['meter_band_0p1_2hz_mw2']:,.4g} MW², "
            f"3-{k['meter_nyquist_hz']:g} Hz {k['meter_band_3_30hz_mw2']:,.4g} MW² "
            f"(3-30 Hz cut at the Nyquist frequency), peak {k['meter_peak_hz']:.3g} Hz"
        )


if __name__ == "__main__":
    jnp.zeros(1)  # initialise the backend before timing anything
    main()
