"""Monte Carlo failure studies and N-1 / N-2 sweeps.

A Monte Carlo study samples every unit's failures and repairs over the horizon
(``reliability.py``); each sample is one variant of the site that differs only in its
failure slots, so all samples advance in one compiled, batched rollout (``run_batch``,
or a Dask runner) with the failures as time-varying inputs. A base variant with no
sampled failure runs beside them: losses are counted against it.

Per sample: throttled GPU-hours, lost FLOP (base minus sample), peak supply temperature
and hours above the GPU throttle start; the study reports their distribution (mean, P50,
P95, P99) and ranks the equipment classes by the losses in force while their units were
down. An N-1 sweep fails each unit alone for the whole horizon (units of a class are
interchangeable in the model, and CDUs in classes of identical CDUs, so one stands for
each class); N-2 fails every pair.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from twin_core.batch import BatchRunner, run_batch
from twin_core.compress import cdu_classes, compress, pad
from twin_core.contract import SERIES, Equipment
from twin_core.drivers import load_drivers
from twin_core.params import BIG, Granularity, Params, build_params, steps_per_hour
from twin_core.pytree import replace
from twin_core.reliability import (
    CLASSES,
    TARGET,
    Outage,
    Rate,
    UpsBlock,
    catalog_rates,
    catalog_ups_block,
    class_units,
    failure_slots,
    sample_outages,
    slots_needed,
)
from twin_core.rollout import plan
from twin_core.site import Site, SiteError, format_validation_error, parse_duration_or_zero
from twin_core.study import StudyError, field_seconds

MAX_SAMPLES = 100_000
SLOT_BLOCK = 8
Sweep = Literal["monte_carlo", "n-1", "n-2"]
METRICS: dict[str, str] = {
    "throttled_gpu_hours": "GPU h",
    "lost_eflop": "EFLOP",
    "max_supply_c": "C",
    "hours_above_throttle_start": "h",
}
QUANTILES = {"p50": 50.0, "p95": 95.0, "p99": 99.0}
NONE_IN_FORCE = "none in force"
_COL = {name: i for i, name in enumerate(SERIES)}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RateSpec(_Strict):
    mtbf_h: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    mttr_h: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class UpsBlockSpec(_Strict):
    modules: Annotated[int, Field(ge=1, le=64)]
    redundant: Annotated[int, Field(ge=0, le=63)]


class MonteCarloSpec(_Strict):
    """A failure study: ``samples`` Monte Carlo samples, or an ``n-1`` / ``n-2`` sweep.

    ``classes``: the equipment classes that fail (all by default); ``rates``: class ->
    MTBF/MTTR replacing the catalog's; ``ups_block``: UPS modules per feeder path."""

    name: Annotated[str, Field(min_length=1, max_length=80)] = "monte-carlo"
    sweep: Sweep = "monte_carlo"
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] = 100
    seed: Annotated[int, Field(ge=0)] = 0
    duration: str | float = "30d"
    dt: str | float = "30s"
    record_every: str | float = "1h"
    granularity: Granularity = "rack"
    precision: Literal["float32", "float64"] = "float32"
    classes: list[str] | None = None
    rates: dict[str, RateSpec] = Field(default_factory=dict)
    ups_block: UpsBlockSpec | None = None

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, names: list[str] | None) -> list[str] | None:
        for name in names or []:
            _check_class(name)
        if names is not None and not names:
            raise ValueError("give at least one equipment class")
        return names

    @field_validator("rates")
    @classmethod
    def _known_rates(cls, rates: dict[str, RateSpec]) -> dict[str, RateSpec]:
        for name in rates:
            _check_class(name)
        return rates

    def seconds(self, field: str) -> float:
        return field_seconds(self, field)

    def class_rates(self) -> dict[str, Rate]:
        """The rate of every class that fails in this study."""
        rates = catalog_rates()
        rates.update({k: Rate(v.mtbf_h, v.mttr_h) for k, v in self.rates.items()})
        return {name: rates[name] for name in (self.classes or CLASSES)}

    def block(self) -> UpsBlock:
        b = self.ups_block
        return catalog_ups_block() if b is None else UpsBlock(b.modules, b.redundant)


