"""Open cooling towers on the water-cooled chillers' condenser loop: the water they
return to the condensers, their fans and the make-up water they need.

Approach. A counterflow tower exchanges heat between the falling water and the air
through the enthalpy of saturated air (Merkel); Braun, Klein & Mitchell (1989,
"Effectiveness models for cooling towers and cooling coils", ASHRAE Trans. 95(2)) turn
that into an exchanger whose air side has the effective specific heat
cpe = dh_sat/dT. Linearised about the design point at a fixed water flow, the approach
grows with the heat per unit of air flow and shrinks as cpe rises with the wet bulb:

    approach = design approach x (Q / Q_design) / speed x cpe(design wb) / cpe(wb)

The fans (variable speed) run at the speed that holds the design approach, between
their minimum and full speed: below the minimum the approach is smaller, beyond full
speed it grows. Fan power follows the affinity law, speed^3.

Water. All the heat the water gives up is taken as latent heat (the upper bound; the
industry rule of 1 % of the circulating flow evaporated per 10 F of range comes to the
same figure: 0.01 x 8.34 lb per 83.4 Btu = 1 lb per 1,000 Btu). Drift is a share of the
circulating flow. Blowdown holds the dissolved solids at the cycles of concentration C:
solids in with the make-up leave with drift and blowdown, so B = E / (C - 1) - D
(ASHRAE Handbook, HVAC Applications, water treatment chapter), never below zero.
"""

from __future__ import annotations

import numpy as np

from twin_core.constants import WATER_LATENT_J_PER_KG

ATMOSPHERE_PA = 101_325.0
WATER_KG_PER_M3 = 1000.0  # make-up water volume (the adiabatic pads count the same way)


def saturated_enthalpy(t_c, xp=np):
    """Enthalpy of saturated moist air at sea level, J per kg of dry air.

    Saturation pressure: Magnus form, Alduchov & Eskridge (1996), J. Appl. Meteor. 35,
    601-609. Humidity ratio and enthalpy: ASHRAE Handbook, Fundamentals (2017), ch. 1,
    W = 0.621945 p_ws / (p - p_ws), h = 1006 t + W (2 501 000 + 1860 t)."""
    p_ws = 610.94 * xp.exp(17.625 * t_c / (t_c + 243.04))
    w = 0.621945 * p_ws / (ATMOSPHERE_PA - p_ws)
    return 1006.0 * t_c + w * (2.501e6 + 1860.0 * t_c)


def enthalpy_slope(wet_bulb_c, approach_k, xp=np):
    """cpe: the mean slope of saturated-air enthalpy over the approach, J/(kg K)."""
    rise = saturated_enthalpy(wet_bulb_c + approach_k, xp) - saturated_enthalpy(wet_bulb_c, xp)
    return rise / approach_k


def tower(
    heat_w, wet_bulb_c, cells, design_heat_w, design_approach_k, design_wet_bulb_c,
    fan_w, min_speed, xp=np,
):  # fmt: skip
    """(approach K, fan speed 0..1, fan power W) of ``cells`` tower cells rejecting
    ``heat_w`` from the condenser water (fans off and no approach with no heat)."""
    slope_ratio = enthalpy_slope(design_wet_bulb_c, design_approach_k, xp) / enthalpy_slope(
        wet_bulb_c, design_approach_k, xp
    )
    # The air flow, as a share of full speed, that holds the design approach.
    air = heat_w / xp.maximum(cells * design_heat_w, 1.0) * slope_ratio
    on = heat_w > 0.0
    speed = xp.where(on, xp.clip(air, min_speed, 1.0), 0.0)
    approach = design_approach_k * air / xp.where(on, speed, 1.0)
    return approach, speed, cells * fan_w * speed**3


def make_up_water(heat_w, circulating_m3_per_s, drift_fraction, cycles, xp=np):
    """(make-up, evaporation, drift, blowdown) in m3/s for ``heat_w`` taken from the water."""
    evaporation = heat_w / WATER_LATENT_J_PER_KG / WATER_KG_PER_M3
    drift = drift_fraction * circulating_m3_per_s
    blowdown = xp.maximum(evaporation / (cycles - 1.0) - drift, 0.0)
    return evaporation + drift + blowdown, evaporation, drift, blowdown
