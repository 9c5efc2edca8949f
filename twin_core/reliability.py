"""Equipment failures and repairs sampled from MTBF/MTTR per equipment class.

Each unit alternates up and down times drawn as exponentials with the class's MTBF and
MTTR (``catalog/reliability/equipment.yaml``). A unit starts in its stationary state
(down with probability MTTR/(MTBF+MTTR), its remaining repair again exponential), so the
sampled unavailability is the analytic one at every moment of the horizon, not only
after a warm-up.

A class acts on the model through one equipment kind (``Equipment``): chillers, pumps,
dry coolers and CDUs are their own kinds; a transformer takes its feeder's path out, and
a feeder path is lost while more of its UPS block's modules are down than the block's
redundancy. Down intervals of one target unit are merged, so the model counts a unit
down once however many causes overlap.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from twin_core.contract import Equipment
from twin_core.params import BIG, Failures
from twin_core.site import Site

CATALOG = Path(__file__).parent / "catalog" / "reliability" / "equipment.yaml"
CLASSES: tuple[str, ...] = (
    "chiller",
    "pump",
    "dry_cooler",
    "cdu",
    "feeder",
    "transformer",
    "ups",
)
# The model kind each class takes down (electrical classes: the feeder path).
TARGET: dict[str, Equipment] = {
    "chiller": Equipment.CHILLER,
    "pump": Equipment.PUMP,
    "dry_cooler": Equipment.DRY_COOLER,
    "cdu": Equipment.CDU,
    "feeder": Equipment.FEEDER,
    "transformer": Equipment.FEEDER,
    "ups": Equipment.FEEDER,
}


@dataclass(frozen=True)
class Rate:
    """Mean time between failures and mean time to repair, hours."""

    mtbf_h: float
    mttr_h: float

    @property
    def unavailability(self) -> float:
        """The stationary share of time a unit is down: MTTR / (MTBF + MTTR)."""
        return self.mttr_h / (self.mtbf_h + self.mttr_h)


@dataclass(frozen=True)
class UpsBlock:
    """UPS modules per feeder path, and how many of them the path can lose."""

    modules: int
    redundant: int


@dataclass(frozen=True)
class Outage:
    """One target unit down over [start_s, end_s), and the class that caused it."""

    cls: str
    kind: Equipment
    index: int
    start_s: float
    end_s: float


@functools.cache
def _catalog() -> tuple[dict[str, Rate], UpsBlock]:
    doc = yaml.safe_load(CATALOG.read_text())
    rates = {
        name: Rate(float(r["mtbf_h"]), float(r["mttr_h"])) for name, r in doc["classes"].items()
    }
    return rates, UpsBlock(int(doc["ups_block"]["modules"]), int(doc["ups_block"]["redundant"]))


def catalog_rates() -> dict[str, Rate]:
    """The catalog's rate of every class (a copy)."""
    return dict(_catalog()[0])


def catalog_ups_block() -> UpsBlock:
    return _catalog()[1]


def class_units(site: Site, block: UpsBlock) -> dict[str, int]:
    """Units of each class installed at ``site``."""
    c, feeders = site.cooling, site.power.feeders
    return {
        "chiller": c.chillers.units,
        "pump": c.facility_water.pumps,
        "dry_cooler": c.dry_coolers.units,
        "cdu": site.cdu_count,
        "feeder": feeders,
        "transformer": feeders,
        "ups": feeders * block.modules,
    }


def down_intervals(
    rng: np.random.Generator, rate: Rate, units: int, horizon_s: float
) -> list[tuple[int, float, float]]:
    """(unit, start, end) of every down time of ``units`` units over [0, horizon_s)."""
    if units == 0:
        return []
    mtbf, mttr = rate.mtbf_h * 3600.0, rate.mttr_h * 3600.0
    t = np.zeros(units)
    down = rng.random(units) < rate.unavailability
    out: list[tuple[int, float, float]] = []
    while np.any(t < horizon_s):
        d = np.where(down, rng.exponential(mttr, units), rng.exponential(mtbf, units))
        for u in np.flatnonzero(down & (t < horizon_s)):
            out.append((int(u), float(t[u]), float(t[u] + d[u])))
        t = t + d
        down = ~down
    return out


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of intervals, as disjoint sorted intervals."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def exceeding(intervals: list[tuple[float, float]], allowed: int) -> list[tuple[float, float]]:
    """Where more than ``allowed`` of ``intervals`` overlap."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    out, count, since = [], 0, 0.0
    for t, step in edges:
        before = count
        count += step
        if before <= allowed < count:
            since = t
        elif count <= allowed < before and t > since:
            out.append((since, t))
    return out


def sample_outages(
    rng: np.random.Generator,
    rates: dict[str, Rate],
    units: dict[str, int],
    block: UpsBlock,
    horizon_s: float,
) -> list[Outage]:
    """One sample: the outages of every target unit caused by the classes in ``rates``."""
    out: list[Outage] = []
    for cls in CLASSES:
        if cls not in rates:
            continue
        raw = down_intervals(rng, rates[cls], units[cls], horizon_s)
        if cls == "ups":  # a path is lost while its block is short of modules
            for path in range(units["feeder"]):
                mods = [(s, e) for u, s, e in raw if u // block.modules == path]
                for s, e in exceeding(mods, block.redundant):
                    out.append(Outage(cls, TARGET[cls], path, s, e))
        else:
            out += [Outage(cls, TARGET[cls], u, s, e) for u, s, e in raw]
    return out


def failure_slots(outages: list[Outage], slots: int, dtype) -> Failures:
    """Failure slots for the model: one per merged down interval of a target unit,
    padded to ``slots`` (padding: kind -1, never in force)."""
    by_target: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for o in outages:
        by_target.setdefault((int(o.kind), o.index), []).append((o.start_s, o.end_s))
    rows = [(k, i, s, e) for (k, i), spans in by_target.items() for s, e in merge(spans)]
    if len(rows) > slots:
        raise ValueError(f"{len(rows)} outages do not fit {slots} failure slots")
    kind = np.full(slots, -1, np.int32)
    index = np.zeros(slots, np.int32)
    start = np.full(slots, BIG)
    end = np.full(slots, BIG)
    for n, (k, i, s, e) in enumerate(rows):
        kind[n], index[n], start[n], end[n] = k, i, s, e
    return Failures(kind, index, np.asarray(start, dtype), np.asarray(end, dtype))


def slots_needed(outages: list[Outage]) -> int:
    """Failure slots ``failure_slots`` fills for ``outages``."""
    by_target: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for o in outages:
        by_target.setdefault((int(o.kind), o.index), []).append((o.start_s, o.end_s))
    return sum(len(merge(spans)) for spans in by_target.values())
