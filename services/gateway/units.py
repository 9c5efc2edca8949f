"""A small table of units: each is (dimension, factor, offset) to the twin's unit,
``twin = raw * factor + offset``. The twin's units are those in the Quantity names."""

from __future__ import annotations

from typing import NamedTuple


class Unit(NamedTuple):
    dimension: str
    factor: float
    offset: float = 0.0


UNITS: dict[str, Unit] = {
    # power (W)
    "W": Unit("power", 1.0),
    "kW": Unit("power", 1e3),
    "MW": Unit("power", 1e6),
    "mW": Unit("power", 1e-3),
    "mJ/s": Unit("power", 1e-3),  # the rate of DCGM's energy counter (mJ)
    # temperature (degrees C)
    "degC": Unit("temperature", 1.0),
    "°C": Unit("temperature", 1.0),
    "C": Unit("temperature", 1.0),
    "degF": Unit("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "°F": Unit("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "F": Unit("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "K": Unit("temperature", 1.0, -273.15),
    # volume flow (m3/s)
    "m3/s": Unit("flow", 1.0),
    "m3/h": Unit("flow", 1.0 / 3600.0),
    "L/s": Unit("flow", 1e-3),
    "L/min": Unit("flow", 1e-3 / 60.0),
    "lpm": Unit("flow", 1e-3 / 60.0),
    "gpm": Unit("flow", 3.785411784e-3 / 60.0),  # US gallons per minute
    # dimensionless fractions (0..1)
    "1": Unit("fraction", 1.0),
    "%": Unit("fraction", 0.01),
}

# The twin's unit of each quantity, from the suffix of its name (QUANTITY_..._W etc.).
_SUFFIX_UNITS = (("_m3_per_s", "m3/s"), ("_w", "W"), ("_c", "degC"))


def quantity_unit(quantity: str) -> str:
    """``rack_power_w`` -> ``W``; ``fan_speed`` -> ``1``."""
    for suffix, unit in _SUFFIX_UNITS:
        if quantity.endswith(suffix):
            return unit
    return "1"


def converter(unit: str, quantity: str) -> Unit:
    """The conversion from ``unit`` to ``quantity``'s unit; ValueError naming both when
    the unit is unknown or measures something else."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r} (known: {', '.join(UNITS)})")
    source, target = UNITS[unit], UNITS[quantity_unit(quantity)]
    if source.dimension != target.dimension:
        raise ValueError(
            f"unit {unit!r} is a {source.dimension}, {quantity} is a {target.dimension}"
        )
    # twin = (raw * f_s + o_s - o_t) / f_t
    return Unit(source.dimension, source.factor / target.factor,
                (source.offset - target.offset) / target.factor)  # fmt: skip
