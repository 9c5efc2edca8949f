"""The contract of the site's quantities: one table, read by every layer.

``QUANTITIES`` lists every site-level quantity once: its name (unit in the name), unit,
the domain that computes it, how it is computed from that domain's step outputs, and
whether the history stores it (its SQL type) and rolls it up. ``BOUNDARY`` lists the
values the domains exchange each coupling interval and who owns each one.

Everything else is derived from these two tables: the rollout's recorded series, the
coupling's ``publish`` and the domains' ownership (``OWNS``/``NEEDS``), the quantities
each domain puts on its bus state message, the historian's columns and COPY types, the
History API's metrics and rollup eligibility, and the live snapshot. A migration check
(``tests/test_contract.py``) fails until the SQL holds a column for every stored quantity.

This module imports no JAX: expressions use array methods and operators only, so the
same expression runs on JAX tracers inside a rollout and on NumPy arrays in a service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

Domain = Literal["compute", "cooling", "power", "energy"]
DOMAINS: tuple[Domain, ...] = ("compute", "cooling", "power", "energy")
SqlType = Literal["double precision", "integer"]
# COPY BINARY type names of the SQL types.
COPY_TYPES: dict[str, str] = {"double precision": "float8", "integer": "int4"}


class Equipment(IntEnum):
    """Kinds of equipment that can fail: the index into ``Params.installed`` and the
    ``kind`` of a failure slot. The site file names them by ``label``."""

    CHILLER = 0
    PUMP = 1
    CDU = 2
    DRY_COOLER = 3
    FEEDER = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, label: str) -> Equipment:
        """The kind named ``label`` in a site file (``dry_cooler``)."""
        return cls[label.upper()]


EQUIPMENT_LABELS: tuple[str, ...] = tuple(e.label for e in Equipment)

# How a quantity is computed from its domain's step: the name of an output field, a
# driver (``drivers.<name>``), or an expression (domain outputs, drivers, domain params).
Expression = Callable[[Any, Any, Any], Any]
Source = str | Expression


@dataclass(frozen=True)
class Quantity:
    """One site-level quantity.

    ``sql``: the column type in ``site_series`` (None: recorded by rollouts and on the
    bus, not stored by the historian). ``rollup``: summarised in ``site_series_1m/_1h``.
    ``total``: the name of its time integral (a rate per second integrated over the run),
    reported by the live snapshot."""

    name: str
    unit: str
    domain: Domain
    source: Source
    doc: str
    sql: SqlType | None = None
    rollup: bool = False
    total: str | None = None

    def of(self, outputs: Any, drivers: Any, params: Any) -> Any:
        """The value from a step of its domain (JAX or NumPy arrays alike)."""
        if callable(self.source):
            return self.source(outputs, drivers, params)
        where, _, name = self.source.rpartition(".")
        return getattr(drivers if where == "drivers" else outputs, name)


def _q(
    name: str,
    unit: str,
    domain: Domain,
    source: Source,
    doc: str,
    *,
    sql: SqlType | None = None,
    rollup: bool = False,
    total: str | None = None,
) -> Quantity:
    return Quantity(name, unit, domain, source, doc, sql, rollup, total)


F8: SqlType = "double precision"
NO_LIMIT_W = 1e12  # a supply limit above this is "none" (BIG in the model): report 1 TW

# fmt: off
# One line per quantity: the table reads best unwrapped (E501 is off for this file).
QUANTITIES: tuple[Quantity, ...] = (
    # ---- the meter and its parts (stored in this order: the site_series columns)
    _q("it_w", "W", "power", "it_w", "IT power at the UPS output", sql=F8, rollup=True),
    _q("facility_w", "W", "power", "meter_w", "facility meter", sql=F8, rollup=True),
    _q("cooling_w", "W", "cooling", "electrical_w", "all cooling loads", sql=F8, rollup=True),
    _q("losses_w", "W", "power", "losses_w", "distribution, UPS and transformer losses", sql=F8),
    _q("misc_w", "W", "power", "misc_w", "miscellaneous facility load", sql=F8),
    _q("pue", "1", "power", lambda o, d, p: o.meter_w / o.it_w.clip(min=1e-9) * (o.it_w > 0), "facility meter / IT power (0 with no IT load)", sql=F8, rollup=True),
    _q("cap_fraction", "1", "power", "cap_fraction", "site-wide cap, fraction of full-load rack power"),
    _q("ramp_w_per_s", "W/s", "power", "ramp_w_per_s", "meter ramp rate |d meter/dt|"),
    _q("meter_band_w", "W", "power", lambda o, d, p: abs(o.band_w), "meter power in the 0.1-2 Hz band"),
    _q("supply_limit_w", "W", "power", lambda o, d, p: o.limit_w.clip(max=NO_LIMIT_W), "the binding limit on the meter (1 TW when none)"),
    _q("residual_power_w", "W", "power", lambda o, d, p: abs(o.residual_w), "energy balance residual, power domain"),
    # ---- cooling: the liquid loops, heat rejection, water
    _q("tcs_supply_mean_c", "C", "cooling", "tcs_supply_mean_c", "mean CDU supply to the racks", sql=F8),
    _q("tcs_supply_max_c", "C", "cooling", "tcs_supply_max_c", "hottest CDU supply to the racks", sql=F8, rollup=True),
    _q("facility_supply_c", "C", "cooling", "fws_supply_c", "facility water supply", sql=F8),
    _q("facility_return_c", "C", "cooling", "fws_return_c", "facility water return"),
    _q("pumps_w", "W", "cooling", "pumps_w", "facility and CDU pumps"),
    _q("dry_cooler_fans_w", "W", "cooling", "fans_w", "dry cooler fans"),
    _q("chillers_w", "W", "cooling", "chillers_w", "trim chillers"),
    _q("air_handling_w", "W", "cooling", "air_handling_w", "air handling"),
    _q("heat_rejected_w", "W", "cooling", "heat_rejected_w", "heat rejected to the outdoor air"),
    _q("chillers_running", "units", "cooling", "chillers_running", "trim chillers running"),
    _q("chiller_load_w", "W", "cooling", "chiller_load_w", "heat taken by the chillers"),
    _q("fan_speed", "1", "cooling", "fan_speed", "dry cooler fan speed, fraction of full"),
    _q("water_m3_per_s", "m3/s", "cooling", "water_m3_per_s", "water consumed (adiabatic assist, cooling tower make-up)", total="water_m3"),
    _q("tower_fans_w", "W", "cooling", "tower_fans_w", "cooling tower fans (water-cooled chillers)"),
    _q("tower_heat_w", "W", "cooling", "tower_heat_w", "heat the cooling towers reject from the condenser water"),
    _q("condenser_c", "C", "cooling", "condenser_c", "entering the chiller condensers: outdoor air or tower water"),
    _q("heat_stored_w", "W", "cooling", "stored_w", "heat going into the TCS and facility loops' thermal mass"),
    _q("residual_cooling_w", "W", "cooling", lambda o, d, p: abs(o.residual_w), "energy balance residual, cooling domain"),
    # ---- compute: racks and GPUs
    _q("gpu_temp_max_c", "C", "compute", "gpu_temp_max_c", "hottest GPU die", sql=F8, rollup=True),
    _q("gpu_temp_mean_c", "C", "compute", "gpu_temp_mean_c", "mean GPU die", sql=F8),
    _q("throttled_gpus", "GPUs", "compute", "throttled_gpus", "GPUs below 99 % of their clock", sql="integer"),
    _q("above_throttle_start", "1", "compute", "above_throttle", "1 while any GPU die is above its throttle start (its mean: the share of time)"),
    _q("delivered_pflops", "PFLOP/s", "compute", "delivered_pflops", "compute delivered", sql=F8, rollup=True),
    _q("rack_ac_w", "W", "compute", "ac_total_w", "AC power drawn by the racks"),
    _q("gpu_power_w", "W", "compute", "gpu_power_w", "all GPUs"),
    _q("heat_liquid_w", "W", "compute", lambda o, d, p: (o.heat_liquid_w * p.cdu_count).sum(), "heat into the technology cooling loops"),
    _q("heat_air_w", "W", "compute", "heat_air_w", "heat into the room air"),
    _q("rack_outlet_c", "C", "compute", "rack_outlet_mean_c", "mean rack coolant outlet"),
    _q("rack_storage_w", "W", "compute", "storage_w", "power going into the racks' smoothing storage"),
    _q("smoothing_unheld", "1", "compute", "ramp_unheld", "share of the smoothed racks whose ramp limit broke (store empty)"),
    _q("residual_compute_w", "W", "compute", lambda o, d, p: abs(o.residual_w), "energy balance residual, compute domain"),
    # ---- energy: grid, battery, PPA, markets
    _q("grid_w", "W", "energy", "grid_w", "grid import", sql=F8, rollup=True),
    _q("battery_w", "W", "energy", "battery_w", "battery discharge (+) / charge (-)", sql=F8, rollup=True),
    _q("ppa_w", "W", "energy", "drivers.ppa_w", "PPA output", sql=F8),
    _q("generation_w", "W", "energy", "generation_w", "on-site generation", sql=F8),
    _q("soc", "1", "energy", "soc", "battery state of charge", sql=F8, rollup=True),
    _q("cost_usd_per_s", "USD/s", "energy", "cost_usd_per_s", "energy cost rate", sql=F8, rollup=True, total="cost_usd"),
    _q("emissions_t_per_s", "t/s", "energy", "emissions_t_per_s", "location-based CO2 rate", sql=F8, rollup=True, total="emissions_t"),
    _q("price_usd_per_mwh", "USD/MWh", "energy", "drivers.price", "energy price"),
    _q("carbon_g_per_kwh", "g/kWh", "energy", "drivers.carbon", "grid carbon intensity"),
    _q("market_emissions_t_per_s", "t/s", "energy", "market_emissions_t_per_s", "market-based CO2 rate", total="market_emissions_t"),
    _q("grid_ramp_w_per_s", "W/s", "energy", "grid_ramp_w_per_s", "grid import ramp rate"),
    _q("residual_energy_w", "W", "energy", lambda o, d, p: abs(o.residual_w), "energy balance residual, energy domain"),
    # ---- weather
    _q("ambient_c", "C", "cooling", "drivers.ambient_c", "outdoor dry bulb", sql=F8, rollup=True),
)
# fmt: on

QUANTITY: dict[str, Quantity] = {q.name: q for q in QUANTITIES}
SERIES: tuple[str, ...] = tuple(q.name for q in QUANTITIES)
# What the history stores (site_series value columns, in this order) and rolls up.
HISTORY: tuple[Quantity, ...] = tuple(q for q in QUANTITIES if q.sql is not None)
ROLLUP: tuple[str, ...] = tuple(q.name for q in HISTORY if q.rollup)
# Run totals of the live snapshot: total name -> rate quantity.
TOTALS: dict[str, str] = {q.total: q.name for q in QUANTITIES if q.total}


def of_domain(domain: str) -> tuple[Quantity, ...]:
    """The quantities ``domain`` computes (and puts on its state message)."""
    return tuple(q for q in QUANTITIES if q.domain == domain)


# ------------------------------------------------------------------------- boundary


@dataclass(frozen=True)
class BoundaryField:
    """A value a domain publishes at the end of an interval and its peers read in the next.

    ``source``: where the owner finds it after its step (``outputs.<name>`` or
    ``state.<name>``); ``message_field``: its field in the owner's bus state message."""

    name: str
    owner: Domain
    readers: tuple[Domain, ...]
    source: str
    message_field: str
    doc: str

    def read(self, state: Any, outputs: Any) -> Any:
        where, _, attr = self.source.partition(".")
        return getattr(state if where == "state" else outputs, attr)


