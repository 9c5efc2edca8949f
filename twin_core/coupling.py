"""The coupled (Jacobi) step: every subsystem advances one coupling interval using the
boundary values the others published at the end of the previous interval.

The distributed services run exactly this scheme, one subsystem per process, so a
monolithic rollout and a distributed run agree to floating-point reproducibility.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Float, Int

from twin_core import compute, contract, cooling, drivers, energy, power
from twin_core.contract import Equipment
from twin_core.long_step import is_long
from twin_core.params import Failures, Params
from twin_core.pytree import Array, pytree, replace


@pytree
class Boundary:
    """Values published at the end of an interval, read by the others in the next."""

    tcs_supply_c: Float[Array, " C"]  # cooling -> compute
    rack_cap_w: Float[Array, "R C"]  # power -> compute
    rack_ac_w: Float[Array, "R C"]  # compute -> power
    heat_liquid_w: Float[Array, " C"]  # compute -> cooling
    heat_air_w: Float[Array, ""]  # compute -> cooling
    cooling_w: Float[Array, ""]  # cooling -> power
    supply_limit_w: Float[Array, ""]  # energy -> power
    meter_w: Float[Array, ""]  # power -> energy


@pytree
class TwinState:
    step: Int[Array, ""]  # coupling intervals since the start
    compute: compute.ComputeState
    cooling: cooling.CoolingState
    power: power.PowerState
    energy: energy.EnergyState
    boundary: Boundary


@pytree
class Drivers:
    ambient_c: Float[Array, ""]
    rh: Float[Array, ""]
    price: Float[Array, ""]
    carbon: Float[Array, ""]
    grid_cfe: Float[Array, ""]
    ppa_w: Float[Array, ""]
    it_scale: Float[Array, ""]
    inference_util: Float[Array, " P"]


@pytree
class StepOutputs:
    compute: compute.ComputeOutputs
    cooling: cooling.CoolingOutputs
    power: power.PowerOutputs
    energy: energy.EnergyOutputs
    drivers: Drivers
    time_s: Float[Array, ""]


def drivers_at(p: Params, k) -> Drivers:
    hour = k // p.steps_per_hour
    frac = (k % p.steps_per_hour).astype(p.hourly.dtype) / p.steps_per_hour
    v = drivers.interpolate(p.hourly, hour, frac)
    n = len(drivers.COLUMNS)
    return Drivers(*(v[i] for i in range(n)), inference_util=v[n:])


def active_failures(f: Failures, t):
    """Mask of the failure slots in force at time ``t`` (padding slots never are); JAX or
    NumPy arrays alike."""
    return (f.start_s <= t) & (t < f.end_s) & (f.kind >= 0)


def availability(p: Params, t):
    """Units up per equipment kind (indexed by ``Equipment``) at time ``t``, and a
    per-CDU up mask."""
    f = p.failures
    active = active_failures(f, t)
    kinds = jnp.arange(len(Equipment))
    down = jnp.sum((f.kind[None, :] == kinds[:, None]) & active[None, :], axis=1)
    up = jnp.maximum(p.installed - down, 0.0)
    n_cdu = p.cooling.cdu_mask.shape[0]
    cdu_kind = (f.kind == Equipment.CDU) & active
    cdu_down = jnp.sum(cdu_kind[:, None] & (f.index[:, None] == jnp.arange(n_cdu)[None, :]), axis=0)
    return up, jnp.where(cdu_down > 0, 0.0, 1.0).astype(p.hourly.dtype)


def time_of(p: Params, k):
    return k.astype(p.hourly.dtype) * p.dt


# One function per domain: what a domain service runs for coupling interval ``k`` from
# the boundary values published at the end of interval ``k - 1``. The monolithic step
# below calls the same four, so the distributed and monolithic runs agree.


def compute_node(p: Params, s: compute.ComputeState, b: Boundary, k):
    d = drivers_at(p, k)
    inputs = compute.ComputeInputs(b.tcs_supply_c, b.rack_cap_w, d.inference_util, d.it_scale)
    return compute.step(p.compute, s, inputs, p.dt)


def cooling_node(p: Params, s: cooling.CoolingState, b: Boundary, k):
    d = drivers_at(p, k)
    t = time_of(p, k)
    up, cdu_up = availability(p, t)
    swing = compute.heat_swing(p.compute, t, d.it_scale) if is_long(p.dt) else None
    zero = jnp.zeros_like(b.heat_air_w)
    inputs = cooling.CoolingInputs(
        heat_liquid_w=b.heat_liquid_w,
        heat_air_w=b.heat_air_w,
        ambient_c=d.ambient_c,
        rh=d.rh,
        chillers_up=up[Equipment.CHILLER],
        pumps_up=up[Equipment.PUMP],
        dry_coolers_up=up[Equipment.DRY_COOLER],
        cdu_up=cdu_up,
        swing_liquid_w=swing.liquid_w if swing is not None else jnp.zeros_like(b.heat_liquid_w),
        swing_air_w=swing.air_w if swing is not None else zero,
        swing_share=swing.share if swing is not None else zero,
    )
    return cooling.step(p.cooling, s, inputs, p.dt)


def power_node(p: Params, s: power.PowerState, b: Boundary, k):
    t = time_of(p, k)
    up, _ = availability(p, t)
    zero = jnp.zeros_like(b.cooling_w)
    swing = compute.heat_swing(p.compute, t, drivers_at(p, k).it_scale) if is_long(p.dt) else None
    inputs = power.PowerInputs(
        b.rack_ac_w,
        b.cooling_w,
        b.supply_limit_w,
        up[Equipment.FEEDER],
        it_swing_w=swing.ac_w if swing is not None else zero,
        swing_share=swing.share if swing is not None else zero,
    )
    return power.step(p.power, s, inputs, p.dt)


def energy_node(p: Params, s: energy.EnergyState, b: Boundary, k):
    d = drivers_at(p, k)
    inputs = energy.EnergyInputs(b.meter_w, d.price, d.carbon, d.grid_cfe, d.ppa_w)
    return energy.step(p.energy, s, inputs, p.dt, p.steps_per_hour)


def publish(states: dict[str, Any], outputs: dict[str, Any]) -> Boundary:
    """The boundary values the four domains publish at the end of an interval (domain ->
    its new state and its outputs), as the contract's ``BOUNDARY`` table says."""
    return Boundary(
        **{f.name: f.read(states[f.owner], outputs[f.owner]) for f in contract.BOUNDARY}
    )


