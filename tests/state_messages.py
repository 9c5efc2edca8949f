"""Any domain's state message: they share the header (run_id, step, time_s) and the
quantities map, so tests that read only those are typed against this union."""

from __future__ import annotations

from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.energy.v1 import energy_pb2
from twin.power.v1 import power_pb2

State = (
    compute_pb2.ComputeState
    | cooling_pb2.CoolingState
    | power_pb2.PowerState
    | energy_pb2.EnergyState
)