# fmt: off
BOUNDARY: tuple[BoundaryField, ...] = (
    BoundaryField("tcs_supply_c", "cooling", ("compute",), "state.tcs_supply_c", "tcs_supply_c", "CDU supply per CDU (C,)"),
    BoundaryField("rack_cap_w", "power", ("compute",), "outputs.rack_cap_w", "rack_cap_w", "cap on each rack's AC input (R, C)"),
    BoundaryField("rack_ac_w", "compute", ("power",), "outputs.rack_ac_w", "rack_ac_w", "AC power per rack (R, C)"),
    BoundaryField("heat_liquid_w", "compute", ("cooling",), "outputs.heat_liquid_w", "heat_liquid_w", "heat into each CDU (C,)"),
    BoundaryField("heat_air_w", "compute", ("cooling",), "outputs.heat_air_w", "heat_air_w", "heat into the room air"),
    BoundaryField("cooling_w", "cooling", ("power",), "outputs.electrical_w", "electrical_w", "all cooling loads"),
    BoundaryField("supply_limit_w", "energy", ("power",), "outputs.supply_limit_w", "supply_limit_w", "what the supply can deliver"),
    BoundaryField("meter_w", "power", ("energy",), "outputs.meter_w", "meter_w", "the facility meter"),
)
# fmt: on

BOUNDARY_FIELD: dict[str, BoundaryField] = {f.name: f for f in BOUNDARY}
# Boundary fields each domain publishes, and the peers each domain reads.
OWNS: dict[str, tuple[str, ...]] = {
    d: tuple(f.name for f in BOUNDARY if f.owner == d) for d in DOMAINS
}
NEEDS: dict[str, tuple[str, ...]] = {
    d: tuple(o for o in DOMAINS if any(f.owner == o and d in f.readers for f in BOUNDARY))
    for d in DOMAINS
}
