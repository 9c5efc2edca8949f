"""The likely cause of a deviation, from the quantities physically coupled to it.

A CDU's return temperature is its supply plus the rack heat over the loop's capacity
rate, and the rack heat follows the racks' power. So, for a deviation of ``entity``:

- ``rack/<slot>/<cdu>`` rack power: **load** (the IT power departs from the model's);
- ``cdu/<i>`` supply or return temperature:
  1. **load** when a rack power on that CDU departs too (either way);
  2. else **equipment** when the CDU's other temperature departs the same way (fouling
     or a lost pump raises supply and return together: the heat still arrives, it is
     rejected worse). The suspect is the CDU itself, unless every CDU's temperature
     departs the same way: then it is the loop they share, ``facility_water`` (a failed
     pump, a fouled dry cooler, a tripped chiller), which no CDU reading sees directly;
  3. else **sensor** when the other temperature is measured and agrees (one sensor
     steps or drifts while the physics around it does not);
  4. else unspecified: nothing coupled is measured.

"Departs" means: that residual's own deviation is open, or its CUSUM holds at least half
the decision interval (S >= h/2) on the side in question. Under the null hypothesis that
happens with probability about exp(-2k * h/2) (1e-4 with the defaults), while a coupled
quantity that shares the departure has built up about as much evidence as the one that
crossed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.monitor.cusum import Cusum
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import deviation_pb2

SUPPLY = telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C
RETURN = telemetry_pb2.QUANTITY_RETURN_TEMPERATURE_C
RACK_POWER = telemetry_pb2.QUANTITY_RACK_POWER_W
SENSOR = deviation_pb2.DEVIATION_CAUSE_SENSOR
EQUIPMENT = deviation_pb2.DEVIATION_CAUSE_EQUIPMENT
LOAD = deviation_pb2.DEVIATION_CAUSE_LOAD
UNSPECIFIED = deviation_pb2.DEVIATION_CAUSE_UNSPECIFIED

Key = tuple[str, int]  # (entity, telemetry quantity)
NAMES: dict[int, str] = {SUPPLY: "supply", RETURN: "return", RACK_POWER: "rack power"}


@dataclass(frozen=True)
class Finding:
    cause: deviation_pb2.DeviationCause
    reason: str
    suspect: str  # the equipment the cause points at (see the module docstring)


FACILITY_WATER = "facility_water"  # the suspect when every CDU departs together


def departs(d: Cusum, side: int | None = None) -> bool:
    """Whether a residual departs (on ``side``, or on either when None)."""
    sides = (side,) if side else (1, -1)
    return any(d.side == s or d.evidence(s) >= d.h / 2 for s in sides)


def cdu_of_rack(entity: str) -> str | None:
    """``rack/3/1`` -> ``cdu/1``."""
    parts = entity.split("/")
    return f"cdu/{parts[2]}" if len(parts) == 3 and parts[0] == "rack" else None


def classify(key: Key, side: int, detectors: Mapping[Key, Cusum]) -> Finding:
    """The cause of ``key``'s deviation on ``side`` (+1 above the model, -1 below), given
    every residual's detector (only residuals with a known noise have one)."""
    entity, quantity = key
    if quantity == RACK_POWER:
        return Finding(LOAD, "the rack's power departs from the model's", entity)
    racks = sorted(k[0] for k in detectors if k[1] == RACK_POWER and cdu_of_rack(k[0]) == entity)
    loaded = [r for r in racks if departs(detectors[(r, RACK_POWER)])]
    if loaded:
        return Finding(LOAD, f"rack power departs too ({', '.join(loaded[:4])})", entity)
    other = RETURN if quantity == SUPPLY else SUPPLY
    coupled = detectors.get((entity, other))
    if coupled is None:
        return Finding(UNSPECIFIED, f"no {NAMES[other]} temperature measured at {entity}", entity)
    if departs(coupled, side):
        together = f"{NAMES[quantity]} and {NAMES[other]} depart together"
        others = sorted(e for e, q in detectors if q == quantity and e != entity)
        if others and all(departs(detectors[(e, quantity)], side) for e in others):
            return Finding(
                EQUIPMENT,
                f"{together} at every CDU: the facility water loop they share",
                FACILITY_WATER,
            )
        return Finding(EQUIPMENT, together, entity)
    agree = f"{NAMES[other]} temperature" + (" and rack power agree" if racks else " agrees")
    return Finding(SENSOR, f"{agree} with the model", entity)
