"""Rollouts: ``simulate`` (lax.scan with interval aggregates), ``simulate_batch`` (vmap over
parameter overrides) and gradients of KPIs (jax.grad).

A rollout records site-level series at the recording interval as the mean and the max
of each quantity over the interval, so a year at 1 s never holds per-second arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from twin_core import contract, lowered, spectrum
from twin_core import kpis as kpi_mod
from twin_core.compress import compress
from twin_core.contract import SERIES
from twin_core.coupling import StepOutputs, TwinState, coupled_step, init_state
from twin_core.drivers import DriverData, load_drivers
from twin_core.params import Granularity, Params, build_params
from twin_core.pytree import Array, replace
from twin_core.site import Site


def site_series(p: Params, o: StepOutputs) -> jnp.ndarray:
    """The SERIES vector of one step: every quantity of the contract, in its order."""
    outputs = {d: getattr(o, d) for d in contract.DOMAINS}
    params = {d: getattr(p, d) for d in contract.DOMAINS}
    dtype = p.hourly.dtype
    return jnp.stack(
        [
            jnp.asarray(q.of(outputs[q.domain], o.drivers, params[q.domain]), dtype)
            for q in contract.QUANTITIES
        ]
    )


def _single_step(p: Params, s: TwinState):
    s, out = coupled_step(p, s)
    return s, site_series(p, out)


def _run(
    p: Params,
    s0: TwinState,
    n_records: int,
    every: int,
    advance=_single_step,
    batch=(),
    trace: int | None = None,
) -> tuple[TwinState, Any]:
    """Advance ``n_records * every`` steps; per record, the mean and max of SERIES.

    ``advance(p, s) -> (s, series)``; a batch passes its vmapped step and its size.
    ``trace``: the index of one SERIES quantity also kept at every step, (records, every),
    as a third output (the power-quality mode keeps the meter so)."""
    shape = (*batch, len(SERIES))
    dtype = p.hourly.dtype

    def one_step(carry, _):
        s, total, peak = carry
        s, v = advance(p, s)
        return (s, total + v, jnp.maximum(peak, v)), None if trace is None else v[..., trace]

    def one_record(s, _):
        start = (s, jnp.zeros(shape, dtype), jnp.full(shape, -jnp.inf, dtype))
        (s, total, peak), kept = jax.lax.scan(one_step, start, None, length=every)
        if trace is None:
            return s, (total / every, peak)
        return s, (total / every, peak, kept)

    return jax.lax.scan(one_record, s0, None, length=n_records)


run_jit = jax.jit(_run, static_argnames=("n_records", "every", "trace"))
TRACED = SERIES.index("facility_w")  # the meter: what the power-quality mode keeps per step
# The most steps a power-quality run keeps (4 bytes each in float32: 64 MiB), e.g. 46 h
# at dt = 10 ms; a longer run is a planning question for the recorded series.
MAX_TRACED_STEPS = 2**24


def check_traced(steps: int) -> None:
    """Raises ValueError naming the limit when a power-quality run is too long to keep."""
    if steps > MAX_TRACED_STEPS:
        raise ValueError(
            f"power_quality: {steps:,} steps is more than the {MAX_TRACED_STEPS:,} whose meter "
            "power a run keeps; shorten the duration or lengthen dt"
        )


@dataclass
class Result:
    """A rollout: recorded series (mean and max per interval), final state and KPIs."""

    record_s: float
    dt: float
    means: dict[str, np.ndarray]
    maxes: dict[str, np.ndarray]
    final: TwinState
    kpis: dict[str, float]
    # The meter power at every coupling interval (W), in the power-quality mode only.
    meter_trace: np.ndarray | None = None

    @property
    def time_h(self) -> np.ndarray:
        n = len(next(iter(self.means.values())))
        return np.arange(n) * self.record_s / 3600.0


def plan(horizon_s: float, dt: float, record_s: float | None) -> tuple[int, int]:
    """(records, steps per record) for a horizon; raises ValueError naming the argument."""
    steps = horizon_s / dt
    if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
        raise ValueError(f"duration: {horizon_s:g} s is not a whole number of dt = {dt:g} s steps")
    if record_s is None:
        record_s = min(60.0, horizon_s) if dt <= 60 else dt
    every = record_s / dt
    if abs(every - round(every)) > 1e-6 or round(every) < 1:
        raise ValueError(f"record_every: {record_s:g} s is not a whole number of dt = {dt:g} s")
    if round(steps) % round(every):
        raise ValueError(
            f"record_every: {record_s:g} s does not divide the duration {horizon_s:g} s"
        )
    return round(steps) // round(every), round(every)


def _unpack(means: Array, maxes: Array) -> tuple[dict, dict]:
    return (
        {name: means[..., i] for i, name in enumerate(SERIES)},
        {name: maxes[..., i] for i, name in enumerate(SERIES)},
    )


def progress_chunks(
    n_records: int, every: int, max_chunks: int = 100, min_steps: int = 4096
) -> int:
    """How many pieces to run ``n_records`` in for a caller that shows progress: at most
    ``max_chunks`` equal ones (one compiled size) of at least ``min_steps`` coupled steps
    each, so that dispatch and host copies stay small beside the work of a piece."""
    least = max(math.ceil(n_records / max_chunks), math.ceil(min_steps / every))
    return n_records // _divisor_at_least(n_records, least)


def _divisor_at_least(n: int, k: int) -> int:
    """The smallest divisor of ``n`` that is at least ``k`` (``n`` itself past it)."""
    return next((d for d in range(max(k, 1), n + 1) if n % d == 0), n)


def run_records(
    p: Params,
    s0: TwinState,
    n_records: int,
    every: int,
    progress: Callable[[int], None] | None = None,
    chunks: int = 1,
    phase: Callable[[str], None] | None = None,
    trace: int | None = None,
) -> tuple[TwinState, np.ndarray, np.ndarray, np.ndarray | None]:
    """``run_jit`` in at most ``chunks`` equal pieces so a caller can show progress.

    Every piece has the same size (the smallest divisor of ``n_records`` that fits), so
    one program is compiled, ahead of time (``phase("compile")`` then names its end). A
    piece is dispatched before the previous one is copied to the host: with JAX's
    asynchronous dispatch the copy and the progress report overlap the next piece.
    Returns the final state, the means, the maxes and (with ``trace``) the traced
    quantity at every step, flat."""
    size = _divisor_at_least(n_records, math.ceil(n_records / max(1, chunks)))
    run = lowered.compiled(run_jit, "rollout", p, s0, n_records=size, every=every, trace=trace)
    if phase:
        phase("compile")
    n_chunks = n_records // size
    pieces: list[list[np.ndarray]] = [[], [], []]
    s, pending = s0, None
    for i in range(n_chunks + 1):
        ahead = None
        if i < n_chunks:  # dispatched, not waited for
            s, ahead = run(p, s)
        if pending is not None:  # the previous piece, copied while this one runs
            for kept, array in zip(pieces, pending, strict=False):
                kept.append(np.asarray(array))
            if progress:
                progress(size)
        pending = ahead
    kept = np.concatenate(pieces[2]).reshape(-1) if trace is not None else None
    return s, np.concatenate(pieces[0]), np.concatenate(pieces[1]), kept


def simulate_params(
    p: Params,
    horizon_s: float,
    record_s: float | None = None,
    *,
    merge_identical: bool = True,
    progress: Callable[[int], None] | None = None,
    chunks: int = 1,
    phase: Callable[[str], None] | None = None,
    power_quality: bool = False,
) -> Result:
    """``simulate`` from parameters already built (``build_params(..., host=True)``), for a
    caller that built them once to check them. ``phase(name)`` is called as each stage
    ends: "params" (merged and on the device), "init_state", "compile", "stepping",
    "kpis". ``power_quality``: keep the meter power at every step (``meter_trace``) and
    add its spectrum's KPIs (spectrum.py)."""
    mark = phase or (lambda _: None)
    n_records, every = plan(horizon_s, p.dt, record_s)
    p = jax.device_put(compress(p) if merge_identical else p)
    mark("params")
    s0 = jax.block_until_ready(lowered.compiled(init_state, "init_state", p)(p))
    mark("init_state")
    if power_quality:
        check_traced(n_records * every)
    trace = TRACED if power_quality else None
    final, means, maxes, meter = run_records(p, s0, n_records, every, progress, chunks, mark, trace)
    mark("stepping")
    m, x = _unpack(means, maxes)
    kpis = kpi_mod.summarize(m, x, final, every * p.dt)
    if meter is not None:
        kpis.update(spectrum.kpis(meter, p.dt))
    mark("kpis")
    return Result(every * p.dt, p.dt, m, x, final, kpis, meter)


