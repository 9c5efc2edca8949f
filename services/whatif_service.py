"""``twin.whatif.v1.WhatIfService`` on ``grpc.aio``, served by the twin service.

Studies are validated completely before they are accepted (every variant's site is
built), so a bad study is INVALID_ARGUMENT naming the field and never a failed run. The
batched rollout runs in a worker thread, one study at a time (a second waits: two
compilations of a large site would compete for the same cores and memory); progress
crosses to the RPC's stream through the event loop. A client that disconnects does not
stop its study: GetStudy finds it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
import jax
import psycopg
import yaml
from grpc import aio
from pydantic import ValidationError

from services.scenario import (
    check_files,
    inline_base_dir,
    seeded_site,
    site_from_yaml,
    trusted_files,
)
from services.whatif_store import StudyStore
from twin.whatif.v1 import whatif_pb2, whatif_pb2_grpc
from twin_core import (
    ConstraintCheck,
    Constraints,
    Objective,
    Site,
    SiteError,
    StudyError,
    StudyResult,
    StudySpec,
    build_site,
    optimize,
    parse_spec,
    parse_spec_yaml,
    run_study,
    sensitivities,
    with_overrides,
)
from twin_core.durations import parse_duration
from twin_core.inputs import clip, load_yaml
from twin_core.montecarlo import (
    MonteCarloResult,
    MonteCarloSpec,
    parse_monte_carlo,
    run_monte_carlo,
)
from twin_core.reliability import CLASSES
from twin_core.site import format_validation_error, parse_value
from twin_core.study import APPEND, BASE, prepare

if TYPE_CHECKING:  # distributed is an extra: imported only where a scheduler is named
    from services.study_cluster import DaskTarget

log = logging.getLogger(__name__)

GRANULARITIES = {
    whatif_pb2.GRANULARITY_UNSPECIFIED: "rack",
    whatif_pb2.GRANULARITY_RACK: "rack",
    whatif_pb2.GRANULARITY_GPU: "gpu",
}
OBJECTIVES: dict[int, Objective] = {
    whatif_pb2.OBJECTIVE_UNSPECIFIED: "facility_energy_mwh",
    whatif_pb2.OBJECTIVE_FACILITY_ENERGY: "facility_energy_mwh",
    whatif_pb2.OBJECTIVE_COST: "cost_usd",
    whatif_pb2.OBJECTIVE_EMISSIONS: "emissions_tco2",
}
SWEEPS = {
    whatif_pb2.FAILURE_SWEEP_UNSPECIFIED: "monte_carlo",
    whatif_pb2.FAILURE_SWEEP_MONTE_CARLO: "monte_carlo",
    whatif_pb2.FAILURE_SWEEP_N_MINUS_1: "n-1",
    whatif_pb2.FAILURE_SWEEP_N_MINUS_2: "n-2",
}
SWEEP_ENUMS = {name: number for number, name in SWEEPS.items() if number}
MAX_LIST = 1000
MAX_ITERATIONS = 500
PROGRESS_SEGMENTS = 10  # progress messages per batch of variants


class BadRequest(ValueError):
    """Becomes INVALID_ARGUMENT; the message starts with the field."""


# --------------------------------------------------------------------------- requests


def overrides_to_dict(items, field: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        if not item.path.strip():
            raise BadRequest(f"{field}.{i}.path: empty")
        try:
            value = parse_value(item.value)
        except SiteError as exc:
            raise BadRequest(f"{field}.{i}.value: {exc}") from None
        out[item.path.strip() + (APPEND if item.append else "")] = value
    return out


def constraints_to_dict(c: whatif_pb2.Constraints) -> dict[str, Any]:
    out: dict[str, Any] = {"interconnect": not c.ignore_interconnect}
    if c.HasField("max_gpu_temp_c"):
        out["max_gpu_temp_c"] = c.max_gpu_temp_c
    if c.HasField("max_ramp_mw_per_s"):
        out["max_ramp_mw_per_s"] = c.max_ramp_mw_per_s
    return out


def spec_to_doc(spec: whatif_pb2.StudySpec) -> dict[str, Any]:
    """A protobuf study as the study document the YAML form gives."""
    doc: dict[str, Any] = {}
    if spec.name:
        doc["name"] = spec.name
    which = spec.scenario.WhichOneof("source")
    if which == "name":
        doc["scenario"] = spec.scenario.name
    elif which == "yaml":
        doc["site"] = load_yaml(spec.scenario.yaml, "spec.scenario.yaml", BadRequest)
        if not isinstance(doc["site"], dict):
            raise BadRequest("spec.scenario.yaml: must be a site document (a mapping)")
    for key in ("duration", "dt", "record_every", "series_every"):
        if getattr(spec, key):
            doc[key] = getattr(spec, key)
    doc["granularity"] = GRANULARITIES.get(spec.granularity)
    if doc["granularity"] is None:
        raise BadRequest(f"spec.granularity: unknown value {spec.granularity}")
    doc["base"] = overrides_to_dict(spec.base, "spec.base")
    vary: dict[str, Any] = {}
    for i, axis in enumerate(spec.vary):
        if not axis.path.strip():
            raise BadRequest(f"spec.vary.{i}.path: empty")
        if bool(axis.values) == bool(axis.range):
            raise BadRequest(f"spec.vary.{i}: give values or range (one of them)")
        try:
            vary[axis.path.strip()] = [parse_value(v) for v in axis.values] or axis.range
        except SiteError as exc:
            raise BadRequest(f"spec.vary.{i}.values: {exc}") from None
    doc["vary"] = vary
    doc["variants"] = [
        {"name": v.name, "set": overrides_to_dict(v.overrides, f"spec.variants.{i}.overrides")}
        for i, v in enumerate(spec.variants)
    ]
    doc["constraints"] = constraints_to_dict(spec.constraints)
    doc["series"] = list(spec.series)
    doc["precision"] = "float64" if spec.float64 else "float32"
    return doc


def base_site(spec: StudySpec, field: str, default: Site | None = None) -> Site:
    """The study's base site: a seeded scenario by name, an inline site document (its
    relative file names resolve in the data directory), or the site this service was
    configured with. Files are checked on every merged variant (``check_variant_files``)."""
    if spec.site is not None and spec.scenario is not None:
        raise BadRequest(f"{field}: give a scenario name or a site, not both")
    if spec.site is not None:
        return build_site(spec.site, None, inline_base_dir())
    if spec.scenario is not None:
        return seeded_site(spec.scenario, f"{field}.name" if field.endswith("scenario") else field)
    if default is not None:
        return default
    raise BadRequest(f"{field}: give a seeded scenario name or a site document")


def study_from_request(request: whatif_pb2.RunStudyRequest) -> tuple[StudySpec, str]:
    which = request.WhichOneof("study")
    if which == "spec":
        return parse_spec(spec_to_doc(request.spec), "spec", "spec."), "spec.scenario"
    if which == "study_yaml":
        return parse_spec_yaml(request.study_yaml), "study_yaml.scenario"
    raise BadRequest("study: give spec or study_yaml")


def check_precision(float64: bool, field: str) -> None:
    if float64 and not jax.config.read("jax_enable_x64"):
        raise BadRequest(f"{field}: this service runs in float32 (start it with TWIN_X64=1)")


def check_variant_files(variants, trusted: frozenset) -> None:
    """Every variant's fully merged site names files only in the data directory."""
    for name, _, site in variants:
        check_files(site, "base." if name == BASE else f"variants.{name}.", trusted)


