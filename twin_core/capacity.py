"""Capacity planning: the largest number of racks of a type (or a mix) a site can add
within its hall space, interconnect and cooling plant, per operating case.

Each constraint is checked on simulated KPIs: GPU temperature below the throttle start,
the grid ramp limit, the interconnect limit (the facility peak), how deep the power caps
cut (capped case) and N+1 cooling (the GPU limit held with one chiller, or one dry
cooler, out from the start of the design day). Feasibility is taken to fall with the
count, so a bracketing search finds the boundary: every round evaluates several counts
of every case, with their N+1 variants, in ONE batched rollout. The first round is
centred on the count where the continuous relaxation (capacity_guess.py: the gradient
of each KPI with respect to the planned CDU count) predicts the first constraint to
cross its limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twin_core import kpis as kpi_mod
from twin_core.batch import run_batch, sites_params
from twin_core.capacity_sites import (
    CASES,
    Battery,
    CapacityError,
    case_overrides,
    n1_failures,
    split_count,
    variant_site,
)
from twin_core.compress import pad
from twin_core.params import Params
from twin_core.pytree import replace
from twin_core.rollout import _unpack, plan
from twin_core.site import MAX_RACKS, Site

HALL_SPACE = "hall_space"
RACK_LIMIT = "rack_limit"  # the schema's largest site (site.MAX_RACKS)
# Constraint -> (KPI, unit, sense): "max" keeps the KPI at or below its limit.
CONSTRAINTS: dict[str, tuple[str, str, str]] = {
    "gpu_temp": ("max_gpu_temp_c", "C", "max"),
    "interconnect": ("peak_facility_mw", "MW", "max"),
    "grid_ramp": ("max_grid_ramp_mw_per_s", "MW/s", "max"),
    "cap_depth": ("min_cap_fraction", "", "min"),
    "cooling_n1": ("max_gpu_temp_c", "C", "max"),
}
ROUND_COUNTS = 8  # counts per case in one batched round
TOLERANCE = 1e-6  # relative, as the what-if study's constraint checks


@dataclass(frozen=True)
class Check:
    """One constraint at one count: the KPI ``value`` against ``limit``; ``margin`` is
    how far inside the limit it is (negative: violated), in ``unit``."""

    value: float
    limit: float
    unit: str
    margin: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "limit": self.limit,
            "unit": self.unit,
            "margin": self.margin,
            "passed": self.passed,
        }


def make_check(name: str, value: float, limit: float) -> Check:
    _, unit, sense = CONSTRAINTS[name]
    margin = limit - value if sense == "max" else value - limit
    return Check(value, limit, unit, margin, margin >= -TOLERANCE * max(abs(limit), 1.0))


@dataclass(frozen=True)
class Limits:
    """What every count is checked against. ``max_gpu_temp_c``: None means the lowest
    throttle start of the site's and the planned rack types; ``max_ramp_mw_per_s``: None
    leaves the grid ramp unchecked; ``min_cap_fraction``: how far the capped case may cap
    the racks; ``n1``: check N+1 cooling on the design day; ``cap_overshoot``: in the
    capped case the cap loop holds the meter at the interconnect limit, reacting to the
    meter once it is over, so the peak may pass the limit by this share while the loop
    catches up (estimate: 1 %, the integral loop's transient at cap_gain 0.5)."""

    max_gpu_temp_c: float | None = None
    max_ramp_mw_per_s: float | None = None
    min_cap_fraction: float = 0.9
    n1: bool = True
    cap_overshoot: float = 0.01


@dataclass(frozen=True)
class CaseResult:
    """One operating case's answer: ``racks`` planned racks fit (``counts`` per type,
    ``gpus`` in all), ``binding``: the constraints that fail at one rack more (or
    ``hall_space``/``rack_limit``); ``checks``: every constraint at the answer;
    ``evaluated``: the counts simulated, in order."""

    case: str
    racks: int
    counts: dict[str, int]
    gpus: int
    binding: tuple[str, ...]
    checks: dict[str, Check]
    evaluated: tuple[int, ...]
    guess: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "racks": self.racks,
            "counts": self.counts,
            "gpus": self.gpus,
            "binding": list(self.binding),
            "checks": {k: c.to_dict() for k, c in self.checks.items()},
            "evaluated": list(self.evaluated),
            "guess": self.guess,
        }