def _check_class(name: str) -> None:
    if name not in CLASSES:
        raise ValueError(f"unknown equipment class {name!r} (known: {', '.join(CLASSES)})")


def parse_monte_carlo(doc: Any, prefix: str = "") -> MonteCarloSpec:
    """Validate a failure-study document; StudyError names the field (after ``prefix``)."""
    if not isinstance(doc, dict):
        raise StudyError(f"{prefix or 'monte_carlo'}: must be a mapping of study fields")
    try:
        spec = MonteCarloSpec.model_validate(doc)
    except ValidationError as err:
        raise StudyError(format_validation_error(err, prefix)) from None
    if spec.ups_block is not None and spec.ups_block.redundant >= spec.ups_block.modules:
        raise StudyError(f"{prefix}ups_block.redundant: must be below modules")
    return spec


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Distribution:
    """A metric over the samples: mean (with the half-width of its 95 % confidence
    interval, 1.96 standard errors) and percentiles."""

    mean: float
    ci95: float
    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, values: np.ndarray) -> Distribution:
        v = np.asarray(values, np.float64)
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
        q = {k: float(np.percentile(v, p)) for k, p in QUANTILES.items()}
        return cls(float(v.mean()), 1.96 * se, q["p50"], q["p95"], q["p99"])

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Contribution:
    """What one equipment class drives, per sample on average: the excess throttled
    GPU-hours and lost EFLOP in force while its units were down, its unit-hours down,
    and ``share`` of all the throttled GPU-hours (lost EFLOP where nothing throttled)."""

    equipment: str
    throttled_gpu_hours: float
    lost_eflop: float
    unit_hours_down: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SweepCase:
    """One deterministic case: ``failed`` units down for the whole horizon, its metrics,
    and ``critical`` when it loses GPU time (throttling or FLOP) against the base."""

    name: str
    failed: tuple[str, ...]
    metrics: dict[str, float]
    critical: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "failed": list(self.failed),
            "metrics": self.metrics,
            "critical": self.critical,
        }


@dataclass(frozen=True)
class MonteCarloResult:
    """A failure study's outcome. ``base``: the metrics with no failure sampled;
    ``distributions``: metric -> Distribution over the samples (Monte Carlo only);
    ``contributions``: classes ranked by what they drive; ``unavailability``: class ->
    (sampled share of unit-time down, analytic MTTR/(MTBF+MTTR)); ``cases``: the sweep's
    cases, most lost FLOP first; ``samples``: metric -> per-sample values."""

    name: str
    site: str
    sweep: Sweep
    duration_s: float
    dt_s: float
    seed: int
    metric_units: dict[str, str]
    base: dict[str, float]
    distributions: dict[str, Distribution]
    contributions: tuple[Contribution, ...]
    unavailability: dict[str, tuple[float, float]]
    cases: tuple[SweepCase, ...]
    samples: dict[str, list[float]]
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "site": self.site,
            "sweep": self.sweep,
            "duration_s": self.duration_s,
            "dt_s": self.dt_s,
            "seed": self.seed,
            "metric_units": dict(self.metric_units),
            "base": self.base,
            "distributions": {k: d.to_dict() for k, d in self.distributions.items()},
            "contributions": [c.to_dict() for c in self.contributions],
            "unavailability": {
                k: {"sampled": s, "analytic": a} for k, (s, a) in self.unavailability.items()
            },
            "cases": [c.to_dict() for c in self.cases],
            "samples": self.samples,
            "wall_s": self.wall_s,
        }


# --------------------------------------------------------------------------- running


def _timing(spec: MonteCarloSpec) -> tuple[float, float, float, int, int]:
    horizon, dt, record_s = (spec.seconds(f) for f in ("duration", "dt", "record_every"))
    try:
        steps_per_hour(dt)
        n_records, every = plan(horizon, dt, record_s)
    except ValueError as exc:  # SiteError included
        raise StudyError(str(exc)) from None
    return horizon, dt, record_s, n_records, every


