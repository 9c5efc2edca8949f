"""Deviation detection end to end: the plant emulator's true site (services/plant) read by
its sensors, its readings published as telemetry each tick, the live twin (the clock and
the four co-simulation nodes of the small site, in this process, on a real nats-server)
using them, the residual monitor testing them against the twin's own values, the
historian storing its events in PostgreSQL and the History API listing them.

The plant and the twin run the same site (steady load, flat weather) in lockstep, one
plant step per tick of 10 s; the sensors have the noise of the default truth file and
the monitor is told it. A clean run raises nothing; a fault injected at 20 minutes (a
drifting sensor, a fouling heat exchanger, an unreported pump failure) is found within 10
minutes (the stated time) and attributed to its entity, cause and suspect equipment.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import grpc
import jax.numpy as jnp
import nats
import numpy as np
import psycopg
import pytest
from conftest import SMALL, constant_weather, small_site, steady_load

from services.clock import Clock
from services.domain import DOMAINS
from services.historian.history_service import HistoryServicer
from services.historian.migrate import migrate
from services.historian.writer import HistorianWriter, WriterConfig
from services.monitor.cause import EQUIPMENT, RETURN, SENSOR, SUPPLY
from services.monitor.residuals import MonitorConfig
from services.monitor.service import MonitorNode
from services.monitor.wire import is_deviation
from services.node import CoSimNode
from services.plant.run import Plant, PlantOptions
from services.plant.truthfile import Truth
from services.runtime import bus
from services.runtime.grpc_server import GrpcServer
from services.runtime.nats_server import NatsServer
from twin.history.v1 import history_pb2, history_pb2_grpc
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2, deviation_pb2

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("deviation-live")]
SITE = "devlive"
DT = 10.0
OVERRIDES = {**steady_load(0.8), **constant_weather(20.0)}
# The default truth file's sensor noise (services/plant/default_truth.yaml), and the
# monitor told the same (one sigma of each residual).
NOISE = {"cdu_supply_c": 0.05, "cdu_return_c": 0.05, "rack_power_w": 300.0}
MONITOR = MonitorConfig(
    noise={"supply_temperature_c": 0.05, "return_temperature_c": 0.05, "rack_power_w": 300.0}
)
FAULT_AT_S = 1200.0  # 20 minutes into the run
DETECT_WITHIN_S = 600.0  # the stated detection time: 10 minutes
RAISED = deviation_pb2.DEVIATION_STATUS_RAISED
SIGNALS = {  # plant signal -> telemetry quantity
    "cdu_supply_c": telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C,
    "cdu_return_c": telemetry_pb2.QUANTITY_RETURN_TEMPERATURE_C,
    "rack_power_w": telemetry_pb2.QUANTITY_RACK_POWER_W,
}


@pytest.fixture(scope="module")
def nats_server():
    with NatsServer() as server:
        yield server


@pytest.fixture(scope="module")
def database(postgres_url):
    migrate(postgres_url)
    return postgres_url


def truth(*faults: dict) -> Truth:
    return Truth.model_validate(
        {"seed": 7, "sensors": {"noise": NOISE, "dropout": 0.01}, "faults": list(faults)}
    )


def batch(plant: Plant, measured: dict[str, np.ndarray], t: float) -> bytes:
    """The plant's readings as the gateway would publish them (dropouts left out)."""
    out = telemetry_pb2.MeasurementBatch(site_id=SITE, source="plant")
    for signal, quantity in SIGNALS.items():
        for entity, value in zip(
            plant.model.layout.entities(signal), measured[signal], strict=True
        ):
            if math.isfinite(value):
                out.measurements.add(
                    site_id=SITE, entity=entity, quantity=quantity, time_s=t, value=value
                )
    return out.SerializeToString()


