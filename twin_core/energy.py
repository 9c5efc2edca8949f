"""Energy: grid, PPAs, battery and on-site generation behind the meter.

Battery power is positive when discharging. Emissions are location-based (grid import x
grid intensity + generation) and market-based (import net of PPA energy). The hourly
24/7 carbon-free-energy score follows the Google/UN 24/7 CFE method: for each hour,
CFE = min(consumption, PPA + carbon-free share of grid import); score = sum CFE / sum
consumption.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Float, Int

from twin_core.pytree import Array, pytree

OFF, PEAK_SHAVE, SWING_FIRMING, ARBITRAGE = 0, 1, 2, 3


@pytree
class EnergyParams:
    battery_capacity_mwh: Float[Array, ""]
    battery_power_mw: Float[Array, ""]
    battery_efficiency: Float[Array, ""]  # one-way, sqrt(round trip)
    battery_mode: Int[Array, ""]  # OFF, PEAK_SHAVE, SWING_FIRMING or ARBITRAGE
    peak_threshold_w: Float[Array, ""]
    grid_ramp_w_per_s: Float[Array, ""]  # swing firming: grid import ramp limit
    charge_below: Float[Array, ""]  # $/MWh
    discharge_above: Float[Array, ""]
    import_limit_w: Float[Array, ""]  # huge when none
    gen_capacity_w: Float[Array, ""]
    gen_dispatchable: Float[Array, ""]  # 1 when it runs to cover a shortfall
    gen_t_per_mwh: Float[Array, ""]
    gen_usd_per_mwh: Float[Array, ""]


@pytree
class EnergyState:
    battery_j: Float[Array, ""]
    grid_w: Float[Array, ""]  # last grid import (swing-firming ramp reference)
    hour_demand_j: Float[Array, ""]  # this hour's accumulators for the CFE score
    hour_clean_j: Float[Array, ""]
    cfe_j: Float[Array, ""]  # closed hours: sum of min(demand, clean)
    steps_in_hour: Int[Array, ""]


@pytree
class EnergyInputs:
    demand_w: Float[Array, ""]  # meter, from power
    price: Float[Array, ""]  # $/MWh
    carbon: Float[Array, ""]  # g/kWh
    grid_cfe: Float[Array, ""]  # 0..1
    ppa_w: Float[Array, ""]


@pytree
class EnergyOutputs:
    grid_w: Float[Array, ""]
    battery_w: Float[Array, ""]
    generation_w: Float[Array, ""]
    soc: Float[Array, ""]
    supply_limit_w: Float[Array, ""]
    grid_ramp_w_per_s: Float[Array, ""]  # what the utility sees, after the battery
    cost_usd_per_s: Float[Array, ""]
    emissions_t_per_s: Float[Array, ""]
    market_emissions_t_per_s: Float[Array, ""]
    residual_w: Float[Array, ""]


def capacity_j(p: EnergyParams):
    return p.battery_capacity_mwh * 3.6e9


def init(p: EnergyParams, soc0, meter_w, dtype) -> EnergyState:
    zero = jnp.asarray(0.0, dtype)
    return EnergyState(
        battery_j=jnp.asarray(soc0 * capacity_j(p), dtype),
        grid_w=jnp.asarray(meter_w, dtype),
        hour_demand_j=zero,
        hour_clean_j=zero,
        cfe_j=zero,
        steps_in_hour=jnp.asarray(0, jnp.int32),
    )


def _battery_request(p: EnergyParams, s: EnergyState, x: EnergyInputs, dt: float):
    """Requested battery power (+ discharge) by dispatch mode, before limits."""
    max_w = p.battery_power_mw * 1e6
    peak = x.demand_w - p.peak_threshold_w
    soc = s.battery_j / jnp.maximum(capacity_j(p), 1.0)
    # Swing firming recentres the state of charge slowly so it can absorb either direction,
    # only as far as the ramp limit allows: the limit is what the utility holds it to.
    recentred = x.demand_w - 0.01 * max_w * (soc - 0.5)
    target_grid = jnp.clip(
        recentred, s.grid_w - p.grid_ramp_w_per_s * dt, s.grid_w + p.grid_ramp_w_per_s * dt
    )
    firming = x.demand_w - target_grid
    arbitrage = jnp.where(
        x.price >= p.discharge_above, max_w, jnp.where(x.price <= p.charge_below, -max_w, 0.0)
    )
    mode = p.battery_mode  # selects, not an index: cheaper batched
    return jnp.where(
        mode == PEAK_SHAVE,
        peak,
        jnp.where(mode == SWING_FIRMING, firming, jnp.where(mode == ARBITRAGE, arbitrage, 0.0)),
    )


def step(
    p: EnergyParams, s: EnergyState, x: EnergyInputs, dt: float, steps_per_hour: int
) -> tuple[EnergyState, EnergyOutputs]:
    eff = p.battery_efficiency
    max_w = p.battery_power_mw * 1e6
    cap_j = capacity_j(p)
    request = jnp.clip(_battery_request(p, s, x, dt), -max_w, max_w)
    can_discharge = s.battery_j * eff / dt
    can_charge = (cap_j - s.battery_j) / (eff * dt)
    battery = jnp.clip(request, -can_charge, can_discharge)
    battery = jnp.minimum(battery, x.demand_w)  # never export
    shortfall = x.demand_w - battery - p.import_limit_w
    gen = jnp.clip(shortfall, 0.0, p.gen_capacity_w) * p.gen_dispatchable
    grid = x.demand_w - battery - gen
    drawn = jnp.where(battery > 0, battery / eff, battery * eff)  # energy leaving the cells
    battery_j = s.battery_j - drawn * dt

    headroom = jnp.minimum(can_discharge, max_w)
    supply_limit = p.import_limit_w + headroom + p.gen_capacity_w * p.gen_dispatchable

    # Hourly CFE matching: close the hour after its last step.
    clean = x.ppa_w + x.grid_cfe * grid
    hour_demand = s.hour_demand_j + x.demand_w * dt
    hour_clean = s.hour_clean_j + clean * dt
    steps = s.steps_in_hour + 1
    closing = steps >= steps_per_hour
    cfe = s.cfe_j + jnp.where(closing, jnp.minimum(hour_demand, hour_clean), 0.0)

    price_per_j = x.price / 3.6e9
    tonnes_per_j = x.carbon / 3.6e12  # g/kWh -> t/J
    state = EnergyState(
        battery_j=battery_j,
        grid_w=grid,
        hour_demand_j=jnp.where(closing, 0.0, hour_demand),
        hour_clean_j=jnp.where(closing, 0.0, hour_clean),
        cfe_j=cfe,
        steps_in_hour=jnp.where(closing, 0, steps),
    )
    out = EnergyOutputs(
        grid_w=grid,
        battery_w=battery,
        generation_w=gen,
        soc=battery_j / jnp.maximum(cap_j, 1.0),
        supply_limit_w=supply_limit,
        grid_ramp_w_per_s=jnp.abs(grid - s.grid_w) / dt,
        cost_usd_per_s=grid * price_per_j + gen * p.gen_usd_per_mwh / 3.6e9,
        emissions_t_per_s=grid * tonnes_per_j + gen * p.gen_t_per_mwh / 3.6e9,
        market_emissions_t_per_s=jnp.maximum(grid - x.ppa_w, 0.0) * tonnes_per_j
        + gen * p.gen_t_per_mwh / 3.6e9,
        # supply + energy released by the cells = demand + conversion loss
        residual_w=grid
        + gen
        - (battery_j - s.battery_j) / dt
        - x.demand_w
        - jnp.abs(battery - drawn),
    )
    return state, out
