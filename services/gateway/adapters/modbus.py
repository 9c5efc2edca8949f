"""Meters, UPS and switchgear over Modbus TCP (pymodbus): each configured register is
read every ``interval_s`` and decoded with its data type and word order; the point
map's ``scale``/``offset``/``unit`` turn the raw number into the quantity. A device that
does not answer is counted (``unreachable`` / ``timeout``) and retried with backoff; an
exception response (bad address) counts as ``malformed`` for that register.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from pymodbus import ModbusException
from pymodbus.client import AsyncModbusTcpClient

from services.gateway.pointmap import ModbusRegister, ModbusSource
from services.gateway.reading import Emit, Reading

log = logging.getLogger(__name__)
_DT = AsyncModbusTcpClient.DATATYPE
DATATYPES = {
    "int16": _DT.INT16, "uint16": _DT.UINT16, "int32": _DT.INT32, "uint32": _DT.UINT32,
    "int64": _DT.INT64, "uint64": _DT.UINT64, "float32": _DT.FLOAT32, "float64": _DT.FLOAT64,
}  # fmt: skip


class ModbusAdapter:
    def __init__(self, name: str, cfg: ModbusSource) -> None:
        self.name, self.cfg = name, cfg
        self.polls = 0

    async def run(self, emit: Emit) -> None:
        client = AsyncModbusTcpClient(
            self.cfg.host, port=self.cfg.port, timeout=self.cfg.timeout_s, retries=0,
            reconnect_delay=0,  # reconnection is paced here, with the poll's backoff
        )  # fmt: skip
        wait = self.cfg.interval_s
        try:
            while True:
                started = time.monotonic()
                problem = await self._poll(client, emit)
                if problem is None:
                    wait = self.cfg.interval_s
                else:
                    where = f"modbus://{self.cfg.host}:{self.cfg.port}"
                    emit(Reading(self.name, where, None, time.time(), good=False, problem=problem))
                    log.warning("Modbus poll failed", extra={"device": where, "problem": problem})
                    wait = min(max(wait, self.cfg.interval_s) * 2, self.cfg.max_backoff_s)
                await asyncio.sleep(max(0.0, wait - (time.monotonic() - started)))
        finally:
            client.close()

    async def _poll(self, client: AsyncModbusTcpClient, emit: Emit) -> str | None:
        if not client.connected and not await client.connect():
            return "unreachable"
        for register in self.cfg.registers:
            try:
                reading = await self._read(client, register)
            except TimeoutError:
                return "timeout"
            except (ModbusException, ConnectionError, OSError):
                client.close()
                return "unreachable"
            emit(reading)
        self.polls += 1
        return None

    async def _read(self, client: AsyncModbusTcpClient, reg: ModbusRegister) -> Reading:
        data_type = DATATYPES[reg.type]
        count = data_type.value[1]  # registers the type spans
        read = (
            client.read_holding_registers if reg.table == "holding" else client.read_input_registers
        )
        response = await read(reg.address, count=count, device_id=reg.device_id)
        now = time.time()
        if response.isError():
            return Reading(self.name, reg.point, None, now, good=False, problem="malformed")
        # DATATYPES holds only numeric types: each converts to one number, never a list.
        value = cast(
            float,
            client.convert_from_registers(response.registers, data_type, word_order=reg.word_order),
        )
        return Reading(self.name, reg.point, float(value), now)