def simulate(
    site: Site,
    horizon_s: float,
    dt: float = 1.0,
    record_s: float | None = None,
    *,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    progress: Callable[[int], None] | None = None,
    chunks: int = 1,
    merge_identical: bool = True,
    drivers: DriverData | None = None,
    power_quality: bool = False,
) -> Result:
    """Run ``site`` for ``horizon_s`` seconds at coupling interval ``dt``.

    ``merge_identical``: advance one representative of each class of identical racks and
    CDUs (exact; see compress.py); ``False`` advances every rack (``final`` then holds
    the full per-rack state). ``drivers``: the site's loaded drivers (read here if not
    given). ``power_quality``: see ``simulate_params``."""
    plan(horizon_s, dt, record_s)
    drivers = drivers if drivers is not None else load_drivers(site)
    p = build_params(
        site, drivers, horizon_s=horizon_s, dt=dt, granularity=granularity, dtype=dtype, host=True
    )
    return simulate_params(
        p,
        horizon_s,
        record_s,
        merge_identical=merge_identical,
        progress=progress,
        chunks=chunks,
        power_quality=power_quality,
    )


# Continuous site fields that gradients can be taken with respect to:
# site path -> (params path, factor from site units to params units).
TUNABLE: dict[str, tuple[str, float]] = {
    "cooling.supply_c": ("cooling.supply_c", 1.0),
    "cooling.air_handling_w_per_w": ("cooling.air_handling_w_per_w", 1.0),
    "controls.fan_kp": ("cooling.fan_kp", 1.0),
    "controls.fan_ki": ("cooling.fan_ki", 1.0),
    "energy.battery.capacity_mwh": ("energy.battery_capacity_mwh", 1.0),
    "energy.battery.power_mw": ("energy.battery_power_mw", 1.0),
    "energy.battery.peak_threshold_mw": ("energy.peak_threshold_w", 1e6),
    "power.interconnect_limit_mw": ("power.interconnect_w", 1e6),
    "power.misc_fixed_mw": ("power.misc_fixed_w", 1e6),
}


