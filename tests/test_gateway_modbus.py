"""Modbus TCP: a real pymodbus server on loopback holds a meter's registers; the
gateway's Modbus adapter reads them (data type, word order, scale via the point map)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import nats
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer

from services.gateway.pointmap import parse_pointmap
from services.gateway.service import Gateway
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2 as tm

DT = AsyncModbusTcpClient.DATATYPE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pointmap(port: int, dead_port: int) -> str:
    return f"""
sources:
  meter:
    kind: modbus
    host: 127.0.0.1
    port: {port}
    interval_s: 0.2
    registers:
      - {{point: main/kw, address: 10, type: float32, word_order: little}}
      - {{point: ups/load_w, table: input, address: 20, type: uint32}}
      - {{point: main/kw_x10, address: 30, type: int16}}
      - {{point: nowhere, address: 9000, type: int16}}
  dead:
    kind: modbus
    host: 127.0.0.1
    port: {dead_port}
    interval_s: 0.2
    max_backoff_s: 0.4
    registers:
      - {{point: x, address: 0, type: int16}}
points:
  - {{source: meter, point: main/kw, entity: meter, quantity: meter_power_w, unit: kW,
     stale_s: 10}}
  - {{source: meter, point: ups/load_w, entity: 'ups/0', quantity: equipment_power_w,
     stale_s: 10}}
  - {{source: meter, point: main/kw_x10, entity: feeder/0, quantity: equipment_power_w,
     unit: kW, scale: 0.1, stale_s: 10}}
"""


def test_meter_registers_arrive_and_a_dead_device_is_counted():
    async def main() -> None:
        port = free_port()
        # Input registers are read-only over Modbus: the device starts with them set
        # (block address 1 is protocol address 0).
        inputs = [0] * 100
        inputs[20:22] = AsyncModbusTcpClient.convert_to_registers(70_000, DT.UINT32)
        device = ModbusDeviceContext(
            hr=ModbusSequentialDataBlock(1, [0] * 100), ir=ModbusSequentialDataBlock(1, inputs)
        )
        server = ModbusTcpServer(ModbusServerContext(devices={1: device}, single=False),
                                 address=("127.0.0.1", port))  # fmt: skip
        serving = asyncio.create_task(server.serve_forever())
        # The register values, written through Modbus itself.
        writer = AsyncModbusTcpClient("127.0.0.1", port=port)
        for _ in range(50):
            if await writer.connect():
                break
            await asyncio.sleep(0.05)
        regs = writer.convert_to_registers(1234.5, DT.FLOAT32, word_order="little")
        assert not (await writer.write_registers(10, regs)).isError()
        assert not (await writer.write_registers(30, [(-52) & 0xFFFF])).isError()
        writer.close()

        async with NatsServer() as nats_server:
            nc = await nats.connect(nats_server.url)
            gateway = Gateway(nc, "small", parse_pointmap(pointmap(port, free_port())))
            sub = await nc.subscribe("telemetry.small.meter")
            await gateway.start()
            s = gateway.aligner.stats
            deadline = time.monotonic() + 10
            while s.accepted < 3 or s.rejected["unreachable"] < 2:
                assert time.monotonic() < deadline, s
                await asyncio.sleep(0.05)
            await gateway.publish_tick()
            batch = tm.MeasurementBatch.FromString((await sub.next_msg(timeout=5)).data)
            got = {m.entity: m.value for m in batch.measurements}
            assert got == {
                "meter": pytest.approx(1_234_500.0),  # float32 kW, little word order
                "ups/0": 70_000.0,  # uint32 W from input registers
                "feeder/0": pytest.approx(-5_200.0),  # int16 -52 x 0.1 kW
            }
            assert s.rejected["malformed"] >= 1  # register 9000: an exception response
            await gateway.stop()
            await nc.close()
        with contextlib.suppress(TimeoutError):  # pymodbus may wait on closed peers
            await asyncio.wait_for(server.shutdown(), 5)
        serving.cancel()

    asyncio.run(asyncio.wait_for(main(), 120))  # a hang fails the test, never the suite
