"""What-if studies: a base site plus named variants (dotted-path overrides, grids of
values), run together in one batched rollout and compared against the base.

A study is data (``StudySpec``, a pydantic model read from YAML, protobuf or the CLI);
``run_study`` expands it into variants, validates every variant's site, advances them
all with ``simulate_batch`` and returns a ``StudyResult``: per-variant KPIs, deltas
against the base, constraint checks and optionally downsampled series.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import jax.numpy as jnp
import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from twin_core.batch import BatchRunner, run_batch, simulate_sites
from twin_core.durations import parse_duration
from twin_core.inputs import load_yaml
from twin_core.kpis import KPI_UNITS
from twin_core.params import Granularity, steps_per_hour
from twin_core.rollout import SERIES, Result, plan
from twin_core.site import Site, SiteError, format_validation_error, parse_value, set_path

BASE = "base"
MAX_VARIANTS = 100_000  # variants in one study, grids included
# What a study may hold in memory: its variants' sites, parameters and results stay
# alive while it runs (5,000 variants of the small site: ~430 MB). A quarter of the
# twin pod's limit (charts/ai-factory-twin/values.yaml: 8 GiB) leaves room for the
# compiled batch and the live run.
STUDY_MEMORY_BYTES = 2 * 1024**3
VARIANT_BYTES = 90_000  # per variant, measured on the small site (8 racks)
RACK_BYTES = 2_000  # per rack of a variant: its parameter and state arrays
Precision = Literal["float32", "float64"]
APPEND = "+"  # ``path+=value`` appends to a list (a failure, a heat wave, a training job)


class StudyError(ValueError):
    """A study that cannot run; ``str()`` is one line starting with the offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Constraints(_Strict):
    """Limits every variant is checked against (None: not checked)."""

    max_gpu_temp_c: Annotated[float, Field(gt=0, le=150)] | None = 85.0
    # Grid import ramp (what the utility sees, after the battery), MW/s.
    max_ramp_mw_per_s: Annotated[float, Field(gt=0)] | None = None
    # The site's own interconnect limit: the facility peak must stay within it.
    interconnect: bool = True


class Variant(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[^\s]+$")]
    set: dict[str, Any] = Field(default_factory=dict, description="path -> value; path+ appends")


def _series_name(name: str) -> str:
    if name not in SERIES:
        raise ValueError(f"unknown series {name!r} (e.g. facility_w, it_w)")
    return name


SeriesName = Annotated[str, AfterValidator(_series_name)]


class StudySpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=80)] = "study"
    # Where the base site comes from, when the study file says it itself: a seeded
    # scenario name (or a path, on the command line), or a whole site document.
    scenario: str | None = None
    site: dict[str, Any] | None = None
    duration: str | float = "24h"
    dt: str | float = "10s"
    record_every: str | float | None = None
    granularity: Granularity = "rack"
    base: dict[str, Any] = Field(default_factory=dict, description="overrides for every variant")
    vary: dict[str, list[Any] | str] = Field(
        default_factory=dict, description="grid axes: path -> values or 'lo:hi:n'"
    )
    variants: list[Variant] = Field(default_factory=list)
    constraints: Constraints = Constraints()
    series: list[SeriesName] = Field(default_factory=list, description="returned downsampled")
    series_every: str | float = "1h"
    precision: Precision = "float32"

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        seen = {BASE}
        for v in variants:
            if v.name in seen:
                raise ValueError(f"duplicate variant name {v.name!r}")
            seen.add(v.name)
        return variants

    def seconds(self, field: str) -> float:
        return field_seconds(self, field)


def field_seconds(spec: BaseModel, field: str) -> float:
    """A duration field of a study document ("30d" or seconds) in seconds; StudyError
    names the field."""
    value = getattr(spec, field)
    try:
        return parse_duration(value) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise StudyError(f"{field}: {exc}") from None


def parse_spec(doc: Any, where: str = "study", prefix: str = "") -> StudySpec:
    """Validate a study document (a mapping); StudyError names the field (after
    ``prefix``, e.g. ``spec.`` for a protobuf request)."""
    if not isinstance(doc, dict):
        raise StudyError(f"{where}: must be a mapping of study fields")
    try:
        return StudySpec.model_validate(doc)
    except ValidationError as err:
        raise StudyError(format_validation_error(err, prefix)) from None