class Run:
    """What a run left: the events published, the monitor, the last snapshot."""

    def __init__(self, run_id, events, monitor, snapshot) -> None:
        self.run_id, self.events, self.monitor, self.snapshot = run_id, events, monitor, snapshot

    def raised(self) -> list[deviation_pb2.Deviation]:
        return [e for e in self.events if e.status == RAISED]


async def live_run(
    url: str, the_truth: Truth, minutes: float, database: str | None, site: dict
) -> Run:
    """``site``: overrides of the small site, known to the plant and the twin alike."""
    conns, tasks = [], []

    async def connect(name: str):
        nc = await bus.connect(url, name=name)
        conns.append(nc)
        return nc

    try:
        for domain in DOMAINS:
            node = CoSimNode(await connect(domain), SITE, domain, jnp.float32)
            await node.start()
            tasks.append(asyncio.create_task(node.run()))
        nc = await connect("twin")
        js = nc.jetstream()
        await bus.declare_stream(js, SITE)
        clock = Clock(nc, SITE, await bus.declare_run_bucket(js, SITE))
        await clock.start()
        monitor = MonitorNode(nc, SITE, lambda: clock.run_id, MONITOR)
        await monitor.start()
        clock.deviations = monitor.monitor.open_deviations
        if database is not None:
            writer = HistorianWriter(js, WriterConfig(site=SITE, database_url=database))
            tasks.append(asyncio.create_task(writer.run()))
        spy = await nats.connect(url)
        conns.append(spy)
        events: list[deviation_pb2.Deviation] = []

        async def keep(msg) -> None:
            if is_deviation(msg.headers):
                events.append(deviation_pb2.Deviation.FromString(msg.data))

        await spy.subscribe(bus.events_subject(SITE), cb=keep)
        overrides = [f"{path}={value}" for path, value in site.items()]
        spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=DT, overrides=overrides)
        run_id = await clock.start_run(spec, None, paused=True)
        plant = Plant(small_site(site), the_truth, "truth", PlantOptions(dt=DT))
        subject = bus.telemetry_subject(SITE, "plant")
        for _ in range(round(minutes * 60 / DT)):
            snap = await asyncio.to_thread(plant.step_once)
            await spy.publish(subject, batch(plant, snap.measured, 1.7e9 + snap.time_s))
            await spy.flush()
            await clock.step_ticks(1)
        await asyncio.sleep(0.5)  # the last events reach the spy
        snapshot = clock.snapshot()
        await clock.stop()  # the next test's clock finds no run left behind
        return Run(run_id, events, monitor.monitor, snapshot)
    finally:
        pending = set(tasks)
        while pending:  # again: a cancel landing inside nats-py's fetch can be swallowed
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=5.0)
        for nc in conns:
            with contextlib.suppress(Exception):
                await nc.close()


def run(
    url: str, the_truth: Truth, minutes: float, database: str | None = None, site: dict = OVERRIDES
) -> Run:
    return asyncio.run(asyncio.wait_for(live_run(url, the_truth, minutes, database, site), 900))


def test_a_clean_run_raises_no_deviation(nats_server):
    result = run(nats_server.url, truth(), minutes=60)
    assert result.events == [] and list(result.snapshot.deviations) == []
    # Every monitored residual was tested: 2 CDUs x (supply, return) and 8 racks, each
    # with one sample per tick less the dropouts (1 %).
    series = result.monitor._series
    assert len(series) == 12
    assert all(s.cusum is not None and s.cusum.samples > 330 for s in series.values())


