"""Deviations in the history: the historian stores each one published on
``twin.<site>.events`` in ``events`` once (a redelivery or a republish is a no-op), refuses
what cannot be stored, and leaves the clock's run records alone; the History API lists
them (real nats-server, real PostgreSQL, a real gRPC client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math

import grpc
import psycopg
import pytest
from nats.js.errors import NotFoundError

from services.historian.history_service import HistoryServicer
from services.historian.migrate import migrate
from services.historian.writer import HistorianWriter, WriterConfig
from services.monitor.wire import TYPE_HEADER, deviation_headers
from services.runtime import bus
from services.runtime.grpc_server import GrpcServer
from services.runtime.nats_server import NatsServer
from twin.history.v1 import history_pb2, history_pb2_grpc
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2, deviation_pb2

SITE, RUN = "devhist", "run-dev-1"
BASE = deviation_pb2.Deviation(
    event_id=f"{RUN}/cdu/1/supply_temperature_c/1/raised", run_id=RUN, site_id=SITE,
    entity="cdu/1", quantity=telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C,
    status=deviation_pb2.DEVIATION_STATUS_RAISED, cause=deviation_pb2.DEVIATION_CAUSE_SENSOR,
    departure=0.12, departure_sigmas=2.4, sigma=0.05, unit="degC", step=149, time_s=1500.0,
    measured_time_s=1.7e9 + 1500, raised_step=149,
    reason="return temperature and rack power agree with the model",
)  # fmt: skip


@pytest.fixture(scope="module")
def stored(postgres_url):
    """One run's START, then deviations good and bad, consumed by the historian."""
    migrate(postgres_url)

    def deviation(**changes: object) -> deviation_pb2.Deviation:
        event = deviation_pb2.Deviation()
        event.CopyFrom(BASE)
        for name, value in changes.items():
            setattr(event, name, value)
        return event

    good = deviation()
    cleared = deviation(
        event_id=f"{RUN}/cdu/1/supply_temperature_c/1/cleared", time_s=1900.0, step=189,
        status=deviation_pb2.DEVIATION_STATUS_CLEARED, departure=0.08, departure_sigmas=1.6,
    )  # fmt: skip

    async def main():
        with NatsServer() as server:
            nc = await bus.connect(server.url)
            try:
                js = nc.jetstream()
                await bus.declare_stream(js, SITE)
                events = bus.events_subject(SITE)
                spec = clock_pb2.RunSpec(scenario_name="small", dt_s=10.0)
                start = clock_pb2.Clock(
                    run_id=RUN, command=clock_pb2.CLOCK_COMMAND_START, spec=spec
                )
                await bus.publish(nc, events, start)

                async def send(event: deviation_pb2.Deviation, headers=None) -> None:
                    data = event.SerializeToString()
                    await nc.publish(events, data, headers=headers or deviation_headers(event))

                await send(good)
                await send(good, {TYPE_HEADER: "twin.twin.v1.Deviation"})  # republished
                await send(cleared)
                await send(deviation(run_id="forged", event_id="forged/x/1/raised"))
                await send(deviation(event_id="nan", departure=math.nan))
                garbage = b"\xff\x00 not protobuf"
                await nc.publish(events, garbage, headers={TYPE_HEADER: "twin.twin.v1.Deviation"})
                await nc.flush()
                writer = HistorianWriter(js, WriterConfig(site=SITE, database_url=postgres_url))
                task = asyncio.create_task(writer.run())
                for _ in range(600):
                    await asyncio.sleep(0.05)
                    try:  # the writer declares its durable once it runs
                        info = await js.consumer_info(bus.stream_name(SITE), bus.HISTORIAN_DURABLE)
                    except NotFoundError:
                        continue
                    if (info.num_pending, info.num_ack_pending) == (0, 0) and info.delivered:
                        break
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return writer
            finally:
                await nc.close()

    writer = asyncio.run(asyncio.wait_for(main(), 120))
    return postgres_url, writer, good, cleared


def test_each_deviation_is_stored_once_and_the_rest_refused(stored):
    url, writer, good, cleared = stored
    assert writer.stats.rejected.snapshot() == {"Deviation.invalid": 3}
    assert writer.stats.events == 3  # good twice (the second a no-op) and cleared
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_id, run_id, kind, extract(epoch FROM time - '2000-01-01Z'), body"
            " FROM events ORDER BY time"
        ).fetchall()
        run = conn.execute("SELECT run_id, dt_s, status FROM runs").fetchall()
    assert [(r[0], r[1], r[2], float(r[3])) for r in rows] == [
        (good.event_id, RUN, "deviation.raised", 1500.0),
        (cleared.event_id, RUN, "deviation.cleared", 1900.0),
    ]
    assert rows[0][4]["entity"] == "cdu/1" and rows[0][4]["cause"] == "DEVIATION_CAUSE_SENSOR"
    assert run == [(RUN, 10.0, "running")]  # the START is still the run record


def call(url: str, request: history_pb2.ListEventsRequest):
    async def main():
        server = GrpcServer("127.0.0.1:0")
        server.add_servicer(
            history_pb2_grpc.add_HistoryServiceServicer_to_server, HistoryServicer(url)
        )
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await history_pb2_grpc.HistoryServiceStub(channel).ListEvents(request)
        finally:
            await server.stop(0.5)

    return asyncio.run(main())


def test_list_events_returns_the_deviations_in_time_order(stored):
    url, _, good, cleared = stored
    reply = call(url, history_pb2.ListEventsRequest(run_id=RUN))
    assert [(e.kind, e.time_s, e.deviation) for e in reply.events] == [
        ("deviation.raised", 1500.0, good),
        ("deviation.cleared", 1900.0, cleared),
    ]
    assert json.loads(reply.events[0].body_json)["departure"] == 0.12
    only = call(url, history_pb2.ListEventsRequest(run_id=RUN, kinds=["deviation.cleared"]))
    assert [e.event_id for e in only.events] == [cleared.event_id]


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({"run_id": "nope"}, grpc.StatusCode.NOT_FOUND, "run_id: run 'nope' not found"),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "run_id: required"),
        ({"run_id": RUN, "kinds": [""]}, grpc.StatusCode.INVALID_ARGUMENT,
         "kinds.0: '' is not an event kind"),
    ],
)  # fmt: skip
def test_list_events_errors_name_the_field(stored, request_fields, code, message):
    url = stored[0]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        call(url, history_pb2.ListEventsRequest(**request_fields))
    assert (err.value.code(), err.value.details()) == (code, message)
