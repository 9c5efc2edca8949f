"""The model's state at a coupling interval into the site's time: where a window of
measured history starts (a backtest, a calibration of a window mid-run)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from twin_core import compute, energy, power
from twin_core.coupling import TwinState, coupled_step, init_state
from twin_core.params import Params
from twin_core.pytree import replace

# What a measured quantity sets in the state at the window's start (its first interval's
# mean). Everything else starts from the model's guess (backtest.NOT_INITIALISED).
INITIALISES: dict[str, str] = {
    "tcs_supply_mean_c": "cooling.tcs_supply_c (every CDU at the measured mean)",
    "facility_supply_c": "cooling.fws_supply_c and cooling.dc_leaving_c",
    "gpu_temp_mean_c": "compute.die_c (every GPU at the measured mean)",
    "soc": "energy.battery_j (the measured state of charge)",
}


def first_values(series: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each ``INITIALISES`` quantity's first measured value (NaN: not measured there)."""
    return {q: float(series[q][0]) if q in series else math.nan for q in INITIALISES}


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
    cs = replace(cs, die_c=jnp.where(jnp.isnan(die_c), cs.die_c, jnp.full_like(cs.die_c, die_c)))

    def clocks_at(c: compute.ComputeState, time) -> compute.ComputeState:
        return replace(
            c,
            job_clock_s=_elapsed(-p.compute.job_start_s, p.compute.job_period_s, time),
            ckpt_clock_s=_elapsed(-p.compute.job_start_s, p.compute.job_ckpt_every_s, time),
        )

    soc0 = jnp.where(jnp.isnan(soc), p.battery_soc0, soc)
    s = replace(s, cooling=ks, energy=energy.init(p.energy, soc0, 0.0, dtype))
    s = replace(s, boundary=replace(s.boundary, tcs_supply_c=tcs))
    # The boundary interval k0 reads is what interval k0 - 1 published: primed from the
    # workload one interval back (its phase and hour), so a load that swings from step to
    # step meets the meter's one-interval lag as the run met it. At the site's start there
    # is no interval before: primed from the first, as init_state primes it.
    back = jnp.where(k0 > 0, 1, 0)
    prior = replace(s, step=k0 - back, compute=clocks_at(cs, t - back.astype(dtype) * p.dt))

    def prime(_, s: TwinState) -> TwinState:
        primed, _ = coupled_step(p, s)
        return replace(s, boundary=primed.boundary)

    primed = jax.lax.fori_loop(0, 2, prime, prior)
    s = replace(s, step=k0, compute=clocks_at(cs, t), boundary=primed.boundary)
    meter = s.boundary.meter_w
    return replace(
        s, power=power.init(p.power, meter, dtype), energy=energy.init(p.energy, soc0, meter, dtype)
    )