def test_a_drifting_sensor_is_a_sensor_deviation_of_its_cdu(nats_server, database):
    drift = {"kind": "sensor_drift", "at": "20m", "signal": "cdu_supply_c",
             "entity": "cdu/1", "per_hour": 2.0}  # fmt: skip
    result = run(nats_server.url, truth(drift), minutes=35, database=database)
    raised = result.raised()
    assert [(e.entity, e.quantity, e.cause) for e in raised] == [("cdu/1", SUPPLY, SENSOR)]
    e = raised[0]
    assert FAULT_AT_S < e.time_s <= FAULT_AT_S + DETECT_WITHIN_S, e.time_s
    assert e.reason == "return temperature and rack power agree with the model"
    assert e.suspect == "cdu/1"
    # The size: the sensor is 2 degC/h off by then; the estimate is the mean departure
    # since the CUSUM left 0, between none and all of it.
    offset = 2.0 * (e.time_s - FAULT_AT_S) / 3600.0
    assert 0.0 < e.departure <= offset + 3 * 0.05
    assert e.departure_sigmas == pytest.approx(e.departure / 0.05)
    assert e.unit == "degC" and e.run_id == result.run_id and e.site_id == SITE
    # Still open: the snapshot shows it.
    assert [d.event_id for d in result.snapshot.deviations] == [e.event_id]
    # The historian stored it; the History API lists it.
    listed = list_events(database, result.run_id)
    assert [(x.event_id, x.kind) for x in listed] == [(e.event_id, "deviation.raised")]
    assert listed[0].deviation == e and listed[0].time_s == pytest.approx(e.time_s)


def test_heat_exchanger_fouling_is_an_equipment_deviation_of_its_cdu(nats_server):
    fouling = {"kind": "fouling", "at": "20m", "ramp": "10m", "cdu": 0, "ua_fraction": 0.5}
    result = run(nats_server.url, truth(fouling), minutes=35)
    raised = result.raised()
    assert raised, "no deviation raised"
    assert {e.entity for e in raised} == {"cdu/0"}
    assert {e.quantity for e in raised} <= {SUPPLY, RETURN}
    assert {e.cause for e in raised} == {EQUIPMENT}
    first = raised[0]
    assert FAULT_AT_S < first.time_s <= FAULT_AT_S + DETECT_WITHIN_S, first.time_s
    assert first.departure > 0  # a fouled exchanger runs warmer
    assert {e.suspect for e in raised} == {"cdu/0"}  # its own exchanger, not the shared loop


def test_an_unreported_pump_failure_is_an_equipment_deviation_of_the_facility_water(
    nats_server,
):
    # Both facility water pumps on duty (the small site keeps one standby, whose takeover
    # no reading could see): losing one halves the flow, and the facility water, hence
    # every CDU's supply and return, settles about 0.24 K warmer (about 5 sigma).
    site = {**OVERRIDES, "cooling.facility_water.duty_pumps": 2}
    failure = {"kind": "pump_failure", "at": "20m", "index": 0}
    result = run(nats_server.url, truth(failure), minutes=35, site=site)
    raised = result.raised()
    assert raised, "no deviation raised"
    assert {e.cause for e in raised} == {EQUIPMENT}
    assert {e.suspect for e in raised} == {"facility_water"}
    assert {e.quantity for e in raised} <= {SUPPLY, RETURN}
    assert {e.entity for e in raised} == {"cdu/0", "cdu/1"}
    first = raised[0]
    assert FAULT_AT_S < first.time_s <= FAULT_AT_S + DETECT_WITHIN_S, first.time_s
    assert first.reason.endswith("at every CDU: the facility water loop they share")
    assert 0.0 < first.departure <= 0.24 + 3 * 0.05


def list_events(url: str, run_id: str, timeout_s: float = 30.0) -> list[history_pb2.Event]:
    """The run's events through the History API on a real gRPC server, once stored."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM events WHERE run_id = %s", (run_id,)).fetchone():
            assert time.monotonic() < deadline, "no event stored"
            time.sleep(0.2)

    async def main():
        server = GrpcServer("127.0.0.1:0")
        server.add_servicer(
            history_pb2_grpc.add_HistoryServiceServicer_to_server, HistoryServicer(url)
        )
        port = await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = history_pb2_grpc.HistoryServiceStub(channel)
                reply = await stub.ListEvents(history_pb2.ListEventsRequest(run_id=run_id))
                return list(reply.events)
        finally:
            await server.stop(0.5)

    return asyncio.run(main())