def parse_spec_yaml(text: str) -> StudySpec:
    return parse_spec(load_yaml(text, "study_yaml", StudyError), "study_yaml")


# --------------------------------------------------------------------------- expansion


def grid_values(path: str, spec: list[Any] | str) -> list[Any]:
    """``'28:40:7'`` -> 7 evenly spaced values from 28 to 40; ``'a,b'`` or a list: as is."""
    where = f"vary.{path}"
    if isinstance(spec, list):
        values = spec
    elif spec.count(":") == 2:
        try:
            lo, hi, n = (float(x) for x in spec.split(":"))
        except ValueError:
            raise StudyError(f"{where}: {spec!r} is not lo:hi:count (e.g. 28:40:7)") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(n)):
            raise StudyError(f"{where}: {spec!r} must be finite numbers")
        if n < 1 or n != int(n):
            raise StudyError(f"{where}: count must be a whole number >= 1, got {spec!r}")
        if n > MAX_VARIANTS:
            raise StudyError(f"{where}: at most {MAX_VARIANTS} values, got {int(n)}")
        values = [lo] if n == 1 else [float(v) for v in np.linspace(lo, hi, int(n))]
    else:
        values = [parse_value(part.strip()) for part in split_top_level(spec)]
    if not values:
        raise StudyError(f"{where}: no values")
    return values


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and braces, so YAML flow values keep their commas."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_variant_option(text: str) -> Variant:
    """``name:path=value,path+=value`` (the CLI's ``--variant``)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise StudyError(f"--variant {text!r}: expected name:path=value,...")
    overrides: dict[str, Any] = {}
    for item in split_top_level(rest):
        path, eq, value = item.partition("=")
        if not eq or not path.strip():
            raise StudyError(f"--variant {name}: {item!r} is not path=value")
        overrides[path.strip()] = parse_value(value)
    return Variant(name=name.strip(), set=overrides)


def _current(doc: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (None where the path does not exist yet)."""
    node: Any = doc
    for key in path.split("."):
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise SiteError(f"{path}: no list item {key!r} (list has {len(node)} items)")
            node = node[int(key)]
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
    return node


def apply_overrides(doc: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Dotted-path overrides into a site document; ``path+`` appends to a list."""
    for path, value in overrides.items():
        try:
            if path.endswith(APPEND):
                target = path[: -len(APPEND)]
                current = _current(doc, target)
                if current is not None and not isinstance(current, list):
                    kind = type(current).__name__
                    raise SiteError(f"{target}: is a {kind}, not a list: use = to set it")
                items = [*(current or []), *(value if isinstance(value, list) else [value])]
                set_path(doc, target, items)
            else:
                set_path(doc, path, value)
        except SiteError as exc:
            raise StudyError(f"{where}: {exc}") from None


def expand(spec: StudySpec) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides on top of ``spec.base``) of every variant, the base first."""
    out: list[tuple[str, dict[str, Any]]] = [(BASE, {})]
    out += [(v.name, dict(v.set)) for v in spec.variants]
    if spec.vary:
        axes = [(path, grid_values(path, values)) for path, values in spec.vary.items()]
        count = math.prod(len(values) for _, values in axes)
        if count + len(out) > MAX_VARIANTS:
            raise StudyError(f"vary: {count} grid points; a study holds at most {MAX_VARIANTS}")
        names = {name for name, _ in out}
        for point in itertools.product(*(values for _, values in axes)):
            chosen = {path: value for (path, _), value in zip(axes, point, strict=True)}
            name = ",".join(f"{path}={_fmt(value)}" for path, value in chosen.items())
            if name in names:
                raise StudyError(f"vary: variant {name!r} twice (a repeated value, or a name)")
            names.add(name)
            out.append((name, chosen))
    return out


def _fmt(value: Any) -> str:
    """A grid value in a variant name: short, but never two values under one name."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def variant_bytes(site: Site, granularity: Granularity = "rack") -> int:
    """Estimated memory one variant of ``site`` holds while its study runs."""
    units = site.gpu_count if granularity == "gpu" else site.rack_count
    return VARIANT_BYTES + RACK_BYTES * units


def check_memory(
    base_site: Site, spec: StudySpec, count: int, budget: int = STUDY_MEMORY_BYTES
) -> None:
    """StudyError when ``count`` variants would not fit the study memory budget."""
    each = variant_bytes(base_site, spec.granularity)
    if count * each > budget:
        raise StudyError(
            f"variants: {count} variants of a {base_site.rack_count}-rack site need "
            f"~{count * each / 2**20:.0f} MiB; at most {max(1, budget // each)} fit "
            f"the study memory budget of {budget / 2**20:.0f} MiB"
        )


def variant_sites(
    base_site: Site, spec: StudySpec, budget: int = STUDY_MEMORY_BYTES
) -> list[tuple[str, dict[str, Any], Site]]:
    """Every variant's validated site; StudyError names the variant and the field, or
    the variant count when the study would not fit ``budget`` bytes."""
    from twin_core.site import build_site

    base_doc = base_site.model_dump()
    try:
        apply_overrides(base_doc, spec.base, "base")
    except StudyError:
        raise
    except (KeyError, IndexError, TypeError) as exc:
        raise StudyError(f"base: cannot apply override ({exc})") from None
    variants = expand(spec)
    check_memory(base_site, spec, len(variants), budget)
    out = []
    for name, overrides in variants:
        where = "base" if name == BASE else f"variants.{name}"
        doc = copy.deepcopy(base_doc)
        try:
            apply_overrides(doc, overrides, where)
            site = build_site(doc, None, base_site.base_dir)
        except StudyError:
            raise
        except SiteError as exc:
            raise StudyError(f"{where}: {exc}") from None
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise StudyError(f"{where}: cannot apply override ({exc})") from None
        out.append((name, overrides, site))
    return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ConstraintCheck:
    """One constraint on one variant: the KPI's ``value`` against its ``limit`` (both in
    the KPI's unit); ``passed`` allows a relative 1e-6 over the limit."""

    value: float
    limit: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "limit": self.limit, "passed": self.passed}


