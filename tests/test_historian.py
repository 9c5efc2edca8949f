"""The historian writer (services/historian/writer.py) on a real nats-server (the wheel) and a
real PostgreSQL 16 (pgserver): exact rows, redelivery after a crash between commit and ack,
and a database outage mid-stream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest
from nats.js.errors import NotFoundError
from pg_rows import one
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from state_messages import State

from services.historian.migrate import migrate
from services.historian.writer import EPOCH, HistorianWriter, WriterConfig
from services.historian.writer import run as historian_run
from services.messages import fill_quantities, pack
from services.runtime import bus
from services.runtime.nats_server import NatsServer
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.energy.v1 import energy_pb2
from twin.power.v1 import power_pb2
from twin.twin.v1 import clock_pb2

STEPS = 300
CDUS = 3
RACKS = 4
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def nats_server():
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="module")
def db(postgres_url):
    migrate(postgres_url)
    return postgres_url


def run(coro, timeout: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------------ a fake run


def meter_w(step: int) -> float:
    return 1.25e6 + 256.0 * (step % 5)  # exact in binary: sums are exact


def it_w(step: int) -> float:
    return 1.0e6 + 512.0 * (step % 7)


def states(run_id: str, step: int) -> dict[str, State]:
    t = float(step)
    head = {"run_id": run_id, "step": step, "time_s": t}
    messages: dict[str, State] = {
        "power": power_pb2.PowerState(
            **head,
            meter_w=meter_w(step),
            it_w=it_w(step),
            losses_w=1000.0 + step,
            misc_w=500.0,
            rack_cap_w=pack([2.0e5 + step] * RACKS),
        ),
        "cooling": cooling_pb2.CoolingState(
            **head,
            tcs_supply_c=[30.0 + 0.25 * c for c in range(CDUS)],
            electrical_w=2.0e5 + step,
            fws_supply_c=25.5,
            tcs_supply_mean_c=30.25,
            tcs_supply_max_c=30.5,
            ambient_c=12.0 + 0.5 * (step % 3),
        ),
        "compute": compute_pb2.ComputeState(
            **head,
            rack_ac_w=pack([1.0e5 + r for r in range(RACKS)]),
            heat_liquid_w=[3.0e5 + c for c in range(CDUS)],
            gpu_temp_max_c=70.0 + (step % 4),
            gpu_temp_mean_c=60.0,
            throttled_gpus=step % 3,
            delivered_pflops=42.0,
        ),
        "energy": energy_pb2.EnergyState(
            **head,
            grid_w=1.2e6,
            battery_w=-5.0e4,
            generation_w=1.0e5,
            ppa_w=3.0e5,
            soc=0.5 + 0.125 * (step % 4),
            cost_usd_per_s=0.03,
            emissions_t_per_s=1e-5,
        ),
    }
    for domain, message in messages.items():
        fill_quantities(domain, message)  # fills the message's map in place
    return messages


def start_message(run_id: str, dt_s: float = 1.0, horizon_s: float = 0.0, **kw) -> bytes:
    spec = clock_pb2.RunSpec(scenario_name="small", dt_s=dt_s, horizon_s=horizon_s)
    start = clock_pb2.Clock(run_id=run_id, command=clock_pb2.CLOCK_COMMAND_START, spec=spec, **kw)
    return start.SerializeToString()


async def publish_steps(nc, site: str, run_id: str, steps: range, start: bool = True) -> None:
    """The run's START (as the clock publishes it on the events subject), then its states."""
    js = nc.jetstream()
    if start:
        await nc.publish(bus.events_subject(site), start_message(run_id))
    before = (await js.stream_info(bus.stream_name(site))).state.messages
    for step in steps:
        for domain, message in states(run_id, step).items():
            await bus.publish(nc, bus.state_subject(site, domain), message)
    await nc.flush()
    await wait_for(
        lambda: _stream_count(js, site), lambda n: n >= before + 4 * len(steps), "stream"
    )


