"""Batched what-if rollouts: variants stacked on a leading axis and advanced together by
one vmapped, compiled rollout, in chunks that fit the cache, sharded over devices.

All variants advance in lockstep, so the step counter stays unbatched: time-indexed
lookups (drivers, failure schedules) remain plain slices instead of per-variant gathers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from twin_core import kpis as kpi_mod
from twin_core.compress import compress, pad
from twin_core.coupling import TwinState, init_state
from twin_core.drivers import DriverCache
from twin_core.params import Granularity, Layout, Params, build_params, layout_of
from twin_core.pytree import build, replace
from twin_core.rollout import Result, _run, _single_step, _unpack, plan
from twin_core.site import Site, with_overrides

# vmap axes: every leaf batched but the step counter (axis specs, not arrays: built
# without the field checks).
STATE_AXES: TwinState = build(
    TwinState, step=None, compute=0, cooling=0, power=0, energy=0, boundary=0
)


def default_chunk(sample: Params) -> int:
    """Variants per compiled call. On a CPU, past ~90,000 rack elements per step (32
    unmerged Fairwater-size variants) the working set leaves the caches and throughput
    per variant drops (bench/whatif.py); an accelerator wants as many as fit. Merged
    sites (compress.py) have a few elements each, so many more fit a chunk."""
    elements = int(np.prod(np.shape(sample.compute.mask)))
    budget = 92_160 if jax.default_backend() == "cpu" else 2_949_120
    return int(np.clip(budget // max(elements, 1), 1, 65_536))


def stack_params(params: Sequence[Params]) -> Params:
    """Stack variants leaf by leaf; a property stored once per site in one variant and per
    rack in another (rack-type swaps) is broadcast to the per-rack shape first."""

    def stack(*leaves):
        shape = np.broadcast_shapes(*(np.shape(leaf) for leaf in leaves))
        return np.stack([np.broadcast_to(np.asarray(leaf), shape) for leaf in leaves])

    return jax.tree.map(stack, *params)


def _map_batched(fn, s: TwinState) -> TwinState:
    """``fn`` on every leaf of ``s`` that carries the variant axis (all but the step)."""
    fields = ("compute", "cooling", "power", "energy", "boundary")
    return replace(s, **{f: jax.tree.map(fn, getattr(s, f)) for f in fields})


def _compiled_single():
    """A batch of one without vmap: the plain rollout is several times faster per step
    on a CPU, where a lone variant is bound by kernel launches."""
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731

    def init(p):
        return _map_batched(lambda x: x[None], init_state(first(p)))

    def run(p, s0, n_records, every):
        s0 = _map_batched(lambda x: x[0], s0)
        s, (mean, peak) = _run(first(p), s0, n_records, every)
        return _map_batched(lambda x: x[None], s), (mean[:, None], peak[:, None])

    return jax.jit(init), jax.jit(run, static_argnames=("n_records", "every"))


@lru_cache(maxsize=8)
def _compiled(size: int):
    if size == 1:
        return _compiled_single()
    init = jax.jit(jax.vmap(init_state, out_axes=STATE_AXES))
    advance = jax.vmap(_single_step, in_axes=(0, STATE_AXES), out_axes=(STATE_AXES, 0))

    def run(p, s0, n_records, every):
        return _run(p, s0, n_records, every, advance, (size,))

    return init, jax.jit(run, static_argnames=("n_records", "every"))


def _shard(tree, size: int):
    """Split the variant axis over the local devices (several GPUs, or CPU host devices
    made with --xla_force_host_platform_device_count); replicate everything else."""
    devices = jax.devices()
    if len(devices) < 2 or size % len(devices):
        return jax.device_put(tree)
    mesh = Mesh(np.array(devices), ("variant",))
    split = NamedSharding(mesh, PartitionSpec("variant"))
    whole = NamedSharding(mesh, PartitionSpec())

    def place(leaf):
        batched = np.ndim(leaf) > 0 and np.shape(leaf)[0] == size
        return jax.device_put(leaf, split if batched else whole)

    return jax.tree.map(place, tree)


def _segment(n_records: int, segments: int) -> int:
    """Records per compiled call: the largest divisor of ``n_records`` giving at most
    ``segments`` calls, so every call has one size and one compilation."""
    want = max(1, min(segments, n_records))
    return next(n_records // k for k in range(want, 0, -1) if n_records % k == 0)


def chunk_size(params: Sequence[Params], chunk: int | None = None) -> int:
    """Variants per compiled call for ``params``: ``chunk`` (or ``default_chunk``), at
    most the variant count, rounded up to a whole number of variants on every device.
    A runner that splits a study elsewhere (services/study_cluster.py) uses the same
    size, so each part is the same compiled call as here."""
    chunk = max(1, min(chunk or default_chunk(params[0]), len(params)))
    devices = jax.device_count()
    return -(-chunk // devices) * devices


def run_batch(
    params: Sequence[Params],
    n_records: int,
    every: int,
    chunk: int | None = None,
    progress: Callable[[float], None] | None = None,
    segments: int = 1,
) -> tuple[list[TwinState], np.ndarray, np.ndarray]:
    """Advance every variant; returns final states and (variants, records, series) means and
    maxes. The last chunk is padded by repeating a variant so one compilation serves all.

    ``progress(variants)`` reports the variants completed so far (fractional while a chunk
    is part-way, when its records are advanced in ``segments`` calls)."""
    chunk = chunk_size(params, chunk)
    init, run = _compiled(chunk)
    size = _segment(n_records, segments)
    finals: list[TwinState] = []
    means, maxes = [], []
    for start in range(0, len(params), chunk):
        part = list(params[start : start + chunk])
        real = len(part)
        part += [part[-1]] * (chunk - real)
        p = _shard(stack_params(part), chunk)
        state, mean_parts, peak_parts = init(p), [], []
        for done in range(size, n_records + 1, size):
            state, (mean, peak) = run(p, state, size, every)
            mean_parts.append(np.asarray(mean))
            peak_parts.append(np.asarray(peak))
            if progress:
                progress(start + real * done / n_records)
        # records come out (record, variant, series): put variants first
        means.append(np.swapaxes(np.concatenate(mean_parts), 0, 1)[:real])
        maxes.append(np.swapaxes(np.concatenate(peak_parts), 0, 1)[:real])
        finals += [jax.tree.map(lambda x, i=i: x[i] if x.ndim else x, state) for i in range(real)]
    return finals, np.concatenate(means), np.concatenate(maxes)


# ``run_batch``'s signature: (params, n_records, every, chunk, progress, segments) ->
# (final states, means, maxes). ``simulate_sites`` takes another (a cluster's) in its place.
BatchRunner = Callable[
    [Sequence[Params], int, int, int | None, Callable[[float], None] | None, int],
    tuple[list[TwinState], np.ndarray, np.ndarray],
]


def sites_params(
    sites: Sequence[Site], horizon_s: float, dt: float, granularity: Granularity, dtype
) -> list[Params]:
    """Params of whole sites, identical racks merged (compress.py), padded to one layout
    (padding slots stand for nothing)."""
    lay: Layout = layout_of(sites[0], granularity)
    for s in sites[1:]:
        lay = lay.union(layout_of(s, granularity))
    drivers = DriverCache()  # variants mostly share their drivers: load each set once
    params = [
        compress(
            build_params(
                s,
                drivers(s),
                horizon_s=horizon_s,
                dt=dt,
                granularity=granularity,
                dtype=dtype,
                pad_to=lay,
                host=True,
            )
        )
        for s in sites
    ]
    racks = max(np.shape(q.compute.mask)[0] for q in params)
    cdus = max(np.shape(q.compute.mask)[1] for q in params)
    return [pad(q, racks, cdus) for q in params]


def simulate_batch(
    site: Site,
    variants: Sequence[dict[str, Any]],
    horizon_s: float,
    dt: float = 1.0,
    record_s: float | None = None,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    chunk: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> list[Result]:
    """All ``variants`` (each a dict of dotted-path overrides) in vmapped rollouts."""
    sites = [with_overrides(site, v) for v in variants]
    return simulate_sites(sites, horizon_s, dt, record_s, granularity, dtype, chunk, progress)


def simulate_sites(
    sites: Sequence[Site],
    horizon_s: float,
    dt: float = 1.0,
    record_s: float | None = None,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    chunk: int | None = None,
    progress: Callable[[float], None] | None = None,
    segments: int = 1,
    runner: BatchRunner = run_batch,
) -> list[Result]:
    """Whole sites (validated variants) in vmapped rollouts, advanced by ``runner``."""
    n_records, every = plan(horizon_s, dt, record_s)
    params = sites_params(sites, horizon_s, dt, granularity, dtype)
    finals, means, maxes = runner(params, n_records, every, chunk, progress, segments)
    results = []
    for final, mean, peak in zip(finals, means, maxes, strict=True):
        m, x = _unpack(mean, peak)
        results.append(
            Result(every * dt, dt, m, x, final, kpi_mod.summarize(m, x, final, every * dt))
        )
    return results