@dataclass(frozen=True)
class CapacityPlan:
    """The plan: per case, in the order asked. ``space``: rack positions free for the
    planned racks (None: not limited); ``rounds``: batched rollouts run."""

    site: str
    mix: dict[str, float]
    racks_per_cdu: int
    space: int | None
    horizon_s: float
    dt_s: float
    rounds: int
    cases: tuple[CaseResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "mix": self.mix,
            "racks_per_cdu": self.racks_per_cdu,
            "space": self.space,
            "duration_s": self.horizon_s,
            "dt_s": self.dt_s,
            "rounds": self.rounds,
            "cases": [c.to_dict() for c in self.cases],
        }


def gpu_limit(site: Site, mix: dict[str, float], limits: Limits) -> float:
    if limits.max_gpu_temp_c is not None:
        return limits.max_gpu_temp_c
    types = {h.rack_type for h in site.halls} | set(mix)
    return min(site.rack_types[t].thermal.throttle_start_c for t in types)


def idle_bound(site: Site, mix: dict[str, float]) -> int:
    """A count that cannot fit any case: the planned racks' idle draw alone (their
    floor: caps do not go below idle) passes the interconnect limit."""
    idle = 0.0
    for name, share in mix.items():
        t = site.rack_types[name]
        idle += share * (
            t.gpus * t.gpu_idle_w + t.cpus * t.cpu_idle_w + t.switch_trays * t.switch_w + t.other_w
        )
    return int(site.power.interconnect_limit_mw * 1e6 / idle) + 1