def coupled_step(p: Params, s: TwinState) -> tuple[TwinState, StepOutputs]:
    b, k = s.boundary, s.step
    cs, co = compute_node(p, s.compute, b, k)
    ks, ko = cooling_node(p, s.cooling, b, k)
    ps, po = power_node(p, s.power, b, k)
    es, eo = energy_node(p, s.energy, b, k)
    states = {"compute": cs, "cooling": ks, "power": ps, "energy": es}
    outputs = {"compute": co, "cooling": ko, "power": po, "energy": eo}
    state = TwinState(k + 1, cs, ks, ps, es, publish(states, outputs))
    return state, StepOutputs(co, ko, po, eo, drivers_at(p, k), time_of(p, k))


# Passes of the coupled step that prime the boundary and the cap loop (integral, gain
# ~0.5 of the error per pass at full load: 24 passes leave ~6e-8 of it).
PRIMING_PASSES = 24


@jax.jit
def init_state(p: Params) -> TwinState:
    """Initial state, with the boundary primed by passes of the step from a first guess so
    that the first interval sees self-consistent neighbours (no start-up ramp at the
    meter) and the power-cap loop settled.

    Compiled as one program, the priming passes a loop over one coupled step: stepped op
    by op they took seconds of dispatch on a large site, unrolled they multiply its
    compile."""
    dtype = p.hourly.dtype
    ks = cooling.init(p.cooling, dtype)
    cs = compute.init(p.compute, ks.tcs_supply_c, dtype)
    zero = jnp.asarray(0.0, dtype)
    racks, c = p.compute.mask.shape
    guess = Boundary(
        tcs_supply_c=ks.tcs_supply_c,
        rack_cap_w=p.power.rack_max_ac_w,
        rack_ac_w=jnp.zeros((racks, c), dtype),
        heat_liquid_w=jnp.zeros((c,), dtype),
        heat_air_w=zero,
        cooling_w=zero,
        supply_limit_w=jnp.asarray(1e30, dtype),
        meter_w=zero,
    )
    ps = power.init(p.power, zero, dtype)
    es = energy.init(p.energy, p.battery_soc0, zero, dtype)
    first = TwinState(jnp.asarray(0, jnp.int32), cs, ks, ps, es, guess)

    def prime(_, s: TwinState) -> TwinState:
        primed, _ = coupled_step(p, s)
        cap = replace(s.power, cap_fraction=primed.power.cap_fraction)
        return replace(s, boundary=primed.boundary, power=cap)

    # compute -> cooling/power -> energy settle in two passes; the site power-cap loop
    # then gets the rest to settle too: a site that runs at its limit has its caps in
    # place already, where starting uncapped would show a start-up overshoot at the
    # meter that no real site sees. Under the limit the cap stays at 1 (clipped).
    first = jax.lax.fori_loop(0, PRIMING_PASSES, prime, first)
    meter = first.boundary.meter_w
    return replace(
        first,
        power=replace(power.init(p.power, meter, dtype), cap_fraction=first.power.cap_fraction),
        energy=energy.init(p.energy, p.battery_soc0, meter, dtype),
    )


jit_init_state = init_state  # the name the domain services know it by
