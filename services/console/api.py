"""The console's JSON API: run control, history and what-if, each a thin translation to
one gRPC call of the twin. Errors come back as ``{"error": "<field>: <problem>"}``: 400 for
bad input (the console's checks, or the twin's INVALID_ARGUMENT), 403 for a viewer, 404,
409 and 502 (the twin unreachable) from the twin's status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from services.console.auth import Forbidden, is_operator, require_operator
from services.console.config import ConsoleConfig
from services.console.hub import Hub
from services.console.inputs import BadInput, flag, json_body, names, number, run_id, text
from services.console.study_form import study_spec
from services.console.upstream import CALL_TIMEOUT_S, Upstream
from services.console.views import finite, snapshot_view, study_summary_view, study_view
from twin.history.v1 import history_pb2
from twin.twin.v1 import clock_pb2, twin_pb2
from twin.whatif.v1 import whatif_pb2
from twin_core import contract

log = logging.getLogger("twin.console")

STORED = tuple(q.name for q in contract.HISTORY)  # the History API's metrics
DEFAULT_METRICS = ["facility_w", "it_w", "pue"]
STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
}
MAX_TICKS = 100_000
MAX_SPEED = 1e6


@dataclass
class Console:
    """What the handlers share: settings, the twin's stubs, the live hub, studies in
    flight (their progress, which GetStudy does not carry)."""

    config: ConsoleConfig
    upstream: Upstream
    hub: Hub
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)


Handler = Callable[[Request, Console], Awaitable[Response]]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        console: Console = request.app.state.console
        try:
            return await handler(request, console)
        except BadInput as exc:
            return error(400, str(exc))
        except Forbidden as exc:
            return error(403, str(exc))
        except grpc.RpcError as exc:
            return rpc_error(exc)

    return run


def rpc_error(exc: grpc.RpcError) -> JSONResponse:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or code.name  # type: ignore[attr-defined]
    status = STATUS.get(code)
    if status is None:
        return error(502, f"twin: {details} ({code.name})")
    return error(status, details)


def call_options(console: Console) -> dict[str, Any]:
    return {"metadata": console.upstream.metadata, "timeout": CALL_TIMEOUT_S}


# -- live ------------------------------------------------------------------------------


async def session(request: Request, console: Console) -> Response:
    """Whether the request may act (the page enables its buttons)."""
    return JSONResponse(
        {
            "operator": is_operator(request, console.config),
            "control": console.config.console_token is not None,
        }
    )


async def snapshot(request: Request, console: Console) -> Response:
    if console.hub.latest is not None:
        return JSONResponse(console.hub.latest)
    reply = await console.upstream.twin.GetSnapshot(
        twin_pb2.GetSnapshotRequest(), **call_options(console)
    )
    return JSONResponse(snapshot_view(reply.snapshot))


async def stats(request: Request, console: Console) -> Response:
    hub = console.hub
    return JSONResponse({**vars(hub.stats), "viewers": hub.viewers, "connected": hub.connected})


# -- run control -------------------------------------------------------------------------


def speed(body: dict[str, Any], field_name: str = "speed") -> clock_pb2.Speed:
    """A real-time factor; 0 means as fast as possible."""
    factor = number(body, field_name, default=0.0, lo=0, hi=MAX_SPEED)
    if factor == 0:
        return clock_pb2.Speed(as_fast_as_possible=True)
    return clock_pb2.Speed(real_time_factor=factor)


async def control(request: Request, console: Console) -> Response:
    require_operator(request, console.config)
    action = request.path_params["action"]
    body = await json_body(request)
    stub, opts = console.upstream.twin, call_options(console)
    run = run_id(body, "run_id")
    if action == "start":
        spec = clock_pb2.RunSpec(
            dt_s=number(body, "dt_s", default=1.0, lo=0, hi=3600, lo_open=True),
            horizon_s=number(body, "horizon_s", default=0.0, lo=0),
        )
        yaml_text = text(body, "scenario_yaml", default="", limit=1_000_000)
        if yaml_text:
            spec.scenario_yaml = yaml_text
        else:
            spec.scenario_name = text(body, "scenario", limit=200)
            if not spec.scenario_name:
                raise BadInput("scenario", "required (a seeded scenario's name)")
        request_pb = twin_pb2.StartRequest(
            spec=spec, speed=speed(body), paused=flag(body, "paused")
        )
        opts["timeout"] = 300  # the domains build and compile the site's model
        reply = await stub.Start(request_pb, **opts)
        console.hub.offer(reply.snapshot)
        return JSONResponse({"run_id": reply.run_id, "snapshot": snapshot_view(reply.snapshot)})
    if action == "pause":
        reply = await stub.Pause(twin_pb2.PauseRequest(run_id=run), **opts)
    elif action == "resume":
        reply = await stub.Resume(twin_pb2.ResumeRequest(run_id=run), **opts)
    elif action == "stop":
        reply = await stub.Stop(twin_pb2.StopRequest(run_id=run), **opts)
    elif action == "step":
        ticks = number(body, "ticks", default=1, lo=1, hi=MAX_TICKS)
        if ticks != int(ticks):
            raise BadInput("ticks", "must be a whole number")
        opts["timeout"] = 300
        reply = await stub.Step(twin_pb2.StepRequest(run_id=run, ticks=int(ticks)), **opts)
    elif action == "speed":
        if "speed" not in body:
            raise BadInput("speed", "required (a real-time factor; 0: as fast as possible)")
        pace = speed(body)
        await stub.SetSpeed(twin_pb2.SetSpeedRequest(run_id=run, speed=pace), **opts)
        return JSONResponse({"speed": pace.real_time_factor or 0.0})
    else:
        return error(404, f"action: {action!r} is not start, pause, resume, step, speed or stop")
    console.hub.offer(reply.snapshot)  # a pause is not on the Watch stream
    return JSONResponse({"snapshot": snapshot_view(reply.snapshot)})


# -- history -----------------------------------------------------------------------------


async def metrics(request: Request, console: Console) -> Response:
    return JSONResponse(
        [{"name": q.name, "unit": q.unit, "about": q.doc} for q in contract.HISTORY]
    )


async def runs(request: Request, console: Console) -> Response:
    reply = await console.upstream.history.ListRuns(
        history_pb2.ListRunsRequest(page_size=200), **call_options(console)
    )
    return JSONResponse(
        [
            {
                "run_id": r.run_id,
                "site_id": r.site_id,
                "scenario": r.scenario,
                "started_at": r.started_at.ToJsonString(),
                "dt_s": r.dt_s,
                "horizon_s": r.horizon_s,
                "status": r.status,
                "steps_stored": r.steps_stored,
            }
            for r in reply.runs
        ]
    )


def window(query: Any, message: Any) -> None:
    for name in ("start_s", "end_s"):
        if query.get(name):
            setattr(message, name, number(query, name, lo=0))


async def query(request: Request, console: Console) -> Response:
    q = request.query_params
    message = history_pb2.QueryRequest(
        run_id=run_id(q, "run", required=True),
        metrics=names(q, "metrics", allowed=STORED, default=DEFAULT_METRICS),
        bucket_s=number(q, "bucket_s", default=0.0, lo=0),
        page_size=10_000,
    )
    window(q, message)
    reply = await console.upstream.history.Query(message, **call_options(console))
    return JSONResponse(
        {
            "metrics": list(reply.metrics),
            "time_s": [r.time_s for r in reply.rows],
            "values": [
                [finite(r.values[i]) for r in reply.rows] for i in range(len(reply.metrics))
            ],
            "truncated": bool(reply.next_page_token),
        }
    )


async def compare(request: Request, console: Console) -> Response:
    q = request.query_params
    message = history_pb2.CompareRunsRequest(
        run_a=run_id(q, "a", required=True),
        run_b=run_id(q, "b", required=True),
        metrics=names(q, "metrics", allowed=STORED, default=DEFAULT_METRICS),
        bucket_s=number(q, "bucket_s", default=60.0, lo=0),
    )
    window(q, message)
    reply = await console.upstream.history.CompareRuns(message, **call_options(console))

    def summary(s: history_pb2.RunSummary) -> dict[str, Any]:
        return {
            "run_id": s.run_id,
            "steps": s.steps,
            "metrics": [
                {
                    "metric": m.metric,
                    "avg": finite(m.avg),
                    "min": finite(m.min),
                    "max": finite(m.max),
                    "energy_mwh": finite(m.energy_mwh) if m.HasField("energy_mwh") else None,
                }
                for m in s.metrics
            ],
        }

    n = len(reply.metrics)
    return JSONResponse(
        {
            "metrics": list(reply.metrics),
            "a": summary(reply.a),
            "b": summary(reply.b),
            "deltas": [
                {
                    "metric": d.metric,
                    "avg": finite(d.avg),
                    "min": finite(d.min),
                    "max": finite(d.max),
                }
                for d in reply.deltas
            ],
            "time_s": [r.time_s for r in reply.rows],
            "series_a": [[finite(r.a[i]) for r in reply.rows] for i in range(n)],
            "series_b": [[finite(r.b[i]) for r in reply.rows] for i in range(n)],
        }
    )


async def export(request: Request, console: Console) -> Response:
    q = request.query_params
    fmt = text(q, "format", default="csv", limit=10).lower()
    formats = {"csv": history_pb2.EXPORT_FORMAT_CSV, "parquet": history_pb2.EXPORT_FORMAT_PARQUET}
    if fmt not in formats:
        raise BadInput("format", f"{fmt!r} is not csv or parquet")
    message = history_pb2.ExportRequest(
        run_id=run_id(q, "run", required=True),
        metrics=names(q, "metrics", allowed=STORED, default=[]),
        format=formats[fmt],
    )
    window(q, message)
    stream = console.upstream.history.Export(message, metadata=console.upstream.metadata)
    first = await stream.read()  # an unknown run fails here, before the headers are sent
    if not isinstance(first, history_pb2.ExportResponse):  # EOF: an empty file
        first = history_pb2.ExportResponse()

    async def chunks():
        chunk = first
        while isinstance(chunk, history_pb2.ExportResponse):  # read() to EOF: the call
            yield chunk.data  # was started with read(), and may not be iterated now
            chunk = await stream.read()

    media = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
    filename = f"run-{message.run_id}.{fmt}"
    return StreamingResponse(
        chunks(),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


# -- what-if -----------------------------------------------------------------------------


async def studies(request: Request, console: Console) -> Response:
    reply = await console.upstream.whatif.ListStudies(
        whatif_pb2.ListStudiesRequest(limit=50), **call_options(console)
    )
    return JSONResponse([study_summary_view(s) for s in reply.studies])


async def study(request: Request, console: Console) -> Response:
    study_id = request.path_params["study_id"]
    reply = await console.upstream.whatif.GetStudy(
        whatif_pb2.GetStudyRequest(study_id=study_id), **call_options(console)
    )
    view = study_view(reply.study)
    view["progress"] = console.progress.get(study_id)
    return JSONResponse(view)


async def run_study(request: Request, console: Console) -> Response:
    """Start a study; 202 with its id once the twin accepted it, which runs on here."""
    require_operator(request, console.config)
    spec = study_spec(await json_body(request))
    call = console.upstream.whatif.RunStudy(
        whatif_pb2.RunStudyRequest(spec=spec), metadata=console.upstream.metadata
    )
    first = await call.read()  # accepted, or INVALID_ARGUMENT naming the field
    if not isinstance(first, whatif_pb2.RunStudyResponse) or not first.HasField("accepted"):
        return error(502, "twin: the study was not accepted")
    accepted = first.accepted
    console.progress[accepted.study_id] = {
        "variants_done": 0.0,
        "variants_total": accepted.variants,
        "started": time.time(),
    }
    task = asyncio.create_task(_follow(console, accepted.study_id, call))
    console.tasks.add(task)
    task.add_done_callback(console.tasks.discard)
    return JSONResponse({"study_id": accepted.study_id, "variants": accepted.variants}, 202)


async def _follow(console: Console, study_id: str, call: Any) -> None:
    """Read the study's stream to its end: progress for the page, then the result (kept by
    the twin, read back with GetStudy)."""
    progress = console.progress[study_id]
    try:
        while isinstance(message := await call.read(), whatif_pb2.RunStudyResponse):
            if message.HasField("progress"):
                progress["variants_done"] = message.progress.variants_done
        progress["variants_done"] = progress["variants_total"]
    except grpc.RpcError as exc:
        progress["error"] = exc.details()  # type: ignore[attr-defined]
        log.warning("study %s: %s", study_id, exc.details())  # type: ignore[attr-defined]
    finally:
        with contextlib.suppress(Exception):
            call.cancel()
