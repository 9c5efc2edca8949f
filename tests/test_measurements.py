"""Measured history: the historian stores the site's telemetry (services/historian/
measurements.py) on a real nats-server and PostgreSQL 16 — once, also after a redelivery,
garbage refused and counted — with its 1-minute rollup on both backends (TimescaleDB 2.23
in PGlite too), and the History API's QueryMeasured (services/historian/measured.py) puts
it beside the modelled series in hand-computed buckets, from gRPC and from the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import psycopg
import pytest
from psycopg import sql
from served import served

from services.historian.history_service import HistoryServicer
from services.historian.measurements import (
    MeasurementConfig,
    MeasurementWriter,
    measurement_refreshes,
)
from services.historian.migrate import migrate
from services.historian.schema import EPOCH
from services.runtime import bus
from services.runtime.nats_server import NatsServer
from twin.history.v1 import history_pb2, history_pb2_grpc
from twin.telemetry.v1 import telemetry_pb2 as tp

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUT_S = 30.0
SUPPLY = tp.QUANTITY_SUPPLY_TEMPERATURE_C


@pytest.fixture(scope="module")
def nats_server():
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="module")
def db(postgres_url):
    migrate(postgres_url)
    return postgres_url


def at(seconds: float) -> float:
    return (T0 + timedelta(seconds=seconds)).timestamp()


def batch(site: str, source: str, *items: tuple[str, Any, float, float]) -> bytes:
    """A MeasurementBatch of (entity, quantity, seconds after T0, value)."""
    return tp.MeasurementBatch(
        site_id=site,
        source=source,
        measurements=[
            tp.Measurement(site_id=site, entity=e, quantity=q, time_s=at(s), value=v)
            for e, q, s, v in items
        ],
    ).SerializeToString()


def rows(db: str, site: str) -> list[tuple]:
    with psycopg.connect(db, prepare_threshold=None) as conn:
        return conn.execute(
            "SELECT source, entity, quantity, time, value, run_id FROM measurements"
            " WHERE site_id = %s ORDER BY entity, time",
            (site,),
        ).fetchall()


async def wait_for(probe, done, what: str):
    deadline = time.monotonic() + TIMEOUT_S
    while not done(value := await probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {value!r}")
        await asyncio.sleep(0.05)
    return value


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class CrashBeforeAck(MeasurementWriter):
    """Commits its batches and never acks them: killed between commit and ack."""

    async def _ack(self, msgs) -> None:
        return None


def test_measurements_are_stored_once_and_garbage_is_refused(nats_server, db) -> None:
    site, run_id = "meas-store", "meas-store-run"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s)"
            " VALUES (%s, %s, 'small', %s, 1.0, 0) ON CONFLICT DO NOTHING",
            (run_id, site, T0),
        )
    rack = ("rack/1/0", tp.QUANTITY_RACK_POWER_W)
    messages = [
        ("bms", batch(site, "bms", ("cdu/0", SUPPLY, 1, 20.0), ("cdu/0", SUPPLY, 2, 21.0))),
        ("dcim", batch(site, "dcim", (*rack, 1, 1.0e5))),
        # The gateway's next tick: the held value again (same source time), and a new one.
        ("bms", batch(site, "bms", ("cdu/0", SUPPLY, 2, 21.0), ("cdu/0", SUPPLY, 61, 23.0))),
        ("bms", batch(site, "bms", ("cdu/0", SUPPLY, -100, 19.0))),  # before the run
        ("bms", b"\xff\x00 not a MeasurementBatch"),
        ("bms", batch("elsewhere", "bms", ("cdu/0", SUPPLY, 3, 22.0))),
        (
            "meter",
            batch(
                site,
                "meter",
                ("cdu/0", SUPPLY, 4, math.nan),
                ("cdu/0", 99, 4, 1.0),
                ("", tp.QUANTITY_METER_POWER_W, 4, 1.0),
                ("meter", tp.QUANTITY_METER_POWER_W, 5, 1.0e6),
            ),
        ),
    ]
    cfg = MeasurementConfig(site, db, ack_wait_s=1.0)

    async def main() -> tuple[MeasurementWriter, MeasurementWriter, int | None]:
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            for source, data in messages:
                await nc.publish(bus.telemetry_subject(site, source), data)
            await nc.flush()
            first = CrashBeforeAck(js, cfg)
            task = asyncio.create_task(first.run())
            await wait_for(lambda: asyncio.to_thread(rows, db, site), lambda r: len(r) == 6, "rows")
            await wait_for(lambda: _async(first.stats.messages), lambda n: n >= 5, "5 stored")
            await stop(task)  # killed: five messages committed, none acked
            info = await js.consumer_info(bus.stream_name(site), bus.MEASUREMENTS_DURABLE)
            second = MeasurementWriter(js, cfg)  # the restart: the redeliveries come back
            task = asyncio.create_task(second.run())

            async def pending() -> tuple[int | None, int | None]:
                i = await js.consumer_info(bus.stream_name(site), bus.MEASUREMENTS_DURABLE)
                return i.num_pending, i.num_ack_pending

            await wait_for(pending, lambda v: v == (0, 0), "the consumer to drain")
            await stop(task)
            return first, second, info.num_ack_pending
        finally:
            await nc.close()

    first, second, unacked = asyncio.run(asyncio.wait_for(main(), 90))
    assert unacked == 5
    ts = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    supply = "supply_temperature_c"
    assert rows(db, site) == [
        ("bms", "cdu/0", supply, ts(-100), 19.0, None),
        ("bms", "cdu/0", supply, ts(1), 20.0, run_id),
        ("bms", "cdu/0", supply, ts(2), 21.0, run_id),
        ("bms", "cdu/0", supply, ts(61), 23.0, run_id),
        ("meter", "meter", "meter_power_w", ts(5), 1.0e6, run_id),
        ("dcim", "rack/1/0", "rack_power_w", ts(1), 1.0e5, run_id),
    ]
    # Refused once, by the first writer (term()ed: never redelivered), counted by reason.
    assert first.stats.bad_messages == 2 and first.stats.bad_measurements == 3
    assert first.stats.rejected.snapshot() == {
        "MeasurementBatch.undecodable": 1,
        "MeasurementBatch.invalid": 1,
        "Measurement.invalid": 3,
    }
    # The second stored the five redelivered messages again: no new row.
    assert second.stats.messages == 5 and second.stats.acked == 5
    assert second.stats.bad_messages == 0
    with psycopg.connect(db, prepare_threshold=None) as conn:
        minutes = conn.execute(
            "SELECT bucket, value_avg, value_min, value_max, value_last, value_count"
            " FROM measurements_1m WHERE site_id = %s AND entity = 'cdu/0' ORDER BY bucket",
            (site,),
        ).fetchall()
    assert minutes == [
        (ts(-120), 19.0, 19.0, 19.0, 19.0, 1),
        (ts(0), 20.5, 20.0, 21.0, 21.0, 2),
        (ts(60), 23.0, 23.0, 23.0, 23.0, 1),
    ]


async def _async(value):
    return value


def test_a_backlog_is_written_in_transactions_of_bounded_size(nats_server, db) -> None:
    site = "meas-chunks"
    sizes = (2, 1, 2, 3)  # measurements per message; at most 2 a write, or one message
    messages = [
        batch(site, "bms", *[("cdu/0", SUPPLY, 10 * k + i, 20.0 + i) for i in range(n)])
        for k, n in enumerate(sizes)
    ]
    cfg = MeasurementConfig(site, db, write_rows=2)

    async def main() -> MeasurementWriter:
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            for data in messages:  # all waiting before the writer starts: one fetch
                await nc.publish(bus.telemetry_subject(site, "bms"), data)
            await nc.flush()
            writer = MeasurementWriter(js, cfg)
            task = asyncio.create_task(writer.run())
            await wait_for(lambda: _async(writer.stats.acked), lambda n: n == 4, "4 acked")
            await stop(task)
            return writer
        finally:
            await nc.close()

    writer = asyncio.run(asyncio.wait_for(main(), 90))
    # [2] [1] [2] [3]: 1 + 2 > 2 and 2 + 3 > 2 start new writes; 3 > 2 alone is one
    assert (writer.stats.batches, writer.stats.messages, writer.stats.measurements) == (4, 4, 8)
    assert len(rows(db, site)) == 8


def test_the_stream_captures_telemetry() -> None:
    assert bus.telemetry_subject("small") in bus.stream_subjects("small")


# --------------------------------------------------------------- rollups on both backends


@pytest.mark.slow
def test_rollup_answers_the_same_on_timescale_and_postgres(postgres_url, timescale_url):
    site = "meas-rollup"
    samples = [(T0 + timedelta(seconds=7 * k), 20.0 + (k % 11) * 0.5) for k in range(40)]
    answers = []
    for url in (postgres_url, timescale_url):
        migrate(url)
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            timescale = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            for t, x in samples:  # one INSERT each: PGlite serves no COPY, no pipeline
                conn.execute(
                    "INSERT INTO measurements (site_id, source, entity, quantity, time, value)"
                    " VALUES (%s, 'bms', 'cdu/2', 'supply_temperature_c', %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (site, t, x),
                )
            written = [(site, "bms", "cdu/2", "supply_temperature_c", t, x) for t, x in samples]
            for statement, params in measurement_refreshes(timescale is not None, site, written):
                conn.execute(statement, params)
            answers.append(
                conn.execute(
                    "SELECT bucket, value_avg, value_min, value_max, value_last, value_count"
                    " FROM measurements_1m WHERE site_id = %s ORDER BY bucket",
                    (site,),
                ).fetchall()
            )
    plain, timescale_rows = answers
    assert len(plain) == 5 and sum(r[5] for r in plain) == 40
    assert [r[0] for r in plain] == [r[0] for r in timescale_rows]
    for a, b in zip(plain, timescale_rows, strict=True):
        assert a[1] == pytest.approx(b[1]) and a[2:] == b[2:]


# ------------------------------------------------------------------ QueryMeasured


RUN = "meas-query-run"
SITE = "meas-query"
STEPS = 180  # 3 min at 1 s
RACK_EVERY = 60


@pytest.fixture(scope="module")
def database(db):
    """A run of 180 s with two CDUs and 2 x 2 racks, and measurements beside it."""
    with psycopg.connect(db, autocommit=True) as conn:
        for table in ("site_series", "cdu_series", "rack_arrays", "runs"):
            delete = sql.SQL("DELETE FROM {} WHERE run_id = %s").format(sql.Identifier(table))
            conn.execute(delete, (RUN,))
        conn.execute("DELETE FROM measurements WHERE site_id = %s", (SITE,))
        conn.execute(
            "INSERT INTO runs (run_id, site_id, scenario, started_at, dt_s, horizon_s)"
            " VALUES (%s, %s, 'small', %s, 1.0, %s)",
            (RUN, SITE, T0, STEPS),
        )
        with conn.cursor() as cur:
            for k in range(STEPS):
                t = EPOCH + timedelta(seconds=k)
                cur.execute(
                    "INSERT INTO site_series (run_id, step, time, grid_w) VALUES (%s, %s, %s, %s)",
                    (RUN, k, t, float(k)),
                )
                for cdu in (0, 1):
                    cur.execute(
                        "INSERT INTO cdu_series (run_id, step, time, cdu, tcs_supply_c)"
                        " VALUES (%s, %s, %s, %s, %s)",
                        (RUN, k, t, cdu, 30.0 + cdu + k / 100),
                    )
                if k % RACK_EVERY == 0:
                    cur.execute(
                        'INSERT INTO rack_arrays (run_id, step, time, quantity, "values")'
                        " VALUES (%s, %s, %s, 'rack_ac_w', %s::float4[])",
                        (RUN, k, t, [float(k + j) for j in range(4)]),
                    )
            measured = [
                ("bms", "cdu/1", "supply_temperature_c", 10, 31.0),
                ("bms", "cdu/1", "supply_temperature_c", 70, 33.0),
                ("dcim", "cdu/1", "supply_temperature_c", 75, 35.0),  # a second source
                ("bms", "cdu/0", "supply_temperature_c", 10, 99.0),  # another CDU
                ("redfish", "rack/1/1", "rack_power_w", 5, 500.0),
                ("meter", "meter", "meter_power_w", 130, 7.0),
                ("bms", "pump/0", "equipment_power_w", 3, 42.0),
                ("bms", "cdu/1", "supply_temperature_c", -30, 1.0),  # before the run
            ]
            for source, entity, quantity, s, value in measured:
                cur.execute(
                    "INSERT INTO measurements (site_id, source, entity, quantity, time, value)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (SITE, source, entity, quantity, T0 + timedelta(seconds=s), value),
                )
    return db


@pytest.fixture
def call(database):
    def run(fn):
        async def main():
            from services.runtime.grpc_server import GrpcServer

            server = GrpcServer("127.0.0.1:0")
            server.add_servicer(
                history_pb2_grpc.add_HistoryServiceServicer_to_server, HistoryServicer(database)
            )
            port = await server.start()
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    return await fn(history_pb2_grpc.HistoryServiceStub(channel))
            finally:
                await server.stop(0.5)

        return asyncio.run(main())

    return run


def measured(call, **fields) -> history_pb2.QueryMeasuredResponse:
    fields.setdefault("run_id", RUN)
    fields.setdefault("bucket_s", 60.0)
    request = history_pb2.QueryMeasuredRequest(**fields)
    return call(lambda stub: stub.QueryMeasured(request, timeout=20))


def table(reply) -> list[tuple[float, float, float]]:
    return [(r.time_s, r.measured, r.modelled) for r in reply.rows]


def same(got, want) -> None:
    assert len(got) == len(want), got
    for g, w in zip(got, want, strict=True):
        assert g[0] == w[0]
        for a, b in zip(g[1:], w[1:], strict=True):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12), (g, w)


def test_cdu_supply_measured_beside_modelled(call):
    reply = measured(call, entity="cdu/1")  # the quantity: the CDU's one modelled
    assert (reply.entity, reply.quantity) == ("cdu/1", "supply_temperature_c")
    assert reply.modelled == "cdu_series.tcs_supply_c"
    # Modelled: 31 + k/100 averaged over k in each minute; measured: both sources.
    same(
        table(reply),
        [(0.0, 31.0, 31.295), (60.0, 34.0, 31.895), (120.0, math.nan, 32.495)],
    )
    # The widest window: the measurement from before the run's start shows up too.
    widest = measured(call, entity="cdu/1", start_s=-1e11, end_s=1e11)
    same(table(widest), [(-60.0, 1.0, math.nan), *table(reply)])
    window = measured(call, entity="cdu/1", start_s=60, end_s=120, bucket_s=30)
    same(table(window), [(60.0, 34.0, 31.745), (90.0, math.nan, 32.045)])


def test_rack_site_and_unmodelled_entities(call):
    rack = measured(call, entity="rack/1/1")  # element 1 * 2 + 1 of every 60th step
    assert rack.modelled == "rack_arrays.rack_ac_w"
    same(table(rack), [(0.0, 500.0, 3.0), (60.0, math.nan, 63.0), (120.0, math.nan, 123.0)])
    meter = measured(call, entity="meter", bucket_s=90)
    assert meter.modelled == "site_series.grid_w"
    same(table(meter), [(0.0, math.nan, 44.5), (90.0, 7.0, 134.5)])
    pump = measured(call, entity="pump/0", quantity="equipment_power_w")
    assert pump.modelled == ""
    same(table(pump), [(0.0, 42.0, math.nan)])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"entity": ""}, "entity"),
        ({"entity": "cdu/1", "quantity": "bogus"}, "quantity"),
        ({"entity": "battery"}, "quantity"),  # two modelled quantities: say which
        ({"entity": "cdu/1", "bucket_s": 0}, "bucket_s"),
        ({"entity": "cdu/1", "bucket_s": math.nan}, "bucket_s"),
        ({"entity": "cdu/1", "start_s": 60, "end_s": 60}, "end_s"),
        ({"entity": "rack/1"}, "entity"),
        ({"entity": "cdu/x"}, "entity"),
        ({"entity": "rack/5/0"}, "entity"),  # no such rack in the run
        ({"entity": "cdu/1", "run_id": ""}, "run_id"),
        ({"entity": "cdu/1", "bucket_s": -1}, "bucket_s"),
    ],
)
def test_bad_requests_name_the_field(call, fields, field):
    with pytest.raises(grpc.RpcError) as err:
        measured(call, **fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details() or ""
    assert details.startswith(f"{field}:"), details


def test_unknown_run_is_not_found(call):
    with pytest.raises(grpc.RpcError) as err:
        measured(call, entity="cdu/1", run_id="nope")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "run_id" in (err.value.details() or "")


def test_cli_measured(database, tmp_path):
    from typer.testing import CliRunner

    from services.cli.main import app

    servicer = HistoryServicer(database)
    register = lambda server: server.add_servicer(  # noqa: E731
        history_pb2_grpc.add_HistoryServiceServicer_to_server, servicer
    )
    runner = CliRunner(env={"COLUMNS": "200"})
    out = tmp_path / "cdu1.csv"
    with served(register) as address:
        args = ["history", "query", RUN, "--measured", "cdu/1", "--address", address]
        result = runner.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "cdu_series.tcs_supply_c" in result.output and "00:01:00" in result.output
        lines = out.read_text().splitlines()
        assert lines[0] == "time_s,measured,modelled"
        assert lines[1].startswith("0.0,31.0,31.29") and lines[3].startswith("120.0,,32.49")
        result = runner.invoke(app, [*args, "--quantity", "bogus"])
        assert result.exit_code == 2 and "quantity: unknown quantity 'bogus'" in result.output
        result = runner.invoke(app, ["history", "query", RUN, "--address", address])
        assert result.exit_code == 2 and "--run: required" in result.output