def rollout_site(
    r: whatif_pb2.Rollout, trusted: frozenset = frozenset()
) -> tuple[Site, float, float]:
    which = r.scenario.WhichOneof("source")
    if which == "name":
        site = seeded_site(r.scenario.name, "rollout.scenario.name")
    elif which == "yaml":
        site = site_from_yaml(r.scenario.yaml, "rollout.scenario.yaml")
    else:
        raise BadRequest("rollout.scenario: give name or yaml")
    overrides = overrides_to_dict(r.overrides, "rollout.overrides")
    if any(path.endswith(APPEND) for path in overrides):
        raise BadRequest("rollout.overrides: append is for studies only")
    site = check_files(with_overrides(site, overrides), "rollout.", trusted)
    check_precision(r.float64, "rollout.float64")
    return (
        site,
        _duration(r.duration or "24h", "rollout.duration"),
        _duration(r.dt or "10s", "rollout.dt"),
    )


def _duration(text: str, field: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}") from None


def monte_carlo_spec(r: whatif_pb2.RunMonteCarloRequest) -> MonteCarloSpec:
    """A RunMonteCarloRequest as a checked failure study; BadRequest/StudyError name the
    field."""
    sweep = SWEEPS.get(r.sweep)
    if sweep is None:
        raise BadRequest(f"sweep: unknown value {r.sweep}")
    doc: dict[str, Any] = {"sweep": sweep, "seed": r.seed}
    if sweep == "monte_carlo":
        doc["samples"] = r.samples
    for key in ("duration", "dt", "record_every"):
        if getattr(r, key):
            doc[key] = getattr(r, key)
    if r.classes:
        doc["classes"] = list(r.classes)
    rates: dict[str, Any] = {}
    for i, rate in enumerate(r.rates):
        if rate.equipment not in CLASSES:
            known = ", ".join(CLASSES)
            raise BadRequest(
                f"rates.{i}.equipment: unknown equipment class {clip(rate.equipment)!r} "
                f"(known: {known})"
            )
        rates[rate.equipment] = {"mtbf_h": rate.mtbf_h, "mttr_h": rate.mttr_h}
    doc["rates"] = rates
    doc["precision"] = "float64" if r.float64 else "float32"
    return parse_monte_carlo(doc)


