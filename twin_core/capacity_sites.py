"""The sites a capacity plan evaluates: the site as it is plus ``n`` planned racks of a
rack type (or a mix), in one operating case (power caps, GB300 smoothing, a firming
battery), and its N+1 cooling variants (one chiller, one dry cooler out on the design
day).

Planned racks go in halls of their own placed *first*, and their training jobs first:
racks are assigned to jobs in site order (params.py), so the site's own jobs keep their
own racks whatever the planned count.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from twin_core.site import Site, SiteError, build_site

# Operating cases: overrides on the site for each. "uncapped" disables the site's power-cap
# loop (a cap floor of 1 leaves the racks at full power), so the interconnect must hold
# the uncapped peak; "capped" lets the loop hold the meter at the limit.
NO_CAPS = {"power.cap_min_fraction": 1.0}
NO_SMOOTHING = {"controls.smoothing_enabled": False}
CASES = ("uncapped", "capped", "smoothing", "battery")


class CapacityError(ValueError):
    """A capacity plan that cannot run; ``str()`` is one line naming the field or option."""


@dataclass(frozen=True)
class Battery:
    """The firming battery of the ``battery`` case (swing firming at the meter)."""

    power_mw: float
    capacity_mwh: float


def parse_mix(items: list[str], site: Site, option: str = "--rack-type") -> dict[str, float]:
    """``["GB300_NVL72"]`` or ``["GB200_NVL72=1", "GB300_NVL72=3"]`` -> type -> share
    (summing to 1); CapacityError names the option on an unknown type or a bad share."""
    if not items:
        raise CapacityError(f"{option}: give at least one rack type")
    weights: dict[str, float] = {}
    for item in items:
        name, sep, share = item.partition("=")
        name = name.strip()
        if name not in site.rack_types:
            known = ", ".join(sorted(site.rack_types))
            raise CapacityError(f"{option} {name!r}: unknown rack type (known: {known})")
        if site.rack_types[name].training is None:
            raise CapacityError(
                f"{option} {name!r}: the rack type has no training defaults to load it with"
            )
        try:
            weight = float(share) if sep else 1.0
        except ValueError:
            raise CapacityError(f"{option} {item!r}: share must be a number") from None
        if not weight > 0 or weight == float("inf"):
            raise CapacityError(f"{option} {item!r}: share must be a positive number")
        if name in weights:
            raise CapacityError(f"{option} {name!r}: given twice")
        weights[name] = weight
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def split_count(n: int, mix: dict[str, float]) -> dict[str, int]:
    """``n`` racks split by the mix's shares (largest remainder: the counts sum to ``n``)."""
    exact = {name: n * share for name, share in mix.items()}
    counts = {name: int(v) for name, v in exact.items()}
    left = n - sum(counts.values())
    by_remainder = sorted(mix, key=lambda name: (counts[name] - exact[name], list(mix).index(name)))
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts


def planned_doc(doc: dict[str, Any], counts: dict[str, int], racks_per_cdu: int) -> dict[str, Any]:
    """The site document with ``counts`` planned racks per type in halls of their own."""
    doc = copy.deepcopy(doc)
    halls, jobs, planned_cdus = [], [], 0
    for name, n in counts.items():
        full, part = divmod(n, racks_per_cdu)
        if full:
            halls.append(
                {"name": f"plan-{name}", "cdus": full, "racks_per_cdu": racks_per_cdu,
                 "rack_type": name}
            )  # fmt: skip
        if part:
            halls.append(
                {"name": f"plan-{name}-part", "cdus": 1, "racks_per_cdu": part, "rack_type": name}
            )
        planned_cdus += full + (1 if part else 0)
        if n:
            jobs.append({"name": f"plan-{name}", "racks": n})
    doc["halls"] = halls + doc["halls"]
    workload = doc.setdefault("workload", {})
    workload["training"] = jobs + list(workload.get("training") or [])
    # CDU failures name a CDU by its index: the planned CDUs come first now.
    for failure in doc.get("failures") or []:
        if failure.get("equipment") == "cdu":
            failure["index"] = failure.get("index", 0) + planned_cdus
    return doc


def case_overrides(case: str, battery: Battery | None, max_ramp: float | None) -> dict[str, Any]:
    """The dotted-path overrides of an operating case."""
    if case == "uncapped":
        return {**NO_CAPS, **NO_SMOOTHING, "energy.battery.mode": "off"}
    if case == "capped":
        return {**NO_SMOOTHING, "energy.battery.mode": "off"}
    if case == "smoothing":
        return {**NO_CAPS, "controls.smoothing_enabled": True, "energy.battery.mode": "off"}
    if case == "battery":
        if battery is None:
            raise CapacityError("--case battery: give --battery-mw and --battery-mwh")
        firming = {
            "energy.battery.mode": "swing_firming",
            "energy.battery.power_mw": battery.power_mw,
            "energy.battery.capacity_mwh": battery.capacity_mwh,
            "energy.battery.initial_soc": 0.5,
        }
        if max_ramp is not None:
            firming["energy.battery.ramp_limit_mw_per_s"] = max_ramp
        return {**NO_CAPS, **NO_SMOOTHING, **firming}
    raise CapacityError(f"--case {case!r}: unknown case (choose from {', '.join(CASES)})")


def n1_failures(site: Site) -> dict[str, dict[str, Any]]:
    """The single cooling failures of the N+1 check: variant name -> the failure, from the
    start of the run (the design day)."""
    out = {}
    if site.cooling.chillers.units >= 1:
        out["chiller_out"] = {"equipment": "chiller", "index": 0, "at": 0}
    out["dry_cooler_out"] = {"equipment": "dry_cooler", "index": 0, "at": 0}
    return out


def set_path_doc(doc: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with dotted-path overrides (the paths here all exist in a valid site)."""
    from twin_core.site import set_path

    doc = copy.deepcopy(doc)
    for path, value in overrides.items():
        set_path(doc, path, value)
    return doc


def variant_site(
    base: Site,
    counts: dict[str, int],
    racks_per_cdu: int,
    overrides: dict[str, Any],
    failure: dict[str, Any] | None = None,
) -> Site:
    """One evaluated site: ``base`` plus the planned racks, the case, maybe a failure."""
    doc = planned_doc(set_path_doc(base.model_dump(), overrides), counts, racks_per_cdu)
    if failure is not None:
        doc["failures"] = [*(doc.get("failures") or []), failure]
    try:
        return build_site(doc, None, base.base_dir)
    except SiteError as exc:
        raise CapacityError(f"planned site ({sum(counts.values())} racks): {exc}") from None
