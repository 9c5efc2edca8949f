"""The physical parameters calibration can fit, and how each one reaches the params.

Each entry maps a site field (its dotted path; ``<T>`` is the site's one rack type in
use) to the params leaves it sets. Where ``build_params`` turns the field into an array
or a product of several fields, the entry scales those leaves by x / x0 (x0: the site's
own value), which reproduces ``build_params`` of the changed site exactly; the table's
test checks every entry that way. A curve given by three efficiency points is fitted as
one ``loss_scale`` on its loss model (the three-point fit is linear in the losses) and
written back as the three efficiencies.

Sensor biases (``bias.<quantity>``) are not here: they act on the modelled series, not
on the params (``calibrate.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from twin_core.curves import output_for_input
from twin_core.params import Params
from twin_core.rollout import get_param, set_param
from twin_core.site import Site

# (params, x, x0) -> params with the parameter at x (the site's own value x0)
Apply = Callable[[Params, Any, float], Params]


@dataclass(frozen=True)
class Calibratable:
    doc: str
    apply: Apply
    # The site's value (x0) and the site overrides that put value x into a site file,
    # from the fit path as given (a rack type named in it).
    start: Callable[[Site, str], float]
    to_site: Callable[[Site, str, float], dict[str, float]]
    from_zero: bool = False  # True: set from the value itself, so a site value of 0 is fine


def _site_value(site: Site, path: str) -> float:
    node: Any = site
    for key in path.split("."):
        node = node[key] if isinstance(node, dict) else getattr(node, key)
    return float(node)


def _set_value(site: Site, path: str, x: float) -> dict[str, float]:
    return {path: float(x)}


def _scaled(*leaves: tuple[str, float]) -> Apply:
    """Leaves proportional to a power of the parameter: leaf · (x / x0)^power."""

    def apply(p: Params, x, x0: float) -> Params:
        for leaf, power in leaves:
            p = set_param(p, leaf, get_param(p, leaf) * (x / x0) ** power)
        return p

    return apply


def _value(leaf: str, factor: float) -> Apply:
    """A leaf equal to the parameter times a unit factor (fits from a site value of 0)."""

    def apply(p: Params, x, x0: float) -> Params:
        return set_param(p, leaf, x * factor)

    return apply


def _r_die(p: Params, x, x0: float) -> Params:
    """Die thermal resistance, its RC time constant, and its step decay exp(-dt / (R C)) =
    decay0^(x0 / x)."""
    ratio = x / x0
    p = set_param(p, "compute.r_die", p.compute.r_die * ratio)
    p = set_param(p, "compute.die_tau_s", p.compute.die_tau_s * ratio)
    return set_param(p, "compute.die_decay", p.compute.die_decay ** (1.0 / ratio))


def _gpu_idle(p: Params, x, x0: float) -> Params:
    """GPU idle power; the span up to TDP shrinks by as much as idle grows."""
    idle = p.compute.gpu_idle_w
    p = set_param(p, "compute.gpu_idle_w", idle * (x / x0))
    return set_param(p, "compute.gpu_span_w", p.compute.gpu_span_w - idle * (x / x0 - 1.0))


def _psu_loss(p: Params, x, x0: float) -> Params:
    """PSU loss curve scaled by x / x0, and what build_params derives from it: each
    rack's AC input at full load (DC max + its loss), the site's design IT load, and the
    distribution loss coefficient (rated loss / design IT load)."""
    ratio = x / x0
    psu = p.compute.psu_loss
    rack_max = p.compute.rack_max_ac_w
    dc_max = output_for_input(psu, rack_max, jnp) * p.compute.mask
    new_max = rack_max + (ratio - 1.0) * (rack_max - dc_max)
    design = p.power.it_design_w + jnp.sum((new_max - rack_max) * p.power.rack_weight)
    p = set_param(p, "compute.psu_loss", psu * ratio)
    p = set_param(p, "compute.rack_max_ac_w", new_max)
    p = set_param(p, "power.rack_max_ac_w", new_max)
    p = set_param(
        p, "power.dist_loss_coeff", p.power.dist_loss_coeff * p.power.it_design_w / design
    )
    return set_param(p, "power.it_design_w", design)


def _one(site: Site, path: str) -> float:
    return 1.0


def _efficiencies(site: Site, path: str, s: float) -> dict[str, float]:
    """A loss scale s as the curve's three efficiency points (``path`` without
    ``.loss_scale``): loss = P (1/η − 1) scaled by s gives η' = 1 / (1 + s (1/η − 1))."""
    base = path.removesuffix(".loss_scale")
    return {
        f"{base}.{k}": 1.0 / (1.0 + s * (1.0 / _site_value(site, f"{base}.{k}") - 1.0))
        for k in ("at_20", "at_50", "at_100")
    }