def monte_carlo_site(r: whatif_pb2.RunMonteCarloRequest, trusted: frozenset) -> Site:
    which = r.scenario.WhichOneof("source")
    if which == "name":
        site = seeded_site(r.scenario.name, "scenario.name")
    elif which == "yaml":
        site = site_from_yaml(r.scenario.yaml, "scenario.yaml")
    else:
        raise BadRequest("scenario: give name or yaml")
    return check_files(site, "scenario.", trusted)


def monte_carlo_reply(result: MonteCarloResult) -> whatif_pb2.RunMonteCarloResponse:
    reply = whatif_pb2.RunMonteCarloResponse(
        name=result.name,
        site_id=result.site,
        sweep=SWEEP_ENUMS[result.sweep],
        duration_s=result.duration_s,
        dt_s=result.dt_s,
        wall_s=result.wall_s,
    )
    reply.base.update(result.base)
    for metric, d in result.distributions.items():
        reply.distributions.add(metric=metric, unit=result.metric_units[metric], **d.to_dict())
    for c in result.contributions:
        reply.contributions.add(**c.to_dict())
    for cls, (sampled, analytic) in result.unavailability.items():
        reply.unavailability.add(equipment=cls, sampled=sampled, analytic=analytic)
    for case in result.cases:
        reply.cases.add(
            name=case.name, failed=list(case.failed), critical=case.critical
        ).metrics.update(case.metrics)
    return reply


# --------------------------------------------------------------------------- results


def override_messages(overrides: dict[str, Any]) -> list[whatif_pb2.Override]:
    out = []
    for path, value in overrides.items():
        append = path.endswith(APPEND)
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        text = text.removesuffix("\n...").strip()
        out.append(whatif_pb2.Override(path=path.removesuffix(APPEND), value=text, append=append))
    return out


def fill_study(study: whatif_pb2.Study, result: StudyResult) -> None:
    study.duration_s = result.duration_s
    study.dt_s = result.dt_s
    study.kpi_units.update(result.kpi_units)
    for row in result.variants:
        v = study.variants.add(
            name=row.name,
            racks=row.racks,
            gpus=row.gpus,
            passed=row.passed,
            overrides=override_messages(row.overrides),
            constraints=constraint_messages(row.constraints),
        )
        v.kpis.update(row.kpis)
        v.deltas.update(row.deltas)
        for name, values in row.series.items():
            v.series.add(name=name, values=values)


def constraint_messages(checks: dict[str, ConstraintCheck]) -> list[whatif_pb2.ConstraintCheck]:
    return [
        whatif_pb2.ConstraintCheck(name=n, value=c.value, limit=c.limit, passed=c.passed)
        for n, c in checks.items()
    ]


# --------------------------------------------------------------------------- service


