"""KPIs from recorded series (interval means and maxes) and the final state.

Energies are sums of interval means x interval length, so they are exact whatever the
recording interval; peaks come from the per-interval maxima.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

KPI_UNITS: dict[str, str] = {
    "pue": "",
    "it_energy_mwh": "MWh",
    "facility_energy_mwh": "MWh",
    "cooling_energy_mwh": "MWh",
    "peak_facility_mw": "MW",
    "max_gpu_temp_c": "C",
    "max_supply_c": "C",
    "throttled_gpu_hours": "GPU h",
    "chiller_hours": "unit h",
    "water_m3": "m3",
    "cost_usd": "USD",
    "emissions_tco2": "t",
    "market_emissions_tco2": "t",
    "cfe_score": "",
    "max_ramp_mw_per_s": "MW/s",
    "max_grid_ramp_mw_per_s": "MW/s",
    "meter_band_rms_mw": "MW",
    "energy_balance_rel_error": "",
    "delivered_eflop": "EFLOP",
    "min_cap_fraction": "",
}


def kpi_table(means, maxes, final, record_s: float) -> dict:
    """Every KPI as a JAX scalar (differentiable where the physics is)."""
    hours = record_s / 3600.0

    def energy(name):  # MWh from a series in MW (or per-hour rates)
        return jnp.sum(means[name]) * hours

    it = energy("it_power_mw")
    facility = energy("facility_power_mw")
    demand_j = (energy("grid_mw") + energy("battery_mw") + energy("generation_mw")) * 3.6e9
    e = final.energy
    partial_hour = jnp.minimum(e.hour_demand_j, e.hour_clean_j)
    cfe = (e.cfe_j + partial_hour) / jnp.maximum(demand_j, 1.0)
    residual = sum(
        jnp.sum(jnp.abs(means[f"residual_{k}_w"]))
        for k in ("compute", "cooling", "power", "energy")
    )
    return {
        "pue": facility / jnp.maximum(it, 1e-12),
        "it_energy_mwh": it,
        "facility_energy_mwh": facility,
        "cooling_energy_mwh": energy("cooling_power_mw"),
        "peak_facility_mw": jnp.max(maxes["facility_power_mw"]),
        "max_gpu_temp_c": jnp.max(maxes["gpu_temp_max_c"]),
        "max_supply_c": jnp.max(maxes["tcs_supply_max_c"]),
        "throttled_gpu_hours": jnp.sum(means["throttled_gpus"]) * hours,
        "chiller_hours": jnp.sum(means["chillers_running"]) * hours,
        "water_m3": energy("water_m3_per_h"),
        "cost_usd": energy("cost_usd_per_h"),
        "emissions_tco2": energy("emissions_t_per_h"),
        "market_emissions_tco2": energy("market_emissions_t_per_h"),
        "cfe_score": cfe,
        "max_ramp_mw_per_s": jnp.max(maxes["ramp_mw_per_s"]),
        "max_grid_ramp_mw_per_s": jnp.max(maxes["grid_ramp_mw_per_s"]),
        "meter_band_rms_mw": jnp.sqrt(jnp.mean(means["meter_band_mw"] ** 2)),
        # Residual energy (W x s summed over records) relative to the facility energy.
        "energy_balance_rel_error": residual * record_s / jnp.maximum(facility * 3.6e9, 1.0),
        "delivered_eflop": jnp.sum(means["delivered_pflops"]) * record_s / 1000.0,
        "min_cap_fraction": jnp.min(means["cap_fraction"]),
    }


def summarize(means, maxes, final, record_s: float) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in kpi_table(means, maxes, final, record_s).items()}