def _scheduled(site: Site) -> list[Outage]:
    """The site file's own failures, kept in every sample."""
    out = []
    for f in site.failures:
        end = BIG if f.repair_at is None else parse_duration_or_zero(f.repair_at)
        kind = Equipment.of(f.equipment)
        out.append(Outage("scheduled", kind, f.index, parse_duration_or_zero(f.at), end))
    return out


def _variant_params(base: Params, schedules: list[list[Outage]], dtype) -> list[Params]:
    """One parameter set per schedule: the base with its failure slots, compressed (a
    failed CDU keeps a class of its own), padded to one layout and one slot count."""
    # Slot counts rounded up to a multiple of SLOT_BLOCK: studies of similar size (a
    # sweep and a Monte Carlo run of a site) then share one compiled rollout.
    slots = max(slots_needed(s) for s in schedules)
    slots = max(1, -(-slots // SLOT_BLOCK)) * SLOT_BLOCK
    out = [compress(replace(base, failures=failure_slots(s, slots, dtype))) for s in schedules]
    racks = max(np.shape(q.compute.mask)[0] for q in out)
    cdus = max(np.shape(q.compute.mask)[1] for q in out)
    return [pad(q, racks, cdus) for q in out]


def _metrics(means: np.ndarray, maxes: np.ndarray, record_s: float) -> dict[str, np.ndarray]:
    """Per-variant metrics from (variants, records, series) means and maxes (the KPI
    definitions of kpis.py); lost_eflop is filled in against the base afterwards."""
    hours = record_s / 3600.0
    m = means.astype(np.float64)
    return {
        "throttled_gpu_hours": m[:, :, _COL["throttled_gpus"]].sum(axis=1) * hours,
        "delivered_eflop": m[:, :, _COL["delivered_pflops"]].sum(axis=1) * record_s / 1000.0,
        "max_supply_c": maxes[:, :, _COL["tcs_supply_max_c"]].astype(np.float64).max(axis=1),
        "hours_above_throttle_start": m[:, :, _COL["above_throttle_start"]].sum(axis=1) * hours,
    }


def _rollout(
    site: Site,
    spec: MonteCarloSpec,
    schedules: list[list[Outage]],
    chunk: int | None,
    progress: Callable[[float], None] | None,
    runner: BatchRunner,
    segments: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    horizon, dt, record_s, n_records, every = _timing(spec)
    dtype = jnp.float64 if spec.precision == "float64" else jnp.float32
    try:
        base = build_params(
            site,
            load_drivers(site),
            horizon_s=horizon,
            dt=dt,
            granularity=spec.granularity,
            dtype=dtype,
            host=True,
        )
    except SiteError as exc:
        raise StudyError(str(exc)) from None
    params = _variant_params(base, schedules, dtype)
    _, means, maxes = runner(params, n_records, every, chunk, progress, segments)
    return np.asarray(means), np.asarray(maxes), record_s


def _critical(metrics: dict[str, float], base: dict[str, float], gpus: int, hours: float) -> bool:
    """Loses GPU time against the base: more than 1e-4 of the GPU-hours throttled, or of
    the base's FLOP lost (float32 sums agree far closer than that)."""
    excess = metrics["throttled_gpu_hours"] - base["throttled_gpu_hours"]
    lost = metrics["lost_eflop"]
    return bool(excess > 1e-4 * gpus * hours or lost > 1e-4 * max(base["delivered_eflop"], 1e-12))


def attribute(
    schedule: list[Outage],
    loss: np.ndarray,
    record_s: float,
) -> dict[str, np.ndarray]:
    """Split each record's (excess throttled GPU-h, lost EFLOP) among the outages in
    force during it or the record before (the loops' thermal mass carries a failure's
    heat past its repair), by their time down in that window."""
    n = loss.shape[0]
    starts = np.arange(n) * record_s
    window_lo, window_hi = starts - record_s, starts + record_s
    out: dict[str, np.ndarray] = {}
    weights = []
    for o in schedule:
        overlap = np.clip(
            np.minimum(o.end_s, window_hi) - np.maximum(o.start_s, window_lo), 0, None
        )
        weights.append((o.cls, overlap))
    total = sum((w for _, w in weights), np.zeros(n))
    for cls, w in weights:
        share = np.divide(w, total, out=np.zeros(n), where=total > 0)
        out[cls] = out.get(cls, np.zeros(2)) + (share[:, None] * loss).sum(axis=0)
    free = total <= 0
    out[NONE_IN_FORCE] = loss[free].sum(axis=0) if free.any() else np.zeros(2)
    return out


def run_monte_carlo(
    site: Site,
    spec: MonteCarloSpec,
    *,
    chunk: int | None = None,
    progress: Callable[[float, int], None] | None = None,
    runner: BatchRunner = run_batch,
    segments: int = 1,
) -> MonteCarloResult:
    """Run a failure study on ``site``: variant 0 is the base (no sampled failure).

    ``progress(done, total)``: variants done, part-way through a chunk when its records
    are advanced in ``segments`` calls (results are the same)."""
    horizon, dt, record_s, _, _ = _timing(spec)
    rates, block = spec.class_rates(), spec.block()
    units = class_units(site, block)
    scheduled = _scheduled(site)
    if spec.sweep == "monte_carlo":
        rng = np.random.default_rng(spec.seed)
        sampled = [sample_outages(rng, rates, units, block, horizon) for _ in range(spec.samples)]
        names: list[tuple[str, ...]] = []
    else:
        names, sampled = sweep_cases(site, spec, units, block, horizon)
    schedules = [scheduled] + [scheduled + s for s in sampled]
    total = len(schedules)

    def advance(done: float) -> None:
        if progress:
            progress(done, total)

    means, maxes, record_s = _rollout(site, spec, schedules, chunk, advance, runner, segments)
    m = _metrics(means, maxes, record_s)
    m["lost_eflop"] = m["delivered_eflop"][0] - m["delivered_eflop"]
    base = {k: float(v[0]) for k, v in m.items()}
    per_sample = {k: m[k][1:] for k in METRICS}
    common = {
        "name": spec.name,
        "site": site.name,
        "sweep": spec.sweep,
        "duration_s": horizon,
        "dt_s": dt,
        "seed": spec.seed,
        "metric_units": dict(METRICS),
        "base": base,
        "samples": {k: [float(x) for x in v] for k, v in per_sample.items()},
    }
    if spec.sweep != "monte_carlo":
        cases = []
        for i, failed in enumerate(names):
            metrics = {k: float(per_sample[k][i]) for k in METRICS}
            crit = _critical(metrics, base, site.gpu_count, horizon / 3600.0)
            cases.append(SweepCase(" + ".join(failed), failed, metrics, crit))
        cases.sort(key=lambda c: (-c.metrics["lost_eflop"], -c.metrics["throttled_gpu_hours"]))
        return MonteCarloResult(
            **common,
            distributions={},
            contributions=(),
            unavailability={},
            cases=tuple(cases),
        )

    # Per record: excess throttled GPU-hours and lost EFLOP against the base.
    hours = record_s / 3600.0
    thr = means[:, :, _COL["throttled_gpus"]].astype(np.float64) * hours
    flop = means[:, :, _COL["delivered_pflops"]].astype(np.float64) * record_s / 1000.0
    loss = np.stack([np.clip(thr[1:] - thr[0], 0, None), np.clip(flop[0] - flop[1:], 0, None)], -1)
    totals: dict[str, np.ndarray] = {}
    down_h = {cls: 0.0 for cls in rates}
    for schedule, sample_loss in zip(sampled, loss, strict=True):
        for cls, value in attribute(schedule, sample_loss, record_s).items():
            totals[cls] = totals.get(cls, np.zeros(2)) + value
        for o in schedule:
            down_h[o.cls] += (min(o.end_s, horizon) - o.start_s) / 3600.0
    n = len(sampled)
    grand = sum(totals.values(), np.zeros(2))
    pick = 0 if grand[0] > 0 else 1
    contributions = [
        Contribution(
            equipment=cls,
            throttled_gpu_hours=float(v[0] / n),
            lost_eflop=float(v[1] / n),
            unit_hours_down=down_h.get(cls, 0.0) / n,
            share=float(v[pick] / grand[pick]) if grand[pick] > 0 else 0.0,
        )
        for cls, v in totals.items()
    ]
    contributions += [
        Contribution(cls, 0.0, 0.0, down_h[cls] / n, 0.0) for cls in rates if cls not in totals
    ]
    contributions.sort(key=lambda c: (-c.throttled_gpu_hours, -c.lost_eflop, -c.unit_hours_down))
    unavail = {}
    for cls, rate in rates.items():
        unit_h = units[cls] * horizon / 3600.0 * n
        if cls != "ups" and unit_h > 0:  # ups outages are paths lost, not modules down
            unavail[cls] = (down_h[cls] / unit_h, rate.unavailability)
    return MonteCarloResult(
        **common,
        distributions={k: Distribution.of(v) for k, v in per_sample.items()},
        contributions=tuple(contributions),
        unavailability=unavail,
        cases=(),
    )


# --------------------------------------------------------------------------- sweeps


def _representatives(
    site: Site, units: dict[str, int], classes: list[str]
) -> dict[str, list[list[int]]]:
    """Per class, the units a sweep fails: counted classes one unit (any stands for all),
    CDUs one per class of identical CDUs: class -> groups of alike units, each group's
    first unit standing for it."""
    reps: dict[str, list[list[int]]] = {}
    for cls in classes:
        if units[cls] == 0:
            continue
        if cls == "cdu":
            p = build_params(site, load_drivers(site), horizon_s=3600.0, dt=60.0, host=True)
            reps[cls] = cdu_classes(p)
        else:
            reps[cls] = [list(range(units[cls]))]
    return reps


def _outage(cls: str, unit: int, block: UpsBlock) -> Outage:
    """``unit`` down over the whole horizon (a UPS module: its path)."""
    index = unit // block.modules if cls == "ups" else unit
    return Outage(cls, TARGET[cls], index, 0.0, BIG)


def sweep_cases(
    site: Site, spec: MonteCarloSpec, units: dict[str, int], block: UpsBlock, horizon_s: float
) -> tuple[list[tuple[str, ...]], list[list[Outage]]]:
    """(names of the failed units, outages) of every N-1 or N-2 case."""
    reps = _representatives(site, units, list(spec.class_rates()))
    singles = [(cls, group[0]) for cls, groups in reps.items() for group in groups]

    def label(cls: str, unit: int) -> str:
        return f"{cls}/{unit}"

    def outages(chosen: list[tuple[str, int]]) -> list[Outage]:
        out = []
        ups = [unit for cls, unit in chosen if cls == "ups"]
        for cls, unit in chosen:
            if cls != "ups":
                out.append(_outage(cls, unit, block))
        # UPS modules take their path only past the block's redundancy.
        for path in {u // block.modules for u in ups}:
            if sum(u // block.modules == path for u in ups) > block.redundant:
                out.append(_outage("ups", path * block.modules, block))
        return out

    if spec.sweep == "n-1":
        chosen = [[s] for s in singles]
    else:
        chosen = []
        for a, b in itertools.combinations_with_replacement(singles, 2):
            if a == b:  # a second unit of the same class
                second = _second(a, reps)
                if second is None:
                    continue
                b = second
            elif TARGET[a[0]] == TARGET[b[0]] == Equipment.FEEDER and units["feeder"] > 1:
                # two electrical classes: the worse case, on the other feeder path
                b = (b[0], block.modules if b[0] == "ups" else 1)
            chosen.append([a, b])
    return (
        [tuple(label(c, u) for c, u in pair) for pair in chosen],
        [outages(pair) for pair in chosen],
    )


def _second(unit: tuple[str, int], reps: dict[str, list[list[int]]]) -> tuple[str, int] | None:
    """The next unit of ``unit``'s group of alike units, if the group has another (for
    UPS modules: the same block's next module)."""
    cls, index = unit
    group = next(g for g in reps[cls] if g[0] == index)
    return (cls, group[1]) if len(group) > 1 else None
