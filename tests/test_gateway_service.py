"""The gateway core with a plug-in adapter: the Adapter protocol is all an adapter needs,
and one that fails is restarted without taking the gateway down."""

from __future__ import annotations

import asyncio
import gc
import time

import nats

from services.gateway.heap import FULL, MIDDLE, YOUNG
from services.gateway.pointmap import parse_pointmap
from services.gateway.reading import Adapter, Emit, Reading
from services.gateway.service import Gateway
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2 as tm

MAP = """
sources:
  meter: {kind: dcgm, urls: ["http://127.0.0.1:1/unused"]}
points:
  - {source: meter, point: grid/main/kw, entity: meter, quantity: meter_power_w,
     unit: kW, stale_s: 10}
"""


class Flaky:
    """Fails on its first run (a broken connection), then reads one value."""

    name = "meter"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, emit: Emit) -> None:
        self.runs += 1
        if self.runs == 1:
            raise ConnectionResetError("meter went away")
        emit(Reading("meter", "grid/main/kw", 1250.0, time.time()))
        await asyncio.Event().wait()


def test_a_failing_adapter_is_restarted_and_its_values_arrive():
    assert isinstance(Flaky(), Adapter)

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            flaky = Flaky()  # serves the map's source `meter`
            gateway = Gateway(nc, "small", parse_pointmap(MAP), adapters=[flaky])
            sub = await nc.subscribe("telemetry.small.meter")
            before = gc.get_threshold()
            await gateway.start()
            assert gc.get_threshold() == (YOUNG, MIDDLE, FULL)  # services/gateway/heap.py
            deadline = time.monotonic() + 10
            while gateway.aligner.stats.accepted < 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert (flaky.runs, gateway.restarts) == (2, 1)
            await gateway.publish_tick()
            batch = tm.MeasurementBatch.FromString((await sub.next_msg(timeout=5)).data)
            assert [(m.entity, m.quantity, m.value) for m in batch.measurements] == [
                ("meter", tm.QUANTITY_METER_POWER_W, 1_250_000.0)
            ]
            await gateway.stop()
            assert gc.get_threshold() == before  # given back
            await nc.close()

    asyncio.run(main())


class Meter:
    """Reads a value whenever ``reads`` gets one."""

    name = "meter"

    def __init__(self) -> None:
        self.reads: asyncio.Queue[float] = asyncio.Queue()

    async def run(self, emit: Emit) -> None:
        while True:
            emit(Reading("meter", "grid/main/kw", await self.reads.get(), time.time()))


def test_changed_values_are_sent_between_ticks():
    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            meter = Meter()
            pointmap = parse_pointmap(MAP)
            gateway = Gateway(nc, "small", pointmap, adapters=[meter], ahead_s=0.05)
            sub = await nc.subscribe("telemetry.small.meter")
            await gateway.start()

            async def sent() -> list[float]:
                batch = tm.MeasurementBatch.FromString((await sub.next_msg(timeout=5)).data)
                return [m.value for m in batch.measurements]

            # No tick: each new value comes within ~ahead_s, once.
            for kw in (1250.0, 1300.0):
                await meter.reads.put(kw)
                assert await sent() == [kw * 1e3]
            await asyncio.sleep(0.3)  # nothing new: nothing sent
            assert sub.pending_msgs == 0
            await gateway.publish_tick()  # the tick sends the value again
            assert await sent() == [1_300_000.0]
            s = gateway.stats()
            assert (s["ahead"], s["published"], s["ticks"], s["batches"]) == (2, 1, 1, 3)
            await gateway.stop()
            await nc.close()

    asyncio.run(main())


def test_the_map_is_loaded_once_for_the_check_and_the_setup(tmp_path):
    from services.gateway.service import GatewayConfig, _load

    path = tmp_path / "map.yaml"
    path.write_text(MAP)
    config = GatewayConfig.from_env({"TWIN_POINT_MAP": str(path), "TWIN_GATEWAY_AHEAD_S": "0.5"})
    assert config.gateway_ahead_s == 0.5
    first = _load(path)
    assert _load(path) is first  # the map the configuration check loaded
    path.write_text(MAP.replace("stale_s: 10", "stale_s: 20.5"))  # (another size)
    assert _load(path).points[0].stale_s == 20.5  # a changed file is read again
