"""``twin.history.v1.HistoryService`` on ``grpc.aio``: the History API of the historian.

Every request is validated first (INVALID_ARGUMENT, the message naming the field, e.g.
``metrics.0: unknown metric 'bogus' (known: ...)``); an unknown run is NOT_FOUND; a
database that cannot be reached is UNAVAILABLE. Each call opens its own short connection
(autocommit, read only), so an outage never leaves a broken connection behind.
"""

from __future__ import annotations

import logging

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from services.historian import queries
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


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):
    def __init__(self, database_url: str, connect_timeout_s: int = 5) -> None:
        self.database_url = database_url
        self.connect_timeout_s = connect_timeout_s

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
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
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
        try:
            queries.validate(q)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        conn = await self._connect(context)
        try:
            async with conn:
                page = await queries.query_series(conn, q)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RunNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except psycopg.OperationalError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
        return history_pb2.QueryResponse(
            metrics=page.metrics,
            rows=[history_pb2.Row(time_s=t, values=v) for t, v in page.rows],
            next_page_token=page.next_page_token,
        )

    async def ListRuns(
        self, request: history_pb2.ListRunsRequest, context: aio.ServicerContext
    ) -> history_pb2.ListRunsResponse:
        try:
            queries.check_page_size(request.page_size)
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        conn = await self._connect(context)
        try:
            async with conn:
                runs, token = await queries.list_runs(
                    conn, request.site_id, request.page_size, request.page_token
                )
        except QueryError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except psycopg.OperationalError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"database unavailable: {exc}")
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


def add_to_server(server, database_url: str) -> HistoryServicer:
    """Register a ``HistoryServicer`` on a ``GrpcServer`` (health and reflection names
    included)."""
    servicer = HistoryServicer(database_url)
    server.add_servicer(history_pb2_grpc.add_HistoryServiceServicer_to_server, servicer)
    return servicer
