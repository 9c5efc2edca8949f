"""Gradients of KPIs for planners: ``sensitivities`` of many KPIs at once (``jax.jacrev``
through the whole rollout) and ``optimize``, which finds setpoints within bounds that
minimise facility energy, cost or emissions subject to the GPU-temperature, ramp and
interconnect constraints, by projected Adam steps on a penalised objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import jax
import jax.numpy as jnp
import numpy as np

from twin_core.drivers import DriverData
from twin_core.kpis import KPI_UNITS
from twin_core.params import Granularity
from twin_core.rollout import TUNABLE, kpi_model
from twin_core.site import Site
from twin_core.study import ConstraintCheck, Constraints, check_constraints, checks_to_dict

Objective = Literal["facility_energy_mwh", "cost_usd", "emissions_tco2"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
INTERCONNECT = "power.interconnect_limit_mw"
# Penalty weight per unit of normalised violation; constraint values are normalised by
# these scales so that 1 K over the GPU limit and 1 % over the ramp limit weigh alike.
PENALTY = 100.0


def _check_kpis(names: Sequence[str], field: str) -> None:
    for name in names:
        if name not in KPI_UNITS:
            raise ValueError(f"{field}: unknown KPI {name!r} (choose from {', '.join(KPI_UNITS)})")


@dataclass(frozen=True)
class Sensitivities:
    """KPIs and their gradients at the site's own parameter values.

    ``at``: parameter (``TUNABLE`` path) -> its value, site units; ``values``: KPI ->
    value; ``gradients``: KPI -> parameter -> d(KPI)/d(parameter), KPI units per site
    unit."""

    at: dict[str, float]
    values: dict[str, float]
    gradients: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "values": self.values, "gradients": self.gradients}


def sensitivities(
    site: Site,
    *,
    kpis: Sequence[str],
    wrt: Sequence[str],
    horizon_s: float,
    dt: float = 10.0,
    record_s: float | None = None,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    field: str = "wrt",
    drivers: DriverData | None = None,
) -> Sensitivities:
    """KPI values and d(KPI)/d(parameter) in site units, one reverse pass per KPI.
    ``field``: the name errors about ``wrt`` start with (a request's own field name)."""
    if not kpis:
        raise ValueError("kpis: give at least one KPI")
    if not wrt:
        raise ValueError(f"{field}: give at least one parameter (choose from {sorted(TUNABLE)})")
    _check_kpis(kpis, "kpis")
    model, x0 = kpi_model(
        site,
        wrt=wrt,
        horizon_s=horizon_s,
        dt=dt,
        record_s=record_s,
        granularity=granularity,
        dtype=dtype,
        field=field,
        drivers=drivers,
    )

    def selected(x):
        table = model(x)
        return {k: table[k] for k in kpis}

    values, jac = jax.jit(lambda x: (selected(x), jax.jacrev(selected)(x)))(x0)
    return Sensitivities(
        at={w: float(v) for w, v in x0.items()},
        values={k: float(v) for k, v in values.items()},
        gradients={k: {w: float(jac[k][w]) for w in wrt} for k in kpis},
    )


def _with_interconnect(site: Site, x: dict[str, float]) -> Site:
    """``site`` with the interconnect limit at ``x`` when the search varies it."""
    if INTERCONNECT not in x:
        return site
    power = site.power.model_copy(update={"interconnect_limit_mw": x[INTERCONNECT]})
    return site.model_copy(update={"power": power})


@dataclass(frozen=True)
class OptimizeStep:
    """One iterate: ``x`` (parameter -> value, site units), the ``objective`` there, and
    the constraint checks (``feasible``: all passed)."""

    x: dict[str, float]
    objective: float
    feasible: bool
    constraints: dict[str, ConstraintCheck]

    def to_dict(self, constraints: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"x": self.x, "objective": self.objective, "feasible": self.feasible}
        if constraints:
            out["constraints"] = checks_to_dict(self.constraints)
        return out


@dataclass(frozen=True)
class OptimizeResult:
    """What ``optimize`` found: ``best`` is the best feasible iterate (``start`` when
    none is feasible), ``iterations`` every iterate in order, the start first."""

    objective: Objective
    start: OptimizeStep
    best: OptimizeStep
    iterations: tuple[OptimizeStep, ...]

    @property
    def improvement(self) -> float:
        """How much lower the objective is at ``best`` than at ``start``."""
        return self.start.objective - self.best.objective

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "start": self.start.to_dict(),
            "best": self.best.to_dict(constraints=True),
            "improvement": self.improvement,
            "iterations": [s.to_dict() for s in self.iterations],
        }


def optimize(
    site: Site,
    objective: str,  # one of OBJECTIVES; a plain str so a wrong name gets the ValueError below
    *,
    bounds: dict[str, tuple[float, float]],
    horizon_s: float,
    constraints: Constraints | None = None,
    dt: float = 10.0,
    record_s: float | None = None,
    iterations: int = 40,
    learning_rate: float = 0.08,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    progress: Callable[[int, int], None] | None = None,
    field: str = "wrt",
    drivers: DriverData | None = None,
) -> OptimizeResult:
    """Setpoints within ``bounds`` (``TUNABLE`` path -> (lower, upper), site units)
    minimising ``objective`` under ``constraints`` (default: ``Constraints()``).

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
    constraints = constraints if constraints is not None else Constraints()
    model, x0 = kpi_model(
        site,
        wrt=list(bounds),
        horizon_s=horizon_s,
        dt=dt,
        record_s=record_s,
        granularity=granularity,
        dtype=dtype,
        field=field,
        drivers=drivers,
    )
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
        return limits[name].limit

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
    history: list[OptimizeStep] = []
    best: OptimizeStep | None = None
    for k in range(iterations):
        (_, table), g = grad_fn(jnp.asarray(z), reference)
        kpis = {key: float(val) for key, val in table.items()}
        here = {n: float(lo[i] + z[i] * span[i]) for i, n in enumerate(names)}
        checks = check_constraints(kpis, _with_interconnect(site, here), constraints)
        step = OptimizeStep(
            x=here,
            objective=kpis[objective],
            feasible=all(c.passed for c in checks.values()),
            constraints=checks,
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
    return OptimizeResult(
        objective=cast(Objective, objective),
        start=history[0],
        best=best or history[0],
        iterations=tuple(history),
    )
