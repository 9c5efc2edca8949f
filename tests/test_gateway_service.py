"""The gateway core with a plug-in adapter: the Adapter protocol is all an adapter needs,
and one that fails is restarted without taking the gateway down."""

from __future__ import annotations

import asyncio
import time

import nats

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
            await gateway.start()
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
            await nc.close()

    asyncio.run(main())
