"""Backtests: the (calibrated) twin run over a measured window it was not fitted on,
compared with the measurements by the Guideline 14 statistics ``calibrate`` reports.

The window starts ``offset_s`` seconds after the site's start (its workload schedule
and failures are read at those times) and the rollout starts there from the measured
state (``start_state``): what was measured at the window's first interval is set, the
rest is the model's own initial guess. Measured weather drives the rollout as in
calibration; IT load follows the site's workload. Nothing was fitted on the window, so
the statistics use its n points (p = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twin_core import compute, energy, power
from twin_core.calibrate import DRIVEN, Measured, hourly_from_means
from twin_core.compress import compress
from twin_core.contract import SERIES
from twin_core.coupling import TwinState, coupled_step, init_state
from twin_core.drivers import DriverData, load_drivers
from twin_core.fit_stats import FitStats, block_means, fit_stats
from twin_core.params import Granularity, Params, build_params
from twin_core.pytree import replace
from twin_core.rollout import plan, run_jit
from twin_core.site import Site

# What a measured quantity sets in the state at the window's start (its first interval's
# mean). Everything else starts from the model's guess, listed in NOT_INITIALISED.
INITIALISES: dict[str, str] = {
    "tcs_supply_mean_c": "cooling.tcs_supply_c (every CDU at the measured mean)",
    "facility_supply_c": "cooling.fws_supply_c and cooling.dc_leaving_c",
    "gpu_temp_mean_c": "compute.die_c (every GPU at the measured mean)",
    "soc": "energy.battery_j (the measured state of charge)",
}
NOT_INITIALISED: tuple[str, ...] = (
    "compute.storage_j (power-smoothing storage: half full)",
    "compute.dc_out_w (rack DC power: idle, settles in the first step)",
    "cooling.fan_integral (dry-cooler fan PI integrator: 0.5)",
    "power.* (UPS, filters: settled to the first step's meter power)",
)


@dataclass(frozen=True)
class Backtest:
    """A backtest: ``stats`` per measured (non-driver) quantity at ``stats_s``;
    ``modelled`` the model's series on the measured axis; ``initialised``: state set from
    measurements (state -> value), and ``not_initialised`` the rest."""

    stats: dict[str, FitStats]
    modelled: dict[str, np.ndarray] = field(repr=False)
    measured: Measured = field(repr=False)
    offset_s: float
    stats_s: float
    initialised: dict[str, float]
    not_initialised: tuple[str, ...] = NOT_INITIALISED

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {
                "start_s": self.measured.start_s,
                "offset_s": self.offset_s,
                "step_s": self.measured.step_s,
                "duration_s": self.measured.duration_s,
            },
            "stats_s": self.stats_s,
            "stats": {q: s.to_dict() for q, s in self.stats.items()},
            "initialised": self.initialised,
            "not_initialised": list(self.not_initialised),
        }


def weather_from(p: Params, measured: Measured, offset_s: float) -> Params:
    """``p`` with its hourly weather from the hour mark at or before ``offset_s`` on
    replaced by values whose interpolation gives the measured interval means (the
    window's own hours only; earlier hours are the site's)."""
    hourly = np.array(p.hourly)
    h0 = math.floor(offset_s / 3600.0)
    lead = round((offset_s - h0 * 3600.0) / measured.step_s)  # intervals before the window
    hours = hourly.shape[0] - h0
    for name, column in DRIVEN.items():
        if name in measured.series:
            v = np.concatenate([np.full(lead, np.nan), measured.series[name]])
            hourly[h0:, column] = hourly_from_means(v, measured.step_s, hours)
    return replace(p, hourly=np.asarray(hourly, hourly.dtype))


def _elapsed(clock0, period, t):
    """A clock that starts at ``clock0`` (negative: not started) and wraps at
    ``period``, ``t`` seconds later (what ``compute.step`` reaches step by step)."""
    c = clock0 + t
    return jnp.where(c >= 0.0, jnp.mod(c, period), c)


@jax.jit
def start_state(p: Params, k0, tcs_c, fws_c, die_c, soc) -> TwinState:
    """The state at coupling interval ``k0``: the job clocks where the schedule has them,
    and the given temperatures and state of charge (NaN: the model's guess), with the
    boundary primed as ``init_state`` primes it."""
    s = init_state(p)
    dtype = p.hourly.dtype
    t = k0.astype(dtype) * p.dt
    ks = s.cooling
    tcs = jnp.where(jnp.isnan(tcs_c), ks.tcs_supply_c, tcs_c)
    fws = jnp.where(jnp.isnan(fws_c), ks.fws_supply_c, fws_c)
    dc_leaving = jnp.where(jnp.isnan(fws_c), ks.dc_leaving_c, fws_c)
    ks = replace(ks, tcs_supply_c=tcs, fws_supply_c=fws, dc_leaving_c=dc_leaving)
    cs = compute.init(p.compute, tcs, dtype)
    cs = replace(
        cs,
        die_c=jnp.where(jnp.isnan(die_c), cs.die_c, jnp.full_like(cs.die_c, die_c)),
        job_clock_s=_elapsed(-p.compute.job_start_s, p.compute.job_period_s, t),
        ckpt_clock_s=_elapsed(-p.compute.job_start_s, p.compute.job_ckpt_every_s, t),
    )
    soc0 = jnp.where(jnp.isnan(soc), p.battery_soc0, soc)
    s = replace(s, step=k0, compute=cs, cooling=ks, energy=energy.init(p.energy, soc0, 0.0, dtype))
    s = replace(s, boundary=replace(s.boundary, tcs_supply_c=tcs))

    def prime(_, s: TwinState) -> TwinState:
        primed, _ = coupled_step(p, s)
        return replace(s, boundary=primed.boundary)

    s = jax.lax.fori_loop(0, 2, prime, s)
    meter = s.boundary.meter_w
    return replace(
        s, power=power.init(p.power, meter, dtype), energy=energy.init(p.energy, soc0, meter, dtype)
    )


def _first(measured: Measured, name: str) -> float:
    """The quantity's first measured value (NaN when not measured or missing there)."""
    v = measured.series.get(name)
    return float(v[0]) if v is not None else math.nan


def backtest(
    site: Site,
    measured: Measured,
    *,
    dt: float,
    offset_s: float = 0.0,
    stats_s: float = 3600.0,
    granularity: Granularity = "rack",
    dtype=jnp.float64,
    drivers: DriverData | None = None,
) -> Backtest:
    """Run ``site`` over the window of ``measured`` (starting ``offset_s`` after the
    site's start) from the measured state, and compare."""
    fitted = [q for q in measured.series if q not in DRIVEN and q in SERIES]
    if not fitted:
        raise ValueError(
            f"measured: nothing to compare with (only drivers: {', '.join(measured.series)})"
        )
    if not (math.isfinite(offset_s) and offset_s >= 0):
        raise ValueError(f"offset_s: {offset_s:g} s must be 0 or more")
    k0 = offset_s / dt
    if abs(k0 - round(k0)) > 1e-6:
        raise ValueError(f"offset_s: {offset_s:g} s is not a whole number of dt = {dt:g} s")
    if not (math.isfinite(stats_s) and stats_s > 0):
        raise ValueError(f"stats_s: {stats_s:g} s must be positive")
    n_records, every = plan(measured.duration_s, dt, measured.step_s)
    drivers = drivers if drivers is not None else load_drivers(site)
    p = build_params(
        site,
        drivers,
        horizon_s=offset_s + measured.duration_s,
        dt=dt,
        granularity=granularity,
        dtype=dtype,
        host=True,
    )
    p = jax.device_put(compress(weather_from(p, measured, offset_s)))
    values = {q: _first(measured, q) for q in INITIALISES}
    s0 = start_state(
        p,
        jnp.asarray(round(k0), jnp.int32),
        *(jnp.asarray(values[q], dtype) for q in INITIALISES),
    )
    _, (means, _) = run_jit(p, s0, n_records, every)
    means = np.asarray(means, np.float64)
    modelled = {q: means[:, SERIES.index(q)] for q in fitted}

    def stats(q: str) -> FitStats:
        y = np.asarray(measured.series[q], np.float64)
        return fit_stats(
            block_means(y, measured.step_s, stats_s),
            block_means(np.where(np.isfinite(y), modelled[q], np.nan), measured.step_s, stats_s),
            0,
        )

    return Backtest(
        stats={q: stats(q) for q in fitted},
        modelled=modelled,
        measured=measured,
        offset_s=offset_s,
        stats_s=stats_s,
        initialised={INITIALISES[q]: v for q, v in values.items() if math.isfinite(v)},
    )
