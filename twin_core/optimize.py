"""Gradients of KPIs for planners: sensitivities of many KPIs at once (``jax.jacrev``
through the whole rollout) and ``optimize``, which finds setpoints within bounds that
minimise facility energy, cost or emissions subject to the GPU-temperature, ramp and
interconnect constraints, by projected Adam steps on a penalised objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from twin_core.kpis import KPI_UNITS
from twin_core.params import Granularity
from twin_core.rollout import TUNABLE, kpi_model
from twin_core.site import Site
from twin_core.study import Constraints, check_constraints

OBJECTIVES = ("facility_energy_mwh", "cost_usd", "emissions_tco2")
INTERCONNECT = "power.interconnect_limit_mw"
# Penalty weight per unit of normalised violation; constraint values are normalised by
# these scales so that 1 K over the GPU limit and 1 % over the ramp limit weigh alike.
PENALTY = 100.0


def _check_kpis(names: Sequence[str], field: str) -> None:
    for name in names:
        if name not in KPI_UNITS:
            raise ValueError(f"{field}: unknown KPI {name!r} (choose from {', '.join(KPI_UNITS)})")


def sensitivities(
    site: Site,
    kpis: Sequence[str],
    wrt: Sequence[str],
    horizon_s: float,
    dt: float = 10.0,
    record_s: float | None = None,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    field: str = "wrt",
) -> dict[str, dict]:
    """KPI values and d(KPI)/d(parameter) in site units, one reverse pass per KPI."""
    if not kpis:
        raise ValueError("kpis: give at least one KPI")
    if not wrt:
        raise ValueError(f"{field}: give at least one parameter (choose from {sorted(TUNABLE)})")
    _check_kpis(kpis, "kpis")
    model, x0 = kpi_model(site, wrt, horizon_s, dt, record_s, granularity, dtype, field)

    def selected(x):
        table = model(x)
        return {k: table[k] for k in kpis}

    values, jac = jax.jit(lambda x: (selected(x), jax.jacrev(selected)(x)))(x0)
    return {
        "at": {w: float(v) for w, v in x0.items()},
        "values": {k: float(v) for k, v in values.items()},
        "gradients": {k: {w: float(jac[k][w]) for w in wrt} for k in kpis},
    }


def _with_interconnect(site: Site, x: dict[str, float]) -> Site:
    """``site`` with the interconnect limit at ``x`` when the search varies it."""
    if INTERCONNECT not in x:
        return site
    power = site.power.model_copy(update={"interconnect_limit_mw": x[INTERCONNECT]})
    return site.model_copy(update={"power": power})


@dataclass
class Step:
    x: dict[str, float]
    objective: float
    feasible: bool
    constraints: dict[str, dict]


def optimize(
    site: Site,
    objective: str,
    bounds: dict[str, tuple[float, float]],
    constraints: Constraints,
    horizon_s: float,
    dt: float = 10.0,
    record_s: float | None = None,
    iterations: int = 40,
    learning_rate: float = 0.08,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    progress: Callable[[int, int], None] | None = None,
    field: str = "wrt",
) -> dict:
    """Setpoints within ``bounds`` minimising ``objective`` under ``constraints``.

    Works in coordinates scaled to [0, 1] per bound, so one learning rate suits degrees
    and megawatts; the step size decays so the iterates settle on an active constraint,
    and the best feasible point seen is returned (the start, if nothing better is)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if not bounds:
        raise ValueError(f"bounds: give at least one parameter (choose from {sorted(TUNABLE)})")
    for name, (lo, hi) in bounds.items():
        if not lo < hi:
            raise ValueError(f"bounds.{name}: lower bound {lo:g} must be below upper {hi:g}")
    if iterations < 1:
        raise ValueError("iterations: must be at least 1")
    model, x0 = kpi_model(site, list(bounds), horizon_s, dt, record_s, granularity, dtype, field)
    names = list(bounds)
    lo = np.array([bounds[n][0] for n in names])
    span = np.array([bounds[n][1] - bounds[n][0] for n in names])
    limits = check_constraints({k: 0.0 for k in KPI_UNITS}, site, constraints)
    scales = {"max_gpu_temp_c": 1.0, "peak_facility_mw": 0.01, "max_grid_ramp_mw_per_s": 0.01}

    def to_x(z):
        return {n: lo[i] + z[i] * span[i] for i, n in enumerate(names)}

    def limit(name: str, x: dict):
        """A constraint's limit at ``x``: the interconnect limit may itself be a bound."""
        if name == "peak_facility_mw" and INTERCONNECT in x:
            return x[INTERCONNECT]
        return limits[name]["limit"]

    def loss(z, reference):
        x = to_x(z)
        table = model(x)
        total = table[objective] / reference
        for name in limits:
            bound = limit(name, x)
            scale = scales[name] * (1.0 if name == "max_gpu_temp_c" else bound)
            total += PENALTY * jnp.maximum(table[name] - bound, 0.0) ** 2 / scale**2
        return total, table

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    start = np.clip((np.array([float(x0[n]) for n in names]) - lo) / span, 0.0, 1.0)
    reference = abs(float(model(to_x(jnp.asarray(start)))[objective])) or 1.0
    z = start.copy()
    m = np.zeros_like(z)
    v = np.zeros_like(z)
    history: list[Step] = []
    best: Step | None = None
    for k in range(iterations):
        (_, table), g = grad_fn(jnp.asarray(z), reference)
        kpis = {key: float(val) for key, val in table.items()}
        here = {n: float(lo[i] + z[i] * span[i]) for i, n in enumerate(names)}
        checks = check_constraints(kpis, _with_interconnect(site, here), constraints)
        step = Step(
            {n: float(lo[i] + z[i] * span[i]) for i, n in enumerate(names)},
            kpis[objective],
            all(c["passed"] for c in checks.values()),
            checks,
        )
        history.append(step)
        if step.feasible and (best is None or step.objective < best.objective):
            best = step
        g = np.asarray(g, dtype=np.float64)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        m_hat, v_hat = m / (1 - 0.9 ** (k + 1)), v / (1 - 0.999 ** (k + 1))
        rate = learning_rate * 0.9**k
        z = np.clip(z - rate * m_hat / (np.sqrt(v_hat) + 1e-12), 0.0, 1.0)
        if progress:
            progress(k + 1, iterations)
    first = history[0]
    chosen = best or first
    return {
        "objective": objective,
        "start": {"x": first.x, "objective": first.objective, "feasible": first.feasible},
        "best": {
            "x": chosen.x,
            "objective": chosen.objective,
            "feasible": chosen.feasible,
            "constraints": chosen.constraints,
        },
        "improvement": first.objective - chosen.objective,
        "iterations": [
            {"x": s.x, "objective": s.objective, "feasible": s.feasible} for s in history
        ],
    }
