"""KPIs from recorded series (interval means and maxes) and the final state.

Energies are sums of interval means x interval length, so they are exact whatever the
recording interval; peaks come from the per-interval maxima.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from twin_core.closure import site_closure_j
from twin_core.coupling import TwinState
from twin_core.pytree import Array

KPI_UNITS: dict[str, str] = {
    "pue": "",
    "it_energy_mwh": "MWh",
    "facility_energy_mwh": "MWh",
    "cooling_energy_mwh": "MWh",
    "peak_facility_mw": "MW",
    "max_gpu_temp_c": "C",
    "max_supply_c": "C",
    "throttled_gpu_hours": "GPU h",
    "hours_above_throttle_start": "h",
    "chiller_hours": "unit h",
    "water_m3": "m3",
    "wue_l_per_kwh": "L/kWh",
    "cost_usd": "USD",
    "emissions_tco2": "t",
    "market_emissions_tco2": "t",
    "cfe_score": "",
    "max_ramp_mw_per_s": "MW/s",
    "max_grid_ramp_mw_per_s": "MW/s",
    "meter_band_rms_mw": "MW",
    "energy_balance_rel_error": "",
    "energy_balance_mwh": "MWh",
    "site_closure_mwh": "MWh",
    "site_closure_rel_error": "",
    "smoothing_unheld_fraction": "",
    "delivered_eflop": "EFLOP",
    "min_cap_fraction": "",
}


def kpi_table(
    means: Mapping[str, Array], maxes: Mapping[str, Array], final: TwinState, record_s: float
) -> dict[str, Array]:
    """Every KPI as a JAX scalar (differentiable where the physics is). The series are the
    contract's quantities, in SI units (W, per second)."""
    hours = record_s / 3600.0

    def integral(name):  # the time integral of a series (W -> J, per second -> total)
        return jnp.sum(means[name]) * record_s

    def mwh(name):  # MWh from a series in W
        return jnp.sum(means[name]) * hours * 1e-6

    it = mwh("it_w")
    facility = mwh("facility_w")
    demand_j = integral("grid_w") + integral("battery_w") + integral("generation_w")
    e = final.energy
    partial_hour = jnp.minimum(e.hour_demand_j, e.hour_clean_j)
    cfe = (e.cfe_j + partial_hour) / jnp.maximum(demand_j, 1.0)
    residual = sum(
        jnp.sum(jnp.abs(means[f"residual_{k}_w"]))
        for k in ("compute", "cooling", "power", "energy")
    )
    closure = site_closure_j(means, record_s)
    return {
        "pue": facility / jnp.maximum(it, 1e-12),
        "it_energy_mwh": it,
        "facility_energy_mwh": facility,
        "cooling_energy_mwh": mwh("cooling_w"),
        "peak_facility_mw": jnp.max(maxes["facility_w"]) * 1e-6,
        "max_gpu_temp_c": jnp.max(maxes["gpu_temp_max_c"]),
        "max_supply_c": jnp.max(maxes["tcs_supply_max_c"]),
        "throttled_gpu_hours": jnp.sum(means["throttled_gpus"]) * hours,
        # time in which any GPU die was above its throttle start
        "hours_above_throttle_start": jnp.sum(means["above_throttle_start"]) * hours,
        "chiller_hours": jnp.sum(means["chillers_running"]) * hours,
        "water_m3": integral("water_m3_per_s"),
        # Water usage effectiveness (The Green Grid): site water per IT energy, L/kWh.
        "wue_l_per_kwh": integral("water_m3_per_s") / jnp.maximum(it, 1e-12),
        "cost_usd": integral("cost_usd_per_s"),
        "emissions_tco2": integral("emissions_t_per_s"),
        "market_emissions_tco2": integral("market_emissions_t_per_s"),
        "cfe_score": cfe,
        "max_ramp_mw_per_s": jnp.max(maxes["ramp_w_per_s"]) * 1e-6,
        "max_grid_ramp_mw_per_s": jnp.max(maxes["grid_ramp_w_per_s"]) * 1e-6,
        "meter_band_rms_mw": jnp.sqrt(jnp.mean((means["meter_band_w"] * 1e-6) ** 2)),
        # Residual energy (W x s summed over records) relative to the facility energy.
        "energy_balance_rel_error": residual * record_s / jnp.maximum(facility * 3.6e9, 1.0),
        "energy_balance_mwh": jnp.asarray(residual * record_s / 3.6e9),
        # Meter in = heat out + stored over the run (closure.py): sees lags between domains.
        "site_closure_mwh": jnp.asarray(closure / 3.6e9),
        "site_closure_rel_error": jnp.abs(closure) / jnp.maximum(facility * 3.6e9, 1.0),
        # rack-time share in which a rack's smoothing could not hold its ramp limit
        "smoothing_unheld_fraction": jnp.mean(means["smoothing_unheld"]),
        "delivered_eflop": jnp.sum(means["delivered_pflops"]) * record_s / 1000.0,
        "min_cap_fraction": jnp.min(means["cap_fraction"]),
    }


# One compiled program rather than a few dozen small ones dispatched op by op.
_kpi_table_jit = jax.jit(kpi_table, static_argnames="record_s")


def summarize(
    means: Mapping[str, Array], maxes: Mapping[str, Array], final: TwinState, record_s: float
) -> dict[str, float]:
    table = _kpi_table_jit(dict(means), dict(maxes), final, record_s=record_s)
    return {k: float(np.asarray(v)) for k, v in table.items()}
