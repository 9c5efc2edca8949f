"""Coolant density and specific heat, from CoolProp where a site names a CoolProp fluid.

Evaluated once per fluid and temperature while params are built; the jitted steps only
see the resulting heat capacities. CoolProp is imported on first use: it takes seconds.
"""

from __future__ import annotations

from functools import lru_cache

from twin_core.inputs import clip
from twin_core.site import Fluid, SiteError

# The loops run a little above atmospheric pressure; liquid properties barely depend on it
# (and CoolProp's incompressible fluids not at all).
PRESSURE_PA = 101325.0


def fluid_properties(fluid: Fluid, field: str, default_c: float) -> tuple[float, float]:
    """(density kg/m3, specific heat J/(kg K)) of ``fluid``: its fixed values, or CoolProp's
    at ``fluid.at_c`` (else ``default_c``). SiteError names ``field`` when CoolProp has no
    such fluid, or none at that temperature."""
    if fluid.coolprop is None:
        assert fluid.density_kg_per_m3 is not None and fluid.cp_j_per_kg_k is not None
        return fluid.density_kg_per_m3, fluid.cp_j_per_kg_k
    at_c = default_c if fluid.at_c is None else fluid.at_c
    return _coolprop(fluid.coolprop, float(at_c), field)


@lru_cache(maxsize=64)
def _coolprop(name: str, t_c: float, field: str) -> tuple[float, float]:
    from CoolProp.CoolProp import PropsSI

    try:
        rho = PropsSI("D", "T", t_c + 273.15, "P", PRESSURE_PA, name)
        cp = PropsSI("C", "T", t_c + 273.15, "P", PRESSURE_PA, name)
    except ValueError:
        raise SiteError(
            f"{field}.coolprop: CoolProp has no liquid {clip(name)!r} at {t_c:g} C"
        ) from None
    if not (200.0 < rho < 5000.0 and 500.0 < cp < 10000.0):  # steam, or a failed evaluation
        raise SiteError(f"{field}.coolprop: {clip(name)!r} is not a liquid at {t_c:g} C")
    return float(rho), float(cp)