def rack_type_in_use(site: Site, path: str) -> str:
    """The one rack type the site's halls use (rack-type parameters are fitted for a
    site of one rack type)."""
    used = sorted({h.rack_type for h in site.halls})
    if len(used) != 1:
        raise ValueError(
            f"fit.{path}: rack-type parameters need a site of one rack type "
            f"(the halls use {', '.join(used)})"
        )
    return used[0]


def _plain(doc: str, apply: Apply, from_zero: bool = False) -> Calibratable:
    return Calibratable(doc, apply, _site_value, _set_value, from_zero)


# site path -> how it reaches the params. ``<T>``: the site's rack type.
CALIBRATABLE: dict[str, Calibratable] = {
    "cooling.cdu.ua_w_per_k": _plain(
        "CDU heat-exchanger UA, W/K", _scaled(("cooling.cdu_ua", 1.0))
    ),
    "cooling.cdu.pump.efficiency": _plain(
        "CDU pump efficiency", _scaled(("cooling.tcs_pump_w", -1.0))
    ),
    "cooling.cdu.pump.rated_head_kpa": _plain(
        "CDU pump head, kPa (power only: enters as head / efficiency)",
        _scaled(("cooling.tcs_pump_w", 1.0)),
    ),
    "cooling.facility_water.pump.efficiency": _plain(
        "facility water pump efficiency", _scaled(("cooling.fws_pump_w", -1.0))
    ),
    "cooling.facility_water.pump.rated_head_kpa": _plain(
        "facility water pump head, kPa (power only)", _scaled(("cooling.fws_pump_w", 1.0))
    ),
    "cooling.dry_coolers.ua_w_per_k_per_unit": _plain(
        "dry-cooler UA per unit at full fan speed, W/K", _scaled(("cooling.dc_ua", 1.0))
    ),
    "cooling.dry_coolers.ua_exponent": _plain(
        "dry-cooler UA exponent on fan speed", _value("cooling.dc_ua_exponent", 1.0), True
    ),
    "cooling.dry_coolers.fan_power_kw_per_unit": _plain(
        "dry-cooler fan power per unit at full speed, kW", _scaled(("cooling.dc_fan_w", 1.0))
    ),
    "cooling.chillers.capacity_kw": _plain(
        "chiller reference capacity (scales the CAPFT curve), kW",
        _scaled(("cooling.ch_capacity_w", 1.0)),
    ),
    "cooling.chillers.cop_ref": _plain("chiller reference COP", _scaled(("cooling.ch_cop", 1.0))),
    "cooling.air_handling_w_per_w": _plain(
        "air-handler fan power per W of air-side heat",
        _value("cooling.air_handling_w_per_w", 1.0),
        True,
    ),
    "power.misc_fixed_mw": _plain(
        "fixed miscellaneous load, MW", _value("power.misc_fixed_w", 1e6), True
    ),
    "power.misc_fraction_of_it": _plain(
        "miscellaneous load per W of IT", _value("power.misc_fraction", 1.0), True
    ),
    "power.distribution_loss_fraction": _plain(
        "busway/PDU loss at rated load, fraction", _scaled(("power.dist_loss_coeff", 1.0))
    ),
    "power.transformers.no_load_loss_fraction": _plain(
        "transformer no-load loss, fraction of rating", _scaled(("power.xfmr_no_load_w", 1.0))
    ),
    "power.transformers.load_loss_fraction": _plain(
        "transformer load loss at rating, fraction", _scaled(("power.xfmr_load_loss_w", 1.0))
    ),
    "power.ups.efficiency.loss_scale": Calibratable(
        "UPS loss curve scale (1 = the site's efficiency points)",
        _scaled(("power.ups_loss", 1.0)),
        _one,
        _efficiencies,
    ),
    "rack_types.<T>.thermal.r_die_c_per_w": _plain("GPU die-to-coolant resistance, K/W", _r_die),
    "rack_types.<T>.gpu_idle_w": _plain("GPU idle power, W", _gpu_idle),
    "rack_types.<T>.psu_efficiency.loss_scale": Calibratable(
        "rack power-shelf (PSU) loss curve scale (1 = the rack type's efficiency points)",
        _psu_loss,
        _one,
        _efficiencies,
    ),
}


def lookup(path: str, site: Site) -> tuple[str, Calibratable] | None:
    """The table's key and entry for a fit path (a rack type named in place of ``<T>``
    must be the site's rack type in use); None when the path is not calibratable."""
    if path in CALIBRATABLE:
        return path, CALIBRATABLE[path]
    parts = path.split(".")
    if len(parts) > 2 and parts[0] == "rack_types":
        key = ".".join(["rack_types", "<T>", *parts[2:]])
        if key in CALIBRATABLE:
            used = rack_type_in_use(site, path)
            if parts[1] != used:
                raise ValueError(
                    f"fit.{path}: rack type {parts[1]!r} is not in use (the halls use {used})"
                )
            return key, CALIBRATABLE[key]
    return None


def names() -> list[str]:
    return sorted(CALIBRATABLE)
