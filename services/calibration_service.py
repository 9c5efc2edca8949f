"""``twin.calibration.v1.CalibrationService`` on ``grpc.aio``, served by the twin service
beside the what-if service (the same JAX process, and the same one-at-a-time lock: a
fit and a study would compete for the same cores and memory).

A request is checked whole before it is accepted (the site, the measured window read
from the history database, every parameter and its bounds), so a bad one is
INVALID_ARGUMENT naming the field, never a failed fit. The fit runs in a worker thread;
each accepted Gauss-Newton step crosses to the stream through the event loop. The
result is stored with the run it was fitted on (``calibration_store``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import grpc
import jax
import numpy as np
import psycopg
from grpc import aio

from services.calibration_record import fill, new_record
from services.calibration_store import CalibrationStore
from services.historian.queries import QueryError, RunNotFound
from services.measured_series import MeasuredFileError, measured_from_run
from services.scenario import SCENARIOS, check_files, site_from_yaml, trusted_files
from services.scenario import seeded_site as seeded
from twin.calibration.v1 import calibration_pb2 as pb
from twin.calibration.v1 import calibration_pb2_grpc
from twin_core.calibrate import Calibration, Measured, check
from twin_core.calibrate import calibrate as fit_site
from twin_core.calibrated_file import calibrated_site_text
from twin_core.durations import parse_duration
from twin_core.inputs import clip, load_yaml
from twin_core.site import Site, SiteError

log = logging.getLogger(__name__)

MAX_ITERATIONS = 200
MAX_LIST = 1000


class BadRequest(ValueError):
    """Becomes INVALID_ARGUMENT; the message starts with the field."""


@dataclass(frozen=True)
class Job:
    """A checked request: everything the fit needs."""

    site: Site
    doc: dict[str, Any]
    base_name: str
    measured: Measured
    offset_s: float
    run_id: str
    fit: dict[str, tuple[float, float]]
    dt: float
    stats_s: float
    noise: dict[str, float]
    iterations: int
    reference_dt: float | None


def _duration(text: str, default: str, field: str) -> float:
    try:
        value = parse_duration(text or default)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}") from None
    if not (math.isfinite(value) and value > 0):
        raise BadRequest(f"{field}: must be positive")
    return value


def _site(request: pb.CalibrateRequest, trusted: frozenset) -> tuple[Site, dict, str]:
    which = request.scenario.WhichOneof("source")
    if which == "name":
        site = seeded(request.scenario.name, "scenario.name")
        path = SCENARIOS / f"{request.scenario.name}.yaml"
        return site, load_yaml(path.read_text(), str(path), SiteError), path.name
    if which == "yaml":
        site = site_from_yaml(request.scenario.yaml, "scenario.yaml")
        site = check_files(site, "scenario.", trusted)
        return site, load_yaml(request.scenario.yaml, "scenario.yaml", BadRequest), "the request"
    raise BadRequest("scenario: give name or yaml")


def _series(m: pb.MeasuredSeries) -> Measured:
    if not m.series:
        raise BadRequest("series.series: give at least one quantity")
    names = [s.quantity for s in m.series]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise BadRequest(f"series.series.{i}.quantity: {clip(name)!r} given twice")
    try:
        series = {s.quantity: np.asarray(s.values, np.float64) for s in m.series}
        return Measured(m.step_s, series, start_s=m.start_s)
    except ValueError as exc:
        message = str(exc)  # Measured names ``measured`` or ``measured.<quantity>``
        raise BadRequest("series" + message.removeprefix("measured")) from None


def _fit(items) -> dict[str, tuple[float, float]]:
    if not items:
        raise BadRequest("fit: give at least one parameter")
    out: dict[str, tuple[float, float]] = {}
    for i, p in enumerate(items):
        if not p.path.strip():
            raise BadRequest(f"fit.{i}.path: empty")
        if p.path in out:
            raise BadRequest(f"fit.{i}.path: {clip(p.path)!r} given twice")
        out[p.path] = (p.lower, p.upper)
    return out


def check_request(
    request: pb.CalibrateRequest, database_url: str | None, trusted: frozenset
) -> Job:
    """The request checked whole (blocking: it reads the run's measurements). Raises
    BadRequest, SiteError, MeasuredFileError or QueryError (INVALID_ARGUMENT),
    RunNotFound (NOT_FOUND), psycopg.Error (UNAVAILABLE)."""
    site, doc, base_name = _site(request, trusted)
    step = _duration(request.dt, "10s", "dt")
    stats_s = _duration(request.stats, "1h", "stats")
    reference = (
        _duration(request.reference_dt, "", "reference_dt") if request.reference_dt else None
    )
    if not 0 <= request.max_iterations <= MAX_ITERATIONS:
        raise BadRequest(f"max_iterations: must be 0..{MAX_ITERATIONS}")
    fit = _fit(request.fit)
    which = request.WhichOneof("measured")
    offset, run_id = 0.0, ""
    if which == "run":
        if not database_url:
            raise BadRequest("run: this service has no history database (TWIN_DATABASE_URL)")
        run = request.run
        resolution = _duration(request.resolution, "1m", "resolution")
        try:
            got = measured_from_run(
                database_url,
                run.run_id,
                site,
                start_s=run.start_s if run.HasField("start_s") else None,
                end_s=run.end_s if run.HasField("end_s") else None,
                step_s=resolution,
                where="run.run_id",
            )
        except QueryError as exc:
            raise QueryError(f"run.{exc.field}", str(exc).split(": ", 1)[1]) from None
        measured, offset, run_id = got.measured, got.offset_s, run.run_id
    elif which == "series":
        measured = _series(request.series)
    else:
        raise BadRequest("measured: give run or series")
    noise = dict(request.noise)
    iterations = request.max_iterations or 20
    try:
        check(site, measured, fit=fit, dt=step, noise=noise, stats_s=stats_s,
              max_iterations=iterations, reference_dt=reference)  # fmt: skip
    except ValueError as exc:
        raise BadRequest(_field(str(exc))) from None
    return Job(site, doc, base_name, measured, offset, run_id, fit, step, stats_s, noise,
               iterations, reference)  # fmt: skip


def _field(message: str) -> str:
    """calibrate's field names as the request's: ``duration`` is the window's length,
    ``stats_s`` is ``stats``, ``measured`` is the series or the run."""
    for old, new in (("duration:", "dt:"), ("record_every:", "dt:"), ("stats_s:", "stats:")):
        if message.startswith(old):
            return new + message.removeprefix(old)
    return message


class CalibrationServicer(calibration_pb2_grpc.CalibrationServiceServicer):
    """``lock``: shared with the what-if service so that one model runs at a time."""

    def __init__(
        self,
        store: CalibrationStore | None = None,
        default_site: Site | None = None,
        lock: asyncio.Semaphore | None = None,
    ) -> None:
        self.store = store or CalibrationStore()
        self._trusted = trusted_files(default_site)
        self._lock = lock or asyncio.Semaphore(1)
        self._tasks: set[asyncio.Task] = set()

    async def Calibrate(self, request, context: aio.ServicerContext):
        url = self.store.database_url
        try:
            job = await asyncio.to_thread(check_request, request, url, self._trusted)
        except (BadRequest, SiteError, MeasuredFileError, QueryError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        except RunNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run.{exc}")
            return
        except psycopg.Error as exc:
            log.warning("measurements unavailable: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "history database unavailable")
            return
        c = new_record(job.site.name, job.run_id, job.offset_s)
        await self.store.put(c)
        yield pb.CalibrateResponse(accepted=pb.CalibrationAccepted(calibration_id=c.calibration_id))
        events: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(self._run(c, job, events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        while (event := await events.get()) is not None:
            yield pb.CalibrateResponse(progress=event)
        final = await task
        if final.state == pb.CALIBRATION_STATE_FAILED:
            await context.abort(grpc.StatusCode.INTERNAL, f"calibration failed: {final.error}")
        yield pb.CalibrateResponse(result=final)

    async def _run(self, c: pb.Calibration, job: Job, events: asyncio.Queue) -> pb.Calibration:
        loop = asyncio.get_running_loop()
        async with self._lock:
            start = time.perf_counter()

            def step(k: int, cost: float, values: dict[str, float]) -> None:
                message = pb.CalibrationProgress(
                    calibration_id=c.calibration_id, iteration=k,
                    max_iterations=job.iterations, cost=cost, parameters=values,
                    elapsed_s=time.perf_counter() - start,
                )  # fmt: skip
                loop.call_soon_threadsafe(events.put_nowait, message)

            try:
                result = await asyncio.to_thread(self._fit, job, step)
                text = calibrated_site_text(
                    job.doc, result, job.site, base=job.base_name,
                    out_dir=job.site.base_dir, date=dt.date.today(),
                )  # fmt: skip
                fill(c, result, text)
            except (ValueError, SiteError) as exc:  # one line naming the field
                log.warning("calibration %s failed: %s", c.calibration_id, exc)
                c.state, c.error = pb.CALIBRATION_STATE_FAILED, str(exc)
            except Exception:  # a model failure; its text stays in the log
                log.exception("calibration %s failed", c.calibration_id)
                c.state = pb.CALIBRATION_STATE_FAILED
                c.error = "the model failed (logged on the server)"
            c.wall_s = time.perf_counter() - start
        events.put_nowait(None)
        await self.store.put(c)
        log.info("calibration %s: %s in %.1f s", c.calibration_id, c.state, c.wall_s)
        return c

    @staticmethod
    def _fit(job: Job, step) -> Calibration:
        dtype = jax.numpy.float64 if jax.config.read("jax_enable_x64") else jax.numpy.float32
        return fit_site(
            job.site, job.measured, fit=job.fit, dt=job.dt, noise=job.noise,
            stats_s=job.stats_s, max_iterations=job.iterations, dtype=dtype,
            offset_s=job.offset_s, reference_dt=job.reference_dt, on_iteration=step,
        )  # fmt: skip

    async def GetCalibration(self, request, context: aio.ServicerContext):
        if not request.calibration_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "calibration_id: empty")
        try:
            found = await self.store.get(request.calibration_id)
        except psycopg.Error as exc:
            log.warning("calibration store unavailable: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "history database unavailable")
        if found is None:
            missing = f"calibration_id: no calibration {clip(request.calibration_id)!r}"
            await context.abort(grpc.StatusCode.NOT_FOUND, missing)
        return pb.GetCalibrationResponse(calibration=found)

    async def ListCalibrations(self, request, context: aio.ServicerContext):
        if not 0 <= request.limit <= MAX_LIST:
            problem = f"limit: must be 0..{MAX_LIST}, got {request.limit}"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        found = await self.store.list(request.run_id, request.limit or 100)
        return pb.ListCalibrationsResponse(calibrations=found)


def add_to_server(
    server,
    store: CalibrationStore | None = None,
    default_site: Site | None = None,
    lock: asyncio.Semaphore | None = None,
) -> CalibrationServicer:
    servicer = CalibrationServicer(store, default_site, lock)
    server.add_servicer(calibration_pb2_grpc.add_CalibrationServiceServicer_to_server, servicer)
    return servicer