Node = TypeVar("Node")  # Params, or one of its sub-trees


def set_param(p: Node, path: str, value) -> Node:
    """A copy of ``p`` with the leaf at dotted ``path`` replaced (works under tracing)."""
    head, _, rest = path.partition(".")
    child = getattr(p, head)
    if not rest:
        return replace(p, **{head: jnp.asarray(value, jnp.asarray(child).dtype)})
    return replace(p, **{head: set_param(child, rest, value)})


def get_param(p: Params, path: str):
    node: Any = p
    for key in path.split("."):
        node = getattr(node, key)
    return node


def kpi_model(
    site: Site,
    *,
    wrt: Sequence[str],
    horizon_s: float,
    dt: float = 1.0,
    record_s: float | None = None,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    field: str = "wrt",
    drivers: DriverData | None = None,
) -> tuple[Callable[[dict], dict], dict]:
    """``(f, x0)``: ``f(x)`` runs the whole rollout with the continuous site fields ``x``
    (``TUNABLE`` paths, site units) and returns every KPI as a traceable scalar; ``x0``
    holds the site's own values. Differentiate ``f`` with ``jax.grad``/``jax.jacrev``.
    ``field``: the name errors about ``wrt`` start with (a request's own field name)."""
    unknown = [w for w in wrt if w not in TUNABLE]
    if unknown:
        raise ValueError(
            f"{field}: {unknown[0]!r} is not differentiable (choose from {sorted(TUNABLE)})"
        )
    n_records, every = plan(horizon_s, dt, record_s)
    drivers = drivers if drivers is not None else load_drivers(site)
    p = build_params(
        site, drivers, horizon_s=horizon_s, dt=dt, granularity=granularity, dtype=dtype, host=True
    )
    p = jax.device_put(compress(p))
    x0 = {w: get_param(p, TUNABLE[w][0]) / TUNABLE[w][1] for w in wrt}

    def kpis(x: dict) -> dict:
        q = p
        for w, v in x.items():
            q = set_param(q, TUNABLE[w][0], v * TUNABLE[w][1])
        s0 = init_state(q)
        final, (means, maxes) = _run(q, s0, n_records, every)
        m, mx = _unpack(means, maxes)
        return kpi_mod.kpi_table(m, mx, final, every * dt)

    return kpis, x0


def kpi_value_and_grad(
    site: Site,
    kpi: str,
    *,
    wrt: Sequence[str],
    horizon_s: float,
    dt: float = 1.0,
    record_s: float | None = None,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    drivers: DriverData | None = None,
) -> tuple[float, dict[str, float]]:
    """A KPI and its gradient with respect to continuous site fields (``TUNABLE``), per
    site unit, by reverse-mode differentiation through the whole rollout."""
    if kpi not in kpi_mod.KPI_UNITS:
        raise ValueError(f"kpi: unknown KPI {kpi!r} (choose from {', '.join(kpi_mod.KPI_UNITS)})")
    kpis, x0 = kpi_model(
        site,
        wrt=wrt,
        horizon_s=horizon_s,
        dt=dt,
        record_s=record_s,
        granularity=granularity,
        dtype=dtype,
        drivers=drivers,
    )
    value, grads = jax.jit(jax.value_and_grad(lambda x: kpis(x)[kpi]))(x0)
    return float(value), {w: float(g) for w, g in grads.items()}
