"""The site meter and the UPS over Modbus TCP (a pymodbus server, device id 1), one
register space shared by the holding and input tables (as many meters do):

    0-1   meter active power, kW, float32, big word order   (read as holding registers)
    2-3   UPS output power, kW, float32, big word order      (read as input registers)

Registers are filled from the plant's latest step on every read; a dropped reading is a
float32 NaN (how meters mark "not available").
"""

from __future__ import annotations

import math

from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from services.plant.snapshot import Board

DEVICE_ID = 1
# (point id, table the point map reads it from, address, signal)
REGISTERS = (
    ("meter/active_power_kw", "holding", 0, "meter_power_w"),
    ("ups/output_power_kw", "input", 2, "ups_output_w"),
)
_FLOAT32 = ModbusTcpClient.DATATYPE.FLOAT32


def encode_kw(watts: float) -> list[int]:
    value = float("nan") if math.isnan(watts) else watts / 1e3
    return ModbusTcpClient.convert_to_registers(value, _FLOAT32, word_order="big")


class ModbusDevice:
    def __init__(self, board: Board, host: str, port: int) -> None:
        self.board = board
        registers = SimData(0, count=4, datatype=DataType.REGISTERS, readonly=True)
        device = SimDevice(DEVICE_ID, simdata=[registers], action=self._fill)
        self.server = ModbusTcpServer(device, address=(host, port))

    def registers(self) -> list[int]:
        """Registers 0..3 now (zeros before the first step)."""
        snap = self.board.snapshot
        if snap is None:
            return [0] * 4
        out: list[int] = []
        for _, _, _, signal in REGISTERS:
            out += encode_kw(float(snap.measured[signal][0]))
        return out

    async def _fill(self, function_code, start_address, address, count, current, values):
        current[0:4] = self.registers()
        return None
