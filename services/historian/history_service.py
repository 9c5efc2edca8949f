"""``twin.history.v1.HistoryService`` on ``grpc.aio``: the History API (Query, ListRuns,
CompareRuns, Export, QueryMeasured, ListEvents), served by the historian and, with a
database, by the twin process.

Every request is validated first (INVALID_ARGUMENT, the message naming the field, e.g.
``metrics.0: unknown metric 'bogus' (known: ...)``); an unknown run is NOT_FOUND; a
database that cannot be reached is UNAVAILABLE. Each call opens its own short connection
(autocommit, read only), so an outage never leaves a broken connection behind.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from services.historian import events, export, measured, queries
from services.historian.queries import QueryError, RunNotFound, SeriesQuery
from twin.history.v1 import history_pb2, history_pb2_grpc

log = logging.getLogger(__name__)

AGGREGATE_NAMES = {
    history_pb2.AGGREGATE_UNSPECIFIED: "avg",
    history_pb2.AGGREGATE_AVG: "avg",
    history_pb2.AGGREGATE_MIN: "min",
    history_pb2.AGGREGATE_MAX: "max",
    history_pb2.AGGREGATE_LAST: "last",
    history_pb2.AGGREGATE_SUM: "sum",
    history_pb2.AGGREGATE_PERCENTILE: "percentile",
}


@asynccontextmanager
async def _as_status(context: aio.ServicerContext):
    """A bad argument is INVALID_ARGUMENT, an unknown run NOT_FOUND, a lost database
    UNAVAILABLE; each message names the field or the run."""
    try:
        yield
    except QueryError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except RunNotFound as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except psycopg.OperationalError as exc:
        log.warning("history database unavailable: %s", exc)  # its text stays in the log
        await context.abort(grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE)
    except psycopg.Error as exc:
        log.error("history query failed: %s", exc)
        await context.abort(grpc.StatusCode.INTERNAL, "history query failed")


DATABASE_UNAVAILABLE = "history database unavailable"


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):
    def __init__(
        self,
        database_url: str,
        connect_timeout_s: int = 5,
        export_page_rows: int = queries.EXPORT_PAGE_ROWS,
    ) -> None:
        self.database_url = database_url
        self.connect_timeout_s = connect_timeout_s
        self.export_page_rows = export_page_rows  # rows per read and per Parquet row group

    @asynccontextmanager
    async def _database(self, context: aio.ServicerContext):
        """A short read-only connection; query errors inside become gRPC statuses."""
        conn = await self._connect(context)
        async with _as_status(context), conn:
            yield conn

    async def _connect(self, context: aio.ServicerContext) -> psycopg.AsyncConnection:
        try:
            return await psycopg.AsyncConnection.connect(
                self.database_url,
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=self.connect_timeout_s,
            )
        except psycopg.Error as exc:
            log.warning("history database unavailable: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE)
            raise  # not reached: abort raises

    async def Query(
        self, request: history_pb2.QueryRequest, context: aio.ServicerContext
    ) -> history_pb2.QueryResponse:
        aggregate = AGGREGATE_NAMES.get(request.aggregate)
        if aggregate is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"aggregate: unknown value {request.aggregate}",
            )
        q = SeriesQuery(
            run_id=request.run_id,
            site_id=request.site_id,
            metrics=list(request.metrics),
            start_s=request.start_s if request.HasField("start_s") else None,
            end_s=request.end_s if request.HasField("end_s") else None,
            bucket_s=request.bucket_s,
            aggregate=aggregate,
            percentile=request.percentile,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        async with _as_status(context):
            queries.validate(q)
        async with self._database(context) as conn:
            page = await queries.query_series(conn, q)
        return history_pb2.QueryResponse(
            metrics=page.metrics,
            rows=[history_pb2.Row(time_s=t, values=v) for t, v in page.rows],
            next_page_token=page.next_page_token,
        )

    async def ListRuns(
        self, request: history_pb2.ListRunsRequest, context: aio.ServicerContext
    ) -> history_pb2.ListRunsResponse:
        async with _as_status(context):
            queries.check_page_size(request.page_size)
            queries.check_id("site_id", request.site_id)
        async with self._database(context) as conn:
            runs, token = await queries.list_runs(
                conn, request.site_id, request.page_size, request.page_token
            )
        out = []
        for r in runs:
            started = Timestamp()
            started.FromDatetime(r.started_at)
            out.append(
                history_pb2.Run(
                    run_id=r.run_id,
                    site_id=r.site_id,
                    scenario=r.scenario,
                    started_at=started,
                    dt_s=r.dt_s,
                    horizon_s=r.horizon_s,
                    status=r.status,
                    steps_stored=r.steps_stored,
                )
            )
        return history_pb2.ListRunsResponse(runs=out, next_page_token=token)

    async def CompareRuns(
        self, request: history_pb2.CompareRunsRequest, context: aio.ServicerContext
    ) -> history_pb2.CompareRunsResponse:
        metrics = list(request.metrics) or list(queries.COMPARE_METRICS)
        start_s = request.start_s if request.HasField("start_s") else None
        end_s = request.end_s if request.HasField("end_s") else None
        async with _as_status(context):
            for field in ("run_a", "run_b"):
                if not getattr(request, field):
                    raise QueryError(field, "required")
                queries.check_id(field, getattr(request, field))
            queries.check_id("site_id", request.site_id)
            queries.check_metrics(request.metrics, required=False)
            queries.check_window(start_s, end_s)
            queries.check_bucket(request.bucket_s)
            if (
                request.bucket_s > 0
                and start_s is not None
                and end_s is not None
                and (end_s - start_s) / request.bucket_s > queries.MAX_COMPARE_BUCKETS
            ):
                raise QueryError(
                    "bucket_s",
                    f"more than {queries.MAX_COMPARE_BUCKETS} buckets: choose a wider bucket",
                )
        async with self._database(context) as conn:
            summaries = []
            for field in ("run_a", "run_b"):
                run_id = getattr(request, field)
                await queries.find_run(conn, run_id, request.site_id, field)
                summaries.append(await queries.summarize(conn, run_id, metrics, start_s, end_s))
            rows = []
            if request.bucket_s > 0:
                rows = await queries.compare_series(
                    conn,
                    request.run_a,
                    request.run_b,
                    metrics,
                    request.bucket_s,
                    start_s,
                    end_s,
                )
        a, b = summaries
        deltas = []
        for sa, sb in zip(a.metrics, b.metrics, strict=True):
            delta = history_pb2.MetricDelta(
                metric=sa.metric, avg=sb.avg - sa.avg, min=sb.min - sa.min, max=sb.max - sa.max
            )
            if sa.energy_mwh is not None and sb.energy_mwh is not None:
                delta.energy_mwh = sb.energy_mwh - sa.energy_mwh
            deltas.append(delta)
        return history_pb2.CompareRunsResponse(
            metrics=metrics,
            a=_run_summary(a),
            b=_run_summary(b),
            deltas=deltas,
            rows=[history_pb2.CompareRow(time_s=t, a=va, b=vb) for t, va, vb in rows],
        )

    async def QueryMeasured(
        self, request: history_pb2.QueryMeasuredRequest, context: aio.ServicerContext
    ) -> history_pb2.QueryMeasuredResponse:
        q = measured.MeasuredQuery(
            run_id=request.run_id,
            site_id=request.site_id,
            entity=request.entity,
            quantity=request.quantity,
            start_s=request.start_s if request.HasField("start_s") else None,
            end_s=request.end_s if request.HasField("end_s") else None,
            bucket_s=request.bucket_s,
        )
        async with _as_status(context):
            measured.resolve(q)
        async with self._database(context) as conn:
            series = await measured.query_measured(conn, q)
        return history_pb2.QueryMeasuredResponse(
            entity=series.entity,
            quantity=series.quantity,
            modelled=series.modelled,
            rows=[
                history_pb2.MeasuredRow(time_s=t, measured=m, modelled=v) for t, m, v in series.rows
            ],
        )

    async def ListEvents(
        self, request: history_pb2.ListEventsRequest, context: aio.ServicerContext
    ) -> history_pb2.ListEventsResponse:
        async with self._database(context) as conn:
            stored = await events.list_events(conn, request.run_id, list(request.kinds))
        return history_pb2.ListEventsResponse(
            events=[
                history_pb2.Event(
                    event_id=e.event_id,
                    kind=e.kind,
                    time_s=e.time_s,
                    body_json=json.dumps(e.body, sort_keys=True),
                    deviation=events.deviation_of(e),
                )
                for e in stored
            ]
        )

    async def Export(
        self, request: history_pb2.ExportRequest, context: aio.ServicerContext
    ) -> AsyncIterator[history_pb2.ExportResponse]:
        start_s = request.start_s if request.HasField("start_s") else None
        end_s = request.end_s if request.HasField("end_s") else None
        formats = {
            history_pb2.EXPORT_FORMAT_CSV: export.csv_bytes,
            history_pb2.EXPORT_FORMAT_PARQUET: export.parquet_bytes,
        }
        async with _as_status(context):
            if not request.run_id:
                raise QueryError("run_id", "required")
            queries.check_id("run_id", request.run_id)
            queries.check_id("site_id", request.site_id)
            queries.check_metrics(request.metrics, required=False)
            queries.check_window(start_s, end_s)
            if request.format not in formats:
                raise QueryError("format", "required: EXPORT_FORMAT_CSV or EXPORT_FORMAT_PARQUET")
            if not 0 <= request.chunk_bytes <= export.MAX_CHUNK_BYTES:
                raise QueryError("chunk_bytes", f"must be in [0, {export.MAX_CHUNK_BYTES}]")
        metrics = list(request.metrics) or list(queries.METRICS)
        # A floor on the chunk: 1-byte chunks would send a message per byte.
        size = max(request.chunk_bytes, export.MIN_CHUNK_BYTES) if request.chunk_bytes else None
        size = size or export.MAX_CHUNK_BYTES
        async with self._database(context) as conn:
            await queries.find_run(conn, request.run_id, request.site_id)
            pages = queries.export_pages(
                conn, request.run_id, metrics, start_s, end_s, self.export_page_rows
            )
            async for blob in formats[request.format](pages, metrics):
                for piece in export.split([blob], size):
                    yield history_pb2.ExportResponse(data=piece)


def _run_summary(s: queries.RunSummary) -> history_pb2.RunSummary:
    out = history_pb2.RunSummary(run_id=s.run_id, dt_s=s.dt_s, steps=s.steps)
    for m in s.metrics:
        summary = history_pb2.MetricSummary(
            metric=m.metric, samples=m.samples, avg=m.avg, min=m.min, max=m.max
        )
        if m.energy_mwh is not None and math.isfinite(m.energy_mwh):
            summary.energy_mwh = m.energy_mwh
        out.metrics.append(summary)
    return out


def add_to_server(server, database_url: str) -> HistoryServicer:
    """Register a ``HistoryServicer`` on a ``GrpcServer`` (health and reflection names
    included)."""
    servicer = HistoryServicer(database_url)
    server.add_servicer(history_pb2_grpc.add_HistoryServiceServicer_to_server, servicer)
    return servicer