async def _stream_count(js, site: str) -> int:
    return (await js.stream_info(bus.stream_name(site))).state.messages


async def wait_for(probe, done, what: str, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: last {value!r}")
        await asyncio.sleep(0.05)


async def drained(js, site: str, durable: str = bus.HISTORIAN_DURABLE) -> None:
    """Until the durable has delivered the last message its filters match and has nothing
    unacked. ``num_pending`` alone is not enough: the server (2.12 on) fills it in after a
    consumer is created, so a fresh consumer can report (0 pending, 0 unacked) before its
    first delivery."""
    stream = bus.stream_name(site)

    async def last_matching(filters: list[str]) -> int:
        last = 0
        for subject in filters:
            with contextlib.suppress(NotFoundError):
                last = max(last, (await js.get_last_msg(stream, subject)).seq or 0)
        return last

    async def probe():
        try:
            info = await js.consumer_info(stream, durable)
        except NotFoundError:  # the writer has not declared it yet
            return None
        config = info.config
        filters = config.filter_subjects or [config.filter_subject or ">"]
        behind = (info.delivered.stream_seq or 0) < await last_matching(filters)
        return info.num_pending, info.num_ack_pending, behind

    await wait_for(probe, lambda v: v == (0, 0, False), "the consumer to drain")


def count(db: str, table: LiteralString, run_id: str) -> int:
    with psycopg.connect(db, prepare_threshold=None) as conn:
        return one(conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = %s", (run_id,)))[0]


async def acount(db: str, table: LiteralString, run_id: str) -> int:
    return await asyncio.to_thread(count, db, table, run_id)


def config(site: str, db: str, **kw) -> WriterConfig:
    return WriterConfig(site=site, database_url=db, **kw)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def assert_complete_run(db: str, run_id: str) -> None:
    with psycopg.connect(db, prepare_threshold=None) as conn:
        n, steps, facility, it, throttled = one(
            conn.execute(
                "SELECT count(*), count(DISTINCT step), sum(facility_w), sum(it_w),"
                " sum(throttled_gpus) FROM site_series WHERE run_id = %s",
                (run_id,),
            )
        )
        assert (n, steps) == (STEPS, STEPS)
        assert facility == sum(meter_w(s) for s in range(STEPS))
        assert it == sum(it_w(s) for s in range(STEPS))
        assert throttled == sum(s % 3 for s in range(STEPS))
        assert count(db, "cdu_series", run_id) == STEPS * CDUS
        assert count(db, "rack_arrays", run_id) == 2 * len(range(0, STEPS, 60))
        # The rollups, refreshed batch by batch, equal the raw rows' buckets.
        rollups: list[tuple[LiteralString, LiteralString]] = [
            ("site_series_1m", "1 minute"),
            ("site_series_1h", "1 hour"),
        ]
        for table, width in rollups:
            rollup = conn.execute(
                "SELECT bucket, samples, facility_w_sum, facility_w_count, it_w_max, it_w_last"
                f" FROM {table} WHERE run_id = %s ORDER BY bucket",
                (run_id,),
            ).fetchall()
            raw = conn.execute(
                f"SELECT date_bin(INTERVAL '{width}', time, %s) AS b, count(*),"
                " sum(facility_w), count(facility_w), max(it_w),"
                " (array_agg(it_w ORDER BY time DESC))[1]"
                " FROM site_series WHERE run_id = %s GROUP BY b ORDER BY b",
                (EPOCH, run_id),
            ).fetchall()
            assert rollup == raw and len(raw) == -(-STEPS // (60 if "1m" in table else 3600))


# --------------------------------------------------------------------------- tests


def test_writer_stores_a_synthetic_run(nats_server: NatsServer, db: str) -> None:
    site, run_id = "hist-synth", "synth-1"

    async def main() -> HistorianWriter:
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            await publish_steps(nc, site, run_id, range(STEPS))
            writer = HistorianWriter(js, config(site, db, batch_max_msgs=400))
            task = asyncio.create_task(writer.run())
            await drained(js, site)
            await stop(task)
            return writer
        finally:
            await nc.close()

    writer = run(main())
    assert writer.stats.steps == STEPS and writer.stats.partial_steps == 0
    assert writer.stats.acked == 4 * STEPS
    assert writer.stats.batches >= 3  # 400 messages a batch at most
    assert_complete_run(db, run_id)
    with psycopg.connect(db, prepare_threshold=None) as conn:
        row = conn.execute(
            "SELECT time, it_w, facility_w, cooling_w, losses_w, misc_w, pue,"
            " tcs_supply_mean_c, tcs_supply_max_c, facility_supply_c, gpu_temp_max_c,"
            " gpu_temp_mean_c, throttled_gpus, delivered_pflops, grid_w, battery_w, ppa_w,"
            " generation_w, soc, cost_usd_per_s, emissions_t_per_s, ambient_c"
            " FROM site_series WHERE run_id = %s AND step = 7",
            (run_id,),
        ).fetchone()
        assert row == (
            EPOCH + timedelta(seconds=7),
            it_w(7),
            meter_w(7),
            2.0e5 + 7,
            1007.0,
            500.0,
            pytest.approx(meter_w(7) / it_w(7)),
            30.25,
            30.5,
            25.5,
            73.0,
            60.0,
            1,
            42.0,
            1.2e6,
            -5.0e4,
            3.0e5,
            1.0e5,
            0.875,
            0.03,
            1e-5,
            12.5,
        )
        cdus = conn.execute(
            "SELECT cdu, tcs_supply_c, heat_liquid_w FROM cdu_series"
            " WHERE run_id = %s AND step = 7 ORDER BY cdu",
            (run_id,),
        ).fetchall()
        assert cdus == [(c, 30.0 + 0.25 * c, 3.0e5 + c) for c in range(CDUS)]
        racks = dict(
            conn.execute(
                'SELECT quantity, "values" FROM rack_arrays WHERE run_id = %s AND step = 120',
                (run_id,),
            ).fetchall()
        )
        assert racks == {
            "rack_ac_w": [1.0e5 + r for r in range(RACKS)],
            "rack_cap_w": [2.0e5 + 120] * RACKS,
        }
        steps = one(
            conn.execute(
                "SELECT array_agg(DISTINCT step ORDER BY step) FROM rack_arrays WHERE run_id = %s",
                (run_id,),
            )
        )[0]
        assert steps == [0, 60, 120, 180, 240]


def test_run_records_and_refused_state_messages(nats_server: NatsServer, db: str) -> None:
    """The runs row comes from the clock's START/STOP (dt 10 s, horizon, pace, wall-clock
    start and end, status); states of no run ('' from an empty payload), of a run the clock
    never started, beyond the horizon or not finite are refused, counted and terminated."""
    from services.historian.queries import summarize

    site, run_id = "hist-records", "rec-1"
    started, ended = 1_790_000_000.0, 1_790_000_030.5

    async def main():
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            events = bus.events_subject(site)
            await nc.publish(
                events,
                start_message(run_id, 10.0, 50.0, real_time_factor=120.0, wall_time_s=started),
            )
            for step in range(5):
                for domain, message in states(run_id, step).items():
                    message.time_s = 10.0 * (step + 1)
                    await bus.publish(nc, bus.state_subject(site, domain), message)
            power = bus.state_subject(site, "power")
            await nc.publish(power, b"")  # the finding: parsed as run '' at step 0
            await bus.publish(nc, power, states("forged", 1)["power"])  # never started
            await bus.publish(nc, power, states(run_id, 5)["power"])  # beyond the horizon
            nan = states(run_id, 2)["power"]
            assert isinstance(nan, power_pb2.PowerState)
            nan.meter_w = float("nan")
            await bus.publish(nc, power, nan)
            await nc.publish(power, b"\xff\x00 not protobuf")
            late = states(run_id, 3)["power"]
            late.time_s = 1e300  # finite, but no timestamp holds it
            await bus.publish(nc, power, late)
            crowd = states(run_id, 1)["compute"]
            crowd.quantities["throttled_gpus"] = 2**32 - 1  # no integer column holds it
            await bus.publish(nc, bus.state_subject(site, "compute"), crowd)
            stop_ = clock_pb2.Clock(
                run_id=run_id,
                step=4,
                command=clock_pb2.CLOCK_COMMAND_STOP,
                end=clock_pb2.RUN_END_COMPLETED,
                wall_time_s=ended,
            )
            await bus.publish(nc, events, stop_)
            await nc.flush()
            await wait_for(lambda: _stream_count(js, site), lambda n: n >= 29, "stream")
            writer = HistorianWriter(js, config(site, db))
            task = asyncio.create_task(writer.run())
            await drained(js, site)
            await stop(task)
            async with await psycopg.AsyncConnection.connect(db) as conn:
                summary = await summarize(conn, run_id, ["facility_w"])
            return writer, summary
        finally:
            await nc.close()

    writer, summary = run(main())
    assert writer.stats.rejected.snapshot() == {
        "PowerState.invalid": 5,
        "PowerState.undecodable": 1,
        "ComputeState.invalid": 1,
    }
    assert writer.stats.bad_messages == 7 and writer.stats.steps == 5
    with psycopg.connect(db, prepare_threshold=None) as conn:
        runs = conn.execute(
            "SELECT run_id, site_id, scenario, dt_s, horizon_s, real_time_factor, status,"
            " started_at, ended_at, last_step FROM runs WHERE site_id = %s OR run_id IN"
            " ('', 'forged')",
            (site,),
        ).fetchall()
        stored = conn.execute(
            "SELECT run_id, count(*), sum(facility_w) FROM site_series"
            " WHERE run_id IN (%s, '', 'forged') GROUP BY run_id",
            (run_id,),
        ).fetchall()
    assert runs == [
        (
            run_id,
            site,
            "small",
            10.0,
            50.0,
            120.0,
            "completed",
            datetime.fromtimestamp(started, UTC),
            datetime.fromtimestamp(ended, UTC),
            4,
        )
    ]
    assert stored == [(run_id, 5, sum(meter_w(k) for k in range(5)))]
    # Energy from the stored step: sum(W) x 10 s, not x 1 s.
    assert summary.dt_s == 10.0
    assert summary.metrics[0].energy_mwh == sum(meter_w(k) for k in range(5)) * 10.0 / 3.6e9


def test_incomplete_step_is_written_after_its_max_age(nats_server: NatsServer, db: str) -> None:
    site, run_id = "hist-partial", "partial-1"

    async def main() -> tuple[HistorianWriter, list[tuple]]:
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            await nc.publish(bus.events_subject(site), start_message(run_id))
            for domain, message in states(run_id, 0).items():
                if domain != "energy":  # the energy service never published step 0
                    await bus.publish(nc, bus.state_subject(site, domain), message)
            await nc.flush()
            await wait_for(lambda: _stream_count(js, site), lambda n: n >= 4, "stream")
            writer = HistorianWriter(js, config(site, db, incomplete_max_age_s=0.5))
            task = asyncio.create_task(writer.run())

            async def partial_steps() -> int:
                return writer.stats.partial_steps

            # The write itself, not the durable's counters: on a busy machine the consumer
            # can read drained before the writer has fetched the step.
            await wait_for(partial_steps, lambda n: n >= 1, "the incomplete step's write")
            await drained(js, site)
            partial = await asyncio.to_thread(stored, db, run_id)
            # The missing domain arrives after all (a redelivery after a historian crash):
            # it fills the NULL columns and changes nothing else.
            await bus.publish(nc, bus.state_subject(site, "energy"), states(run_id, 0)["energy"])
            await nc.flush()
            await wait_for(lambda: _stream_count(js, site), lambda n: n >= 5, "stream")
            await drained(js, site)
            await stop(task)
            return writer, partial
        finally:
            await nc.close()

    def stored(db: str, run_id: str) -> list[tuple]:
        with psycopg.connect(db, prepare_threshold=None) as conn:
            return conn.execute(
                "SELECT facility_w, grid_w, soc FROM site_series WHERE run_id = %s", (run_id,)
            ).fetchall()

    writer, partial = run(main())
    assert writer.stats.partial_steps == 2  # the step without energy, then energy alone
    assert partial == [(meter_w(0), None, None)]
    assert stored(db, run_id) == [(meter_w(0), 1.2e6, 0.5)]


class HangingWriter(HistorianWriter):
    """Commits its first batches normally, then hangs before acking one: the crash window
    between commit and ack."""

    def __init__(self, *args, ack_batches: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.ack_batches = ack_batches
        self.hung = asyncio.Event()

    async def _ack(self, msgs):
        if self.stats.batches >= self.ack_batches:
            self.hung.set()
            await asyncio.Event().wait()  # until cancelled: never acks this batch
        await super()._ack(msgs)


def test_crash_between_commit_and_ack_loses_and_duplicates_nothing(
    nats_server: NatsServer, db: str
) -> None:
    site, run_id = "hist-crash", "crash-1"

    async def main() -> tuple[int, int, HistorianWriter]:
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            await publish_steps(nc, site, run_id, range(STEPS))
            cfg = config(site, db, batch_max_msgs=200, fetch_batch=100, ack_wait_s=1.5)
            first = HangingWriter(js, cfg, ack_batches=2)
            task = asyncio.create_task(first.run())
            await asyncio.wait_for(first.hung.wait(), TIMEOUT_S)
            await stop(task)  # killed with a committed, unacked batch
            stored = await acount(db, "site_series", run_id)
            info = await js.consumer_info(bus.stream_name(site), bus.HISTORIAN_DURABLE)
            second = HistorianWriter(js, cfg)  # the restart: redeliveries included
            task = asyncio.create_task(second.run())
            await drained(js, site)
            await stop(task)
            assert info.num_ack_pending is not None
            return stored, info.num_ack_pending, second
        finally:
            await nc.close()

    stored, unacked, second = run(main())
    assert 0 < stored < STEPS  # the crash happened mid-run ...
    assert unacked > 0  # ... with messages whose rows were committed but not acked
    assert second.stats.acked >= 4 * STEPS - 4 * stored  # it redid the rest
    assert_complete_run(db, run_id)


class PausableProxy:
    """TCP on loopback -> the PostgreSQL unix socket; ``pause()`` drops every connection
    and refuses new ones (a database outage) until ``resume()``."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def pause(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    resume = start

    async def close(self) -> None:
        if self._server is not None:
            await self.pause()

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def _socket_path(url: str) -> str:
    params = conninfo_to_dict(url)
    return f"{params['host']}/.s.PGSQL.{params.get('port') or 5432}"


@pytest.mark.slow
def test_database_outage_loses_nothing(nats_server: NatsServer, db: str) -> None:
    site, run_id = "hist-outage", "outage-1"
    params = conninfo_to_dict(db)
    if not str(params.get("host", "")).startswith("/"):
        pytest.skip("the proxy forwards to pgserver's unix socket")
    half = STEPS // 2

    async def main() -> HistorianWriter:
        proxy = PausableProxy(_socket_path(db))
        await proxy.start()
        via_proxy = make_conninfo(db, host="127.0.0.1", port=str(proxy.port), sslmode="disable")
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await bus.declare_stream(js, site)
            cfg = config(
                site, via_proxy, batch_max_msgs=200, backoff_initial_s=0.05, backoff_max_s=0.5
            )
            writer = HistorianWriter(js, cfg)
            task = asyncio.create_task(writer.run())
            await publish_steps(nc, site, run_id, range(half))
            await drained(js, site)
            assert await acount(db, "site_series", run_id) == half
            await proxy.pause()  # the database goes away ...
            await publish_steps(nc, site, run_id, range(half, STEPS), start=False)
            await wait_for(
                lambda: asyncio.sleep(0, writer.stats.db_failures),
                lambda n: n >= 3,
                "write failures during the outage",
            )
            info = await js.consumer_info(bus.stream_name(site), bus.HISTORIAN_DURABLE)
            assert info.num_ack_pending is not None and info.num_pending is not None
            assert info.num_ack_pending + info.num_pending == 4 * (STEPS - half)  # kept
            assert await acount(db, "site_series", run_id) == half
            await proxy.resume()  # ... and comes back
            await drained(js, site)
            await stop(task)
            return writer
        finally:
            await nc.close()
            await proxy.close()

    writer = run(main())
    assert writer.stats.db_failures >= 3
    assert_complete_run(db, run_id)


def test_run_as_a_service(nats_server: NatsServer, db: str) -> None:
    site, run_id = "hist-service", "service-1"

    async def main() -> None:
        cfg = config(site, db, nats_url=nats_server.url)
        service = asyncio.create_task(historian_run(cfg))
        nc = await bus.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await wait_for(lambda: _has_stream(js, site), bool, "the service's stream")
            await publish_steps(nc, site, run_id, range(10))
            await drained(js, site)
            await stop(service)
        finally:
            await nc.close()

    run(main())
    assert count(db, "site_series", run_id) == 10


async def _has_stream(js, site: str) -> bool:
    try:
        await js.stream_info(bus.stream_name(site))
    except NotFoundError:
        return False
    return True


# ------------------------------------------------------- the live twin, historian killed


async def published_power(url: str, site: str, run_id: str, n: int) -> dict[int, float]:
    """step -> meter_w of the run's power states as the stream holds them (what was
    published), read with an ordered consumer from the start."""
    nc = await bus.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(bus.state_subject(site, "power"), ordered_consumer=True)
        got: dict[int, float] = {}
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < n and time.monotonic() < deadline:
            msg = await sub.next_msg(timeout=5)
            state = power_pb2.PowerState.FromString(msg.data)
            if state.run_id == run_id and state.step >= 0:
                got[state.step] = state.meter_w
        await sub.unsubscribe()
        return got
    finally:
        await nc.close()


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_historian_killed_mid_run_stores_every_tick_once() -> None:
    """SIGKILL the historian process of a live twin mid-run, start it again, let the run
    end: every tick is stored exactly once, complete, with the published values. Messages
    the dead historian had fetched come back only after the durable's ack wait (60 s), so
    this takes a minute or two."""
    import signal

    import grpc

    from services.launcher import LocalTwin, free_addresses, health
    from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc

    ticks = 600
    yaml_text = (Path(__file__).parent / "sites" / "small.yaml").read_text()
    spec = clock_pb2.RunSpec(scenario_yaml=yaml_text, dt_s=1.0, horizon_s=ticks)
    start = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(as_fast_as_possible=True))
    with (
        LocalTwin("small", free_addresses(), ready_timeout_s=120) as twin,
        grpc.insecure_channel(twin.addresses["twin"]) as channel,
    ):
        stub = twin_pb2_grpc.TwinServiceStub(channel)

        def step() -> int:
            request = twin_pb2.GetSnapshotRequest(run_id=run_id)
            return stub.GetSnapshot(request, timeout=30).snapshot.step

        run_id = stub.Start(start, timeout=300).run_id
        db = twin.database_url
        assert db is not None and twin.nats_url is not None
        deadline = time.monotonic() + TIMEOUT_S
        while count(db, "site_series", run_id) == 0:  # the historian is writing this run
            assert time.monotonic() < deadline, "the historian stored nothing"
            time.sleep(0.02)
        historian = twin.processes["historian"]
        historian.send_signal(signal.SIGKILL)
        historian.wait(10)
        killed_at = step()
        assert killed_at < ticks, "the run ended before the historian was killed"
        twin.processes["historian"] = twin._spawn("historian")
        deadline = time.monotonic() + 60
        while health(twin.addresses["historian"]) != "SERVING":
            assert time.monotonic() < deadline, "the historian did not come back"
            time.sleep(0.2)
        deadline = time.monotonic() + 120
        while step() < ticks:
            assert time.monotonic() < deadline, "the run did not end"
            time.sleep(0.2)
        meter = run(published_power(twin.nats_url, "small", run_id, ticks))
        assert sorted(meter) == list(range(ticks))

        def complete() -> tuple[int, int]:
            with psycopg.connect(db, prepare_threshold=None) as conn:
                return one(
                    conn.execute(
                        "SELECT count(*), count(*) FILTER (WHERE num_nulls(it_w, facility_w,"
                        " cooling_w, gpu_temp_max_c, grid_w, soc, ambient_c) = 0)"
                        " FROM site_series WHERE run_id = %s",
                        (run_id,),
                    )
                )

        deadline = time.monotonic() + 150  # ack wait (60 s) + incomplete max age (30 s)
        while complete() != (ticks, ticks):
            assert time.monotonic() < deadline, f"stored (rows, complete): {complete()}"
            time.sleep(0.5)
        with psycopg.connect(db, prepare_threshold=None) as conn:
            rows = conn.execute(
                "SELECT step, time, facility_w, it_w, pue FROM site_series WHERE run_id = %s"
                " ORDER BY step",
                (run_id,),
            ).fetchall()
            rollup = one(
                conn.execute(
                    "SELECT sum(samples), sum(facility_w_sum) FROM site_series_1m"
                    " WHERE run_id = %s",
                    (run_id,),
                )
            )
        # The twin process serves the History API too (TWIN_DATABASE_URL is set).
        from twin.history.v1 import history_pb2, history_pb2_grpc

        history = history_pb2_grpc.HistoryServiceStub(channel)
        runs = history.ListRuns(history_pb2.ListRunsRequest(), timeout=30).runs
        assert [(r.run_id, r.steps_stored) for r in runs] == [(run_id, ticks)]
    assert [r[0] for r in rows] == list(range(ticks))  # each tick once, none twice
    # step k covers (k, k + 1] s: stamped at its end
    assert [r[1] for r in rows] == [EPOCH + timedelta(seconds=k + 1) for k in range(ticks)]
    assert [r[2] for r in rows] == [meter[k] for k in range(ticks)]  # the published values
    assert all(r[4] == pytest.approx(r[2] / r[3], rel=1e-12) for r in rows)
    # the rollups saw the late rows too
    assert rollup[0] == ticks
    assert rollup[1] == pytest.approx(sum(r[2] for r in rows), rel=1e-12)


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_twin_up_with_a_duration_reports_and_exits(tmp_path) -> None:
    """`twin up --duration`: the run goes as fast as possible, ends, the report comes
    from the History API (table, history.csv, hourly.png), everything stops, exit 0."""
    import csv
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    out = tmp_path / "report"
    command = [sys.executable, "-m", "services.cli", "up", "tests/sites/small.yaml"]
    command += ["--duration", "2h", "--dt", "10s", "--report", str(out), "--base-port", "0"]
    done = subprocess.run(
        command,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PUE" in done.stdout and "stopped" in done.stdout, done.stdout
    assert "01:00:00" in done.stdout and "MWh" in done.stdout  # two hourly rows and the run
    assert "02:00:00" not in done.stdout
    with (out / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(720))
    assert [float(r["time_s"]) for r in rows] == [10.0 * (k + 1) for k in range(720)]
    assert all(float(r["facility_w"]) > float(r["it_w"]) > 0 for r in rows)
    assert (out / "hourly.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the services logged into the report folder, not over the report
    assert "service stopped service=historian" in (out / "services.log").read_text()
    assert "service stopped" not in done.stderr
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