@dataclass
class _Search:
    """One case's bracket: ``lo`` fits (evaluated), ``hi`` does not; ``hi_reason`` names
    why when ``hi`` was never simulated (hall space, the idle bound, the rack limit)."""

    case: str
    overrides: dict[str, Any]
    lo: int
    hi: int
    hi_reason: str | None
    guess: float | None = None
    seen: dict[int, dict[str, Check]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.hi - self.lo <= 1 and self.lo in self.seen

    def next_counts(self, k: int) -> list[int]:
        """Up to ``k`` counts strictly inside the bracket (0 first, if not yet seen)."""
        first = [] if 0 in self.seen else [0]
        lo, hi, k = self.lo, self.hi, k - len(first)
        if hi - lo <= 1:
            return first
        if self.guess is not None and not self.seen:
            # Around the predicted crossing: steps of ~2 % either side of it.
            step = max(1.0, 0.02 * self.guess)
            raw = [self.guess + step * (j - k // 2) for j in range(k)]
        else:
            raw = [float(x) for x in np.linspace(lo, hi, k + 2)[1:-1]]
        inside = sorted({round(x) for x in raw if lo < round(x) < hi})
        return first + [n for n in inside if n not in self.seen][:k]

    def record(self, n: int, checks: dict[str, Check]) -> None:
        self.seen[n] = checks
        if not all(c.passed for c in checks.values()) and n < self.hi:
            self.hi, self.hi_reason = n, None
        # The largest passing count below the first failing one (should a count fail
        # below one that passed, the bracket follows the failure).
        passing = [m for m, c in self.seen.items() if m < self.hi and _passed(c)]
        self.lo = max(passing, default=0)


def _passed(checks: dict[str, Check]) -> bool:
    return all(c.passed for c in checks.values())


def plan_capacity(
    site: Site,
    mix: dict[str, float],
    *,
    horizon_s: float,
    dt: float,
    record_s: float | None = None,
    cases: Sequence[str] = CASES,
    limits: Limits = Limits(),
    space: int | None = None,
    racks_per_cdu: int | None = None,
    battery: Battery | None = None,
    guess: bool = True,
    dtype=jnp.float32,
    progress: Callable[[int, list[tuple[str, int, int]]], None] | None = None,
) -> CapacityPlan:
    """The largest planned count per case (see the module's description).

    ``mix``: rack type -> share (capacity_sites.parse_mix); ``space``: rack positions
    free for them (None: unlimited); ``racks_per_cdu``: racks per planned CDU (default:
    the site's first hall's); ``guess``: centre the first round on the gradient estimate;
    ``progress(round, [(case, lo, hi)])`` after every round."""
    if not cases:
        raise CapacityError("--case: give at least one case")
    for case in cases:
        case_overrides(case, battery, limits.max_ramp_mw_per_s)  # names a bad case
    if space is not None and space < 0:
        raise CapacityError(f"--space: must be >= 0, got {space}")
    if limits.max_ramp_mw_per_s is not None and not limits.max_ramp_mw_per_s > 0:
        raise CapacityError(f"--max-ramp: must be > 0, got {limits.max_ramp_mw_per_s:g}")
    if not 0 <= limits.cap_overshoot < 1:
        raise CapacityError(f"--cap-overshoot: must be in [0, 1), got {limits.cap_overshoot:g}")
    if not 0 < limits.min_cap_fraction <= 1:
        raise CapacityError(f"--min-cap: must be in (0, 1], got {limits.min_cap_fraction:g}")
    per_cdu = racks_per_cdu or site.halls[0].racks_per_cdu
    if per_cdu < 1:
        raise CapacityError(f"--racks-per-cdu: must be >= 1, got {per_cdu}")
    t_max = gpu_limit(site, mix, limits)
    bounds = [
        (idle_bound(site, mix), "interconnect"),
        (MAX_RACKS - site.rack_count + 1, RACK_LIMIT),
    ]
    if space is not None:
        bounds.append((space + 1, HALL_SPACE))
    hi, reason = min(bounds)
    searches = [
        _Search(case, case_overrides(case, battery, limits.max_ramp_mw_per_s), 0, hi, reason)
        for case in cases
    ]
    if guess:
        from twin_core.capacity_guess import predicted_count

        for s in searches:
            s.guess = predicted_count(
                site, mix, per_cdu, s.overrides, _limit_table(site, t_max, limits, s.case),
                horizon_s=horizon_s, dt=dt, record_s=record_s, dtype=dtype,
            )  # fmt: skip
    failures = n1_failures(site) if limits.n1 else {}
    size = ROUND_COUNTS * len(searches) * (len(failures) + 1)
    shape = padded_shape(site, mix, horizon_s, dt, dtype)
    rounds = 0
    while not all(s.done for s in searches):
        rounds += 1
        wanted = [(s, n) for s in searches if not s.done for n in s.next_counts(ROUND_COUNTS)]
        sites, index = [], []
        for s, n in wanted:
            counts = split_count(n, mix)
            sites.append(variant_site(site, counts, per_cdu, s.overrides))
            sites += [
                variant_site(site, counts, per_cdu, s.overrides, f) for f in failures.values()
            ]
            index.append((s, n, len(failures) + 1))
        kpis = _simulate(sites, horizon_s, dt, record_s, dtype, size, shape)
        at = 0
        for s, n, width in index:
            s.record(n, _checks(site, kpis[at : at + width], t_max, limits, s.case))
            at += width
        if progress:
            progress(rounds, [(s.case, s.lo, s.hi) for s in searches])
    results = tuple(_result(site, s, mix, space) for s in searches)
    return CapacityPlan(site.name, dict(mix), per_cdu, space, horizon_s, dt, rounds, results)


def _limit_table(site: Site, t_max: float, limits: Limits, case: str) -> dict[str, float]:
    """Constraint -> limit for the normal-operation constraints of ``case``."""
    interconnect = site.power.interconnect_limit_mw
    if case == "capped":
        interconnect *= 1.0 + limits.cap_overshoot
    table = {"gpu_temp": t_max, "interconnect": interconnect}
    if limits.max_ramp_mw_per_s is not None:
        table["grid_ramp"] = limits.max_ramp_mw_per_s
    if case == "capped":
        table["cap_depth"] = limits.min_cap_fraction
    return table


def _checks(
    site: Site, kpis: list[dict[str, float]], t_max: float, limits: Limits, case: str
) -> dict[str, Check]:
    """Every constraint of one count: the first KPI table is normal operation, the rest
    its N+1 variants."""
    normal, failed = kpis[0], kpis[1:]
    out = {
        name: make_check(name, normal[CONSTRAINTS[name][0]], limit)
        for name, limit in _limit_table(site, t_max, limits, case).items()
    }
    if failed:
        out["cooling_n1"] = make_check(
            "cooling_n1", max(k["max_gpu_temp_c"] for k in failed), t_max
        )
    return out


def _simulate(
    sites: list[Site],
    horizon_s: float,
    dt: float,
    record_s: float | None,
    dtype,
    size: int,
    shape: tuple[int, int],
) -> list[dict[str, float]]:
    """KPIs of every site in ONE batched rollout, padded to ``size`` variants of
    ``shape`` (racks, CDUs after compression) so that every round reuses one compiled
    rollout."""
    n_records, every = plan(horizon_s, dt, record_s)
    padded = sites + [sites[-1]] * (size - len(sites))
    params = [per_rack(pad(q, *shape)) for q in sites_params(padded, horizon_s, dt, "rack", dtype)]
    finals, means, maxes = run_batch(params, n_records, every, size)
    out = []
    for final, mean, peak in list(zip(finals, means, maxes, strict=True))[: len(sites)]:
        m, x = _unpack(mean, peak)
        out.append(kpi_mod.summarize(m, x, final, every * dt))
    return out


def per_rack(p: Params) -> Params:
    """Compute leaves stored once for the site, (1, 1, ...), broadcast per rack, as
    ``stack_params`` does when a batch mixes both forms: then every round has the same
    leaf shapes whichever counts it holds."""
    shape = np.shape(p.compute.mask)

    def grow(leaf):
        if np.ndim(leaf) >= 2 and np.shape(leaf)[:2] == (1, 1):
            return np.broadcast_to(np.asarray(leaf), shape + np.shape(leaf)[2:])
        return leaf

    return replace(p, compute=jax.tree.map(grow, p.compute))


def padded_shape(site: Site, mix: dict[str, float], horizon_s: float, dt: float, dtype):
    """(racks, CDUs) every evaluated site fits once compressed: the site's own classes
    plus, per planned type, one for its full CDUs and one for a part-filled CDU."""
    p = sites_params([site], horizon_s, dt, "rack", dtype)[0]
    racks, cdus = np.shape(p.compute.mask)
    return max(racks, 1), cdus + 2 * len(mix)


def _result(site: Site, s: _Search, mix: dict[str, float], space: int | None) -> CaseResult:
    counts = split_count(s.lo, mix)
    gpus = sum(site.rack_types[t].gpus * n for t, n in counts.items())
    if s.hi_reason is not None:
        binding: tuple[str, ...] = (s.hi_reason,)
    elif s.hi == 0 or s.hi in s.seen:
        binding = tuple(name for name, c in s.seen[s.hi].items() if not c.passed)
    else:  # pragma: no cover - the search ends only with hi simulated or bounded
        binding = ()
    checks = dict(s.seen[s.lo])
    if space is not None:
        checks[HALL_SPACE] = Check(float(s.lo), float(space), "racks", float(space - s.lo), True)
    if s.hi == 0 and not all(c.passed for c in checks.values()):
        counts = dict.fromkeys(mix, 0)
    guess = None if s.guess is None or not math.isfinite(s.guess) else float(s.guess)
    return CaseResult(
        case=s.case,
        racks=s.lo,
        counts=counts,
        gpus=gpus,
        binding=binding,
        checks=checks,
        evaluated=tuple(s.seen),
        guess=guess,
    )