def check_constraints(
    kpis: dict[str, float], site: Site, c: Constraints
) -> dict[str, ConstraintCheck]:
    """KPI name -> its check, for each configured constraint."""
    checks = {}
    if c.max_gpu_temp_c is not None:
        checks["max_gpu_temp_c"] = (kpis["max_gpu_temp_c"], c.max_gpu_temp_c)
    if c.max_ramp_mw_per_s is not None:  # the utility's limit: grid import, after the battery
        checks["max_grid_ramp_mw_per_s"] = (kpis["max_grid_ramp_mw_per_s"], c.max_ramp_mw_per_s)
    if c.interconnect:
        checks["peak_facility_mw"] = (kpis["peak_facility_mw"], site.power.interconnect_limit_mw)
    return {
        name: ConstraintCheck(value, limit, bool(value <= limit * (1 + 1e-6)))
        for name, (value, limit) in checks.items()
    }


def checks_to_dict(checks: dict[str, ConstraintCheck]) -> dict[str, dict[str, Any]]:
    return {name: c.to_dict() for name, c in checks.items()}


@dataclass(frozen=True)
class VariantResult:
    """One variant of a study.

    ``overrides``: its dotted-path overrides on top of the study's base (``path+``
    appends); ``racks``/``gpus``: its size; ``kpis``: every KPI (units in
    ``StudyResult.kpi_units``); ``deltas``: each KPI minus the base variant's;
    ``constraints``: KPI name -> check; ``passed``: every check passed; ``series``: the
    study's requested series, means over ``StudyResult.series_every_s`` (empty if none
    were requested)."""

    name: str
    overrides: dict[str, Any]
    racks: int
    gpus: int
    kpis: dict[str, float]
    deltas: dict[str, float]
    constraints: dict[str, ConstraintCheck]
    passed: bool
    series: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "overrides": self.overrides,
            "racks": self.racks,
            "gpus": self.gpus,
            "kpis": self.kpis,
            "deltas": self.deltas,
            "constraints": checks_to_dict(self.constraints),
            "passed": self.passed,
        }
        if self.series:
            out["series"] = self.series
        return out


