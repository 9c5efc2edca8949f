"""Bus payload fuzzing: random bytes and mutated valid messages on every subject the twin's
services subscribe to (clock, each domain's state and replay, telemetry, events), through a
real nats-server to the real clock, the four co-simulation nodes (small site) and the
historian writer (real PostgreSQL), all running in one background event loop. The budget is
fixed and deterministic (``derandomize``). Afterwards every service is still running and a
fresh run equals the monolithic rollout, published and stored."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import jax.numpy as jnp
import numpy as np
import psycopg
import pytest
from conftest import SMALL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.clock import PAUSED, STOPPED, Clock
from services.domain import DOMAINS
from services.historian.migrate import migrate
from services.historian.writer import HistorianWriter, WriterConfig
from services.node import CoSimNode
from services.runtime import bus
from services.runtime.nats_server import NatsServer
from twin.common.v1 import common_pb2
from twin.power.v1 import power_pb2
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2
from twin_core.rollout import simulate
from twin_core.site import load_site

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fuzz-bus")]
SITE = "fuzz"
DT = 10.0
EXAMPLES = 1500


class Stack:
    """The services in a background event loop; ``call`` runs a coroutine there."""

    def __init__(self, nats_url: str, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nats_url, self.database_url = nats_url, database_url
        self.templates: dict[str, bytes] = {}
        self.published: dict[str, dict[int, float]] = {}

    def call(self, coro: Coroutine[Any, Any, Any], timeout_s: float = 180.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def start(self) -> None:
        self.conns, self.nodes, self.tasks = [], {}, {}
        for domain in DOMAINS:
            nc = await bus.connect(self.nats_url, name=domain)
            self.conns.append(nc)
            node = CoSimNode(nc, SITE, domain, jnp.float64, js=nc.jetstream())
            await node.start()
            self.nodes[domain] = node
            self.tasks[domain] = asyncio.create_task(node.run())
        nc = await bus.connect(self.nats_url, name="twin")
        self.conns.append(nc)
        js = nc.jetstream()
        await bus.declare_stream(js, SITE)
        self.clock = Clock(nc, SITE, await bus.declare_run_bucket(js, SITE), stall_timeout_s=60)
        await self.clock.start()
        config = WriterConfig(site=SITE, database_url=self.database_url)
        self.writer = HistorianWriter(js, config)
        self.tasks["historian"] = asyncio.create_task(self.writer.run())
        self.spy = await bus.connect(self.nats_url, name="spy")
        self.conns.append(self.spy)

        async def keep(msg) -> None:
            self.templates.setdefault(msg.subject, msg.data)  # the first valid one
            if msg.subject.endswith("power.state"):
                state = power_pb2.PowerState.FromString(msg.data)
                self.published.setdefault(state.run_id, {})[state.step] = state.meter_w

        await self.spy.subscribe(f"twin.{SITE}.>", cb=keep)
        await self.spy.flush()

    async def run(self, steps: int) -> str:
        spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=DT)
        run_id = await self.clock.start_run(spec, None, paused=True)
        await self.clock.step_ticks(steps)
        return run_id

    async def send(self, subject: str, data: bytes) -> None:
        await self.spy.publish(subject, data)

    async def settle(self) -> None:
        await self.spy.flush()
        await asyncio.sleep(0.5)

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for nc in self.conns:
            await nc.close()


@pytest.fixture(scope="module")
def stack(postgres_url):
    migrate(postgres_url)
    with NatsServer() as server:
        s = Stack(server.url, postgres_url)
        s.call(s.start())
        s.call(s.run(3))
        # Valid payloads of the subjects the stack publishes on by itself, plus telemetry and
        # replay requests, which come from outside.
        rack = telemetry_pb2.Measurement(
            entity="rack/0/1", value=1.2e5, quantity=telemetry_pb2.QUANTITY_RACK_POWER_W
        )
        cdu = telemetry_pb2.Measurement(
            entity="cdu/1", value=31.0, quantity=telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C
        )
        batch = telemetry_pb2.MeasurementBatch(site_id=SITE, measurements=[rack, cdu])
        s.templates[bus.telemetry_subject(SITE, "bms")] = batch.SerializeToString()
        for domain in DOMAINS:
            tick = common_pb2.Tick(run_id=s.clock.run_id, step=1)
            s.templates[bus.replay_subject(SITE, domain)] = tick.SerializeToString()
        try:
            yield s
        finally:
            s.call(s.close())
            s.loop.call_soon_threadsafe(s.loop.stop)
            s.thread.join(10)


def subjects() -> list[str]:
    return sorted(
        [
            bus.clock_subject(SITE),
            bus.events_subject(SITE),
            bus.telemetry_subject(SITE, "bms"),
            *[bus.state_subject(SITE, d) for d in DOMAINS],
            *[bus.replay_subject(SITE, d) for d in DOMAINS],
        ]
    )


@st.composite
def payload(draw, template: bytes) -> bytes:
    how = draw(st.sampled_from(["random", "flip", "truncate", "splice", "empty"]))
    if how == "random" or not template:
        return draw(st.binary(max_size=256))
    if how == "empty":
        return b""
    data = bytearray(template)
    if how == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    else:
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_fuzzed_payloads_on_every_subject(stack, data) -> None:
    subject = data.draw(st.sampled_from(subjects()), label="subject")
    template = stack.templates.get(subject, b"")
    stack.call(stack.send(subject, data.draw(payload(template), label="payload")), 10)


def test_after_fuzzing_the_services_run_and_agree_with_the_monolith(stack) -> None:
    # One garbled message on every subject as well: the test holds on its own, whichever
    # worker or order runs it.
    for subject in subjects():
        stack.call(stack.send(subject, b"\xff\x00 garbled"), 10)
    stack.call(stack.settle())
    alive = {name: not task.done() for name, task in stack.tasks.items()}
    assert alive == dict.fromkeys([*DOMAINS, "historian"], True)
    assert stack.clock.state in (PAUSED, STOPPED)
    refused = sum(node.stats.count() for node in stack.nodes.values())
    assert refused > 0 and stack.writer.stats.bad_messages > 0  # the fuzzing reached them
    steps = 30
    run_id = stack.call(stack.run(steps))
    stack.call(stack.settle())
    published = stack.published[run_id]
    assert sorted(published) == list(range(-1, steps))
    meter = np.array([published[k] for k in range(steps)])
    whole = simulate(load_site(SMALL), steps * DT, DT, DT, dtype=jnp.float64, merge_identical=False)
    np.testing.assert_allclose(meter, whole.means["facility_w"], rtol=1e-6)

    def stored() -> list[tuple]:
        with psycopg.connect(stack.database_url, autocommit=True) as conn:
            return conn.execute(
                "SELECT step, facility_w FROM site_series WHERE run_id = %s ORDER BY step",
                (run_id,),
            ).fetchall()

    for _ in range(100):
        rows = stored()
        if len(rows) == steps:
            break
        stack.call(asyncio.sleep(0.1))
    assert [r[0] for r in rows] == list(range(steps)), (
        stack.writer.stats,
        stack.writer.stats.rejected.snapshot(),
    )
    np.testing.assert_array_equal([r[1] for r in rows], meter)