def release_memory() -> None:
    """Collect, then hand freed heap pages back to the system (glibc keeps them)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _scheduler() -> DaskTarget | None:
    """The Dask scheduler TWIN_DASK_SCHEDULER names (the chart's study workers), or None
    to run here; a bad address stops the service at start, naming the variable."""
    if not os.environ.get("TWIN_DASK_SCHEDULER", "").strip():
        return None
    from services.study_cluster import target_from_env

    return target_from_env()


def study_runner() -> Callable[..., StudyResult]:
    """``run_study`` here, or on the Dask scheduler TWIN_DASK_SCHEDULER names."""
    if (target := _scheduler()) is None:
        return run_study
    from services.study_cluster import run_study_on_target

    return functools.partial(run_study_on_target, target)


def monte_carlo_runner() -> Callable[..., MonteCarloResult]:
    """``run_monte_carlo`` here, or its chunks on the scheduler TWIN_DASK_SCHEDULER names."""
    if (target := _scheduler()) is None:
        return run_monte_carlo
    from services.study_cluster import run_monte_carlo_on_target

    return functools.partial(run_monte_carlo_on_target, target)


class WhatIfServicer(whatif_pb2_grpc.WhatIfServiceServicer):
    """``default_site``: the site a study without a scenario runs on (TWIN_SCENARIO)."""

    def __init__(self, store: StudyStore | None = None, default_site: Site | None = None) -> None:
        self.run_study = study_runner()
        self.run_monte_carlo = monte_carlo_runner()
        self.store = store or StudyStore()
        self.default_site = default_site
        self._trusted = trusted_files(default_site)  # the operator's own files
        self._one_at_a_time = asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task] = set()

    @property
    def lock(self) -> asyncio.Semaphore:
        """One model at a time in this process (calibrations take it too)."""
        return self._one_at_a_time

    async def _invalid(self, context: aio.ServicerContext, exc: Exception) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def RunStudy(self, request, context: aio.ServicerContext):
        try:
            spec, field = study_from_request(request)
            precision = "spec.float64" if field.startswith("spec") else "study_yaml.precision"
            check_precision(spec.precision == "float64", precision)
            site = base_site(spec, field, self.default_site)
            variants = await asyncio.to_thread(prepare, site, spec)
            check_variant_files(variants, self._trusted)
        except (BadRequest, StudyError, SiteError) as exc:
            await self._invalid(context, exc)
            return
        study = whatif_pb2.Study(
            study_id=str(uuid.uuid4()),
            name=spec.name,
            site_id=site.name,
            state=whatif_pb2.STUDY_STATE_RUNNING,
            study_yaml=yaml.safe_dump(spec.model_dump(exclude={"site"}), sort_keys=False),
        )
        study.created_at.GetCurrentTime()
        await self.store.put(study, len(variants))
        yield whatif_pb2.RunStudyResponse(
            accepted=whatif_pb2.StudyAccepted(study_id=study.study_id, variants=len(variants))
        )
        events: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(self._run(study, site, spec, variants, events))
        variants = None  # the task holds them until the study ends, then lets them go
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while True:
            event = await events.get()
            if event is None:
                break
            yield whatif_pb2.RunStudyResponse(progress=event)
        final = await task
        if final.state == whatif_pb2.STUDY_STATE_FAILED:
            await context.abort(grpc.StatusCode.INTERNAL, f"study failed: {final.error}")
        yield whatif_pb2.RunStudyResponse(result=final)

    async def _run(self, study, site, spec, variants, events: asyncio.Queue):
        loop = asyncio.get_running_loop()
        total = len(variants)
        async with self._one_at_a_time:
            start = time.perf_counter()

            def progress(done: float, total: int) -> None:
                message = whatif_pb2.StudyProgress(
                    study_id=study.study_id,
                    variants_done=done,
                    variants_total=total,
                    elapsed_s=time.perf_counter() - start,
                )
                loop.call_soon_threadsafe(events.put_nowait, message)

            try:
                result = await asyncio.to_thread(
                    self.run_study,
                    site,
                    spec,
                    progress=progress,
                    segments=PROGRESS_SEGMENTS,
                    variants=variants,
                )
                fill_study(study, result)
                study.state = whatif_pb2.STUDY_STATE_DONE
            except (StudyError, SiteError) as exc:  # one line naming the field
                log.warning("study %s failed: %s", study.study_id, exc)
                study.state = whatif_pb2.STUDY_STATE_FAILED
                study.error = str(exc)
            except Exception:  # a model failure is the study's; its text stays in the log
                log.exception("study %s failed", study.study_id)
                study.state = whatif_pb2.STUDY_STATE_FAILED
                study.error = "the model failed (logged on the server)"
            finally:
                # A large study's sites and results go back to the system, not to a
                # heap the process keeps.
                variants = None
                release_memory()
            study.wall_s = time.perf_counter() - start
        events.put_nowait(None)
        await self.store.put(study, total)
        log.info("study %s %s in %.1f s", study.study_id, study.state, study.wall_s)
        return study

    async def GetStudy(self, request, context: aio.ServicerContext):
        if not request.study_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "study_id: empty")
        try:
            study = await self.store.get(request.study_id)
        except psycopg.Error as exc:  # not in memory, and the database is away
            log.warning("study store unavailable: %s", exc)  # its text stays in the log
            await context.abort(grpc.StatusCode.UNAVAILABLE, "history database unavailable")
        if study is None:
            missing = f"study_id: no study {clip(request.study_id)!r}"
            await context.abort(grpc.StatusCode.NOT_FOUND, missing)
        return whatif_pb2.GetStudyResponse(study=study)

    async def ListStudies(self, request, context: aio.ServicerContext):
        if not 0 <= request.limit <= MAX_LIST:
            problem = f"limit: must be 0..{MAX_LIST}, got {request.limit}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        studies = await self.store.list(request.limit or 100)
        return whatif_pb2.ListStudiesResponse(studies=studies)

    async def Sensitivities(self, request, context: aio.ServicerContext):
        try:
            site, horizon, dt = rollout_site(request.rollout, self._trusted)
            dtype = jax.numpy.float64 if request.rollout.float64 else jax.numpy.float32
            async with self._one_at_a_time:
                out = await asyncio.to_thread(
                    sensitivities,
                    site,
                    kpis=list(request.kpis),
                    wrt=list(request.parameters),
                    horizon_s=horizon,
                    dt=dt,
                    dtype=dtype,
                    field="parameters",
                )
        except (BadRequest, SiteError, ValueError) as exc:
            await self._invalid(context, exc)
            return None
        reply = whatif_pb2.SensitivitiesResponse()
        reply.at.update(out.at)
        for kpi, grads in out.gradients.items():
            reply.kpis.add(kpi=kpi, value=out.values[kpi]).gradient.update(grads)
        return reply

    async def Optimize(self, request, context: aio.ServicerContext):
        try:
            site, horizon, dt = rollout_site(request.rollout, self._trusted)
            objective = OBJECTIVES.get(request.objective)
            if objective is None:
                raise BadRequest(f"objective: unknown value {request.objective}")
            if not 0 <= request.iterations <= MAX_ITERATIONS:
                raise BadRequest(f"iterations: must be 0..{MAX_ITERATIONS}")
            bounds = {}
            for i, b in enumerate(request.bounds):
                if b.parameter in bounds:
                    raise BadRequest(f"bounds.{i}.parameter: {clip(b.parameter)!r} given twice")
                bounds[b.parameter] = (b.lower, b.upper)
            try:
                constraints = Constraints(**constraints_to_dict(request.constraints))
            except ValidationError as exc:
                raise BadRequest(format_validation_error(exc, "constraints.")) from None
            dtype = jax.numpy.float64 if request.rollout.float64 else jax.numpy.float32
            async with self._one_at_a_time:
                out = await asyncio.to_thread(
                    optimize,
                    site,
                    objective,
                    bounds=bounds,
                    constraints=constraints,
                    horizon_s=horizon,
                    dt=dt,
                    iterations=request.iterations or 40,
                    dtype=dtype,
                    field="bounds",
                )
        except (BadRequest, SiteError, ValueError) as exc:
            await self._invalid(context, exc)
            return None
        reply = whatif_pb2.OptimizeResponse(
            start_objective=out.start.objective,
            best_objective=out.best.objective,
            feasible=out.best.feasible,
            constraints=constraint_messages(out.best.constraints),
            objective_trace=[s.objective for s in out.iterations],
        )
        reply.start.update(out.start.x)
        reply.best.update(out.best.x)
        return reply

    async def RunMonteCarlo(self, request, context: aio.ServicerContext):
        try:
            spec = monte_carlo_spec(request)
            check_precision(request.float64, "float64")
            site = monte_carlo_site(request, self._trusted)
            async with self._one_at_a_time:
                start = time.perf_counter()
                result = await asyncio.to_thread(self.run_monte_carlo, site, spec)
                wall = time.perf_counter() - start
        except (BadRequest, StudyError, SiteError) as exc:
            await self._invalid(context, exc)
            return None
        reply = monte_carlo_reply(result)
        reply.wall_s = wall
        return reply


def add_to_server(
    server, store: StudyStore | None = None, default_site: Site | None = None
) -> WhatIfServicer:
    servicer = WhatIfServicer(store, default_site)
    server.add_servicer(whatif_pb2_grpc.add_WhatIfServiceServicer_to_server, servicer)
    return servicer