@dataclass(frozen=True)
class StudyResult:
    """A study's outcome: ``variants`` in order, the base first.

    ``site``: the base site's name; ``duration_s``/``dt_s``: simulated time and coupling
    interval; ``series_every_s``: the interval of the variants' series (None when none
    were requested); ``kpi_units``: KPI name -> unit."""

    name: str
    site: str
    duration_s: float
    dt_s: float
    granularity: Granularity
    precision: Precision
    series_every_s: float | None
    kpi_units: dict[str, str]
    variants: tuple[VariantResult, ...]

    @property
    def base(self) -> VariantResult:
        return self.variants[0]

    def variant(self, name: str) -> VariantResult:
        """The variant called ``name`` (KeyError if there is none)."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the format of the CLI's study.json)."""
        return {
            "name": self.name,
            "site": self.site,
            "duration_s": self.duration_s,
            "dt_s": self.dt_s,
            "granularity": self.granularity,
            "precision": self.precision,
            "series_every_s": self.series_every_s,
            "kpi_units": dict(self.kpi_units),
            "variants": [v.to_dict() for v in self.variants],
        }


def downsample(result: Result, names: list[str], every_s: float) -> dict[str, list[float]]:
    """Means over ``every_s`` (a whole number of recording intervals) of each series."""
    factor = max(1, round(every_s / result.record_s))
    out = {}
    for name in names:
        values = np.asarray(result.means[name], dtype=np.float64)
        n = len(values) // factor * factor
        if n == 0:
            out[name] = [float(values.mean())] if len(values) else []
            continue
        out[name] = values[:n].reshape(-1, factor).mean(axis=1).tolist()
    return out


def timing(spec: StudySpec) -> tuple[float, float, float | None]:
    """(duration, dt, record interval) in seconds, checked against each other."""
    horizon, dt = spec.seconds("duration"), spec.seconds("dt")
    record_s = None if spec.record_every is None else spec.seconds("record_every")
    try:
        steps_per_hour(dt)
        plan(horizon, dt, record_s)
    except ValueError as exc:  # SiteError included
        raise StudyError(str(exc)) from None
    return horizon, dt, record_s


def prepare(
    base_site: Site, spec: StudySpec, budget: int = STUDY_MEMORY_BYTES
) -> list[tuple[str, dict[str, Any], Site]]:
    """Check everything that can be checked before running: times, the memory the
    variants need, and every variant."""
    timing(spec)
    return variant_sites(base_site, spec, budget)


def run_study(
    base_site: Site,
    spec: StudySpec,
    *,
    progress: Callable[[float, int], None] | None = None,
    chunk: int | None = None,
    segments: int = 1,
    variants: list[tuple[str, dict[str, Any], Site]] | None = None,
    runner: BatchRunner = run_batch,
) -> StudyResult:
    """Run every variant of ``spec`` in one batched rollout.

    ``progress(done, total)`` reports variants done (fractional inside a chunk advanced in
    ``segments`` calls). ``variants``: the output of ``variant_sites`` when the caller
    validated the study already. ``runner``: what advances the variants' parameters
    (``run_batch`` here; services/study_cluster.py sends chunks to Dask workers)."""
    horizon, dt, record_s = timing(spec)
    series_every = spec.seconds("series_every")
    variants = variants or variant_sites(base_site, spec)
    total = len(variants)

    def advance(done: float) -> None:
        if progress:
            progress(done, total)

    dtype = jnp.float64 if spec.precision == "float64" else jnp.float32
    sites = [site for _, _, site in variants]
    try:
        results = simulate_sites(
            sites,
            horizon,
            dt,
            record_s,
            granularity=spec.granularity,
            dtype=dtype,
            chunk=chunk,
            progress=advance,
            segments=segments,
            runner=runner,
        )
    except SiteError as exc:
        raise StudyError(str(exc)) from None
    base_kpis = results[0].kpis
    rows = []
    for (name, overrides, site), result in zip(variants, results, strict=True):
        checks = check_constraints(result.kpis, site, spec.constraints)
        rows.append(
            VariantResult(
                name=name,
                overrides=overrides,
                racks=site.rack_count,
                gpus=site.gpu_count,
                kpis=result.kpis,
                deltas={k: result.kpis[k] - base_kpis[k] for k in result.kpis},
                constraints=checks,
                passed=all(c.passed for c in checks.values()),
                series=downsample(result, spec.series, series_every) if spec.series else {},
            )
        )
    return StudyResult(
        name=spec.name,
        site=base_site.name,
        duration_s=horizon,
        dt_s=dt,
        granularity=spec.granularity,
        precision=spec.precision,
        series_every_s=series_every if spec.series else None,
        kpi_units=dict(KPI_UNITS),
        variants=tuple(rows),
    )
