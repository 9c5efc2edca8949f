"""The gRPC face of a domain service: GetState, GetConfig and validated Apply commands.

Commands act from the next coupling interval (the node applies them before it steps);
invalid ones are answered INVALID_ARGUMENT with the field named.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import grpc

from services.domain import DomainModel
from services.node import CoSimNode
from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2, compute_pb2_grpc
from twin.cooling.v1 import cooling_pb2, cooling_pb2_grpc
from twin.energy.v1 import energy_pb2, energy_pb2_grpc
from twin.power.v1 import power_pb2, power_pb2_grpc
from twin_core.params import BIG, EQUIPMENT

PB2 = {"compute": compute_pb2, "cooling": cooling_pb2, "power": power_pb2, "energy": energy_pb2}
GRPC = {
    "compute": (compute_pb2_grpc, "ComputeService"),
    "cooling": (cooling_pb2_grpc, "CoolingService"),
    "power": (power_pb2_grpc, "PowerService"),
    "energy": (energy_pb2_grpc, "EnergyService"),
}
KIND_NAMES = {
    common_pb2.EQUIPMENT_KIND_CHILLER: "chiller",
    common_pb2.EQUIPMENT_KIND_PUMP: "pump",
    common_pb2.EQUIPMENT_KIND_CDU: "cdu",
    common_pb2.EQUIPMENT_KIND_DRY_COOLER: "dry_cooler",
    common_pb2.EQUIPMENT_KIND_FEEDER: "feeder",
}


class InvalidCommand(ValueError):
    """A command that does not fit the site; ``str()`` names the field."""


def _installed(model: DomainModel, equipment: str) -> int:
    return int(model.params.installed[EQUIPMENT.index(equipment)])


def _equipment(ref: common_pb2.EquipmentRef, field: str, model: DomainModel) -> tuple[str, int]:
    if ref.kind not in KIND_NAMES:
        raise InvalidCommand(f"{field}.kind: required (chiller, pump, cdu, dry_cooler, feeder)")
    name = KIND_NAMES[ref.kind]
    if ref.index >= _installed(model, name):
        raise InvalidCommand(
            f"{field}.index: {ref.index} out of range, the site has "
            f"{_installed(model, name)} {name} unit(s)"
        )
    return name, ref.index


def _positive(value: float, field: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise InvalidCommand(f"{field}: must be a positive number, got {value!r}")
    return value


def cooling_command(request: cooling_pb2.ApplyRequest, model: DomainModel) -> Callable:
    which = request.WhichOneof("command")
    if which == "set_supply_setpoint":
        value = request.set_supply_setpoint.supply_c
        if not 5.0 <= value <= 60.0:
            raise InvalidCommand(f"set_supply_setpoint.supply_c: {value:g} C is outside 5..60 C")
        return lambda m: m.set("cooling.supply_c", value)
    if which == "fail_equipment":
        kind, index = _equipment(
            request.fail_equipment.equipment, "fail_equipment.equipment", model
        )
        return lambda m: m.fail(kind, index)
    if which == "repair_equipment":
        ref = request.repair_equipment.equipment
        kind, index = _equipment(ref, "repair_equipment.equipment", model)
        return lambda m: m.repair(kind, index)
    raise InvalidCommand(
        "command: required (set_supply_setpoint, fail_equipment, repair_equipment)"
    )


def power_command(request: power_pb2.ApplyRequest, model: DomainModel) -> Callable:
    which = request.WhichOneof("command")
    if which == "set_interconnect_limit":
        limit = _positive(request.set_interconnect_limit.limit_w, "set_interconnect_limit.limit_w")
        return lambda m: m.set("power.interconnect_w", limit)
    if which == "set_it_cap":
        cap = _positive(request.set_it_cap.cap_w, "set_it_cap.cap_w")
        return lambda m: m.set("power.it_cap_w", cap)
    if which == "clear_it_cap":
        return lambda m: m.set("power.it_cap_w", BIG)
    if which in ("fail_feeder", "repair_feeder"):
        index = getattr(request, which).index
        feeders = _installed(model, "feeder")
        if index >= feeders:
            raise InvalidCommand(
                f"{which}.index: {index} out of range, the site has {feeders} feeder(s)"
            )
        if which == "fail_feeder":
            return lambda m: m.fail("feeder", index)
        return lambda m: m.repair("feeder", index)
    raise InvalidCommand("command: required (set_interconnect_limit, set_it_cap, ...)")


def energy_command(request: energy_pb2.ApplyRequest, model: DomainModel) -> Callable:
    which = request.WhichOneof("command")
    if which == "set_grid_import_limit":
        limit = _positive(request.set_grid_import_limit.limit_w, "set_grid_import_limit.limit_w")
        return lambda m: m.set("energy.import_limit_w", limit)
    if which == "clear_grid_import_limit":
        return lambda m: m.set("energy.import_limit_w", BIG)
    if which == "set_battery_mode":
        raise InvalidCommand("set_battery_mode: not supported on a running twin yet")
    raise InvalidCommand("command: required (set_grid_import_limit, clear_grid_import_limit)")


def compute_command(request: compute_pb2.ApplyRequest, model: DomainModel) -> Callable:
    which = request.WhichOneof("command") or "command"
    raise InvalidCommand(f"{which}: not supported on a running twin yet")


COMMANDS = {
    "compute": compute_command,
    "cooling": cooling_command,
    "power": power_command,
    "energy": energy_command,
}


def servicer(domain: str, node: CoSimNode) -> Any:
    """A servicer of ``domain``'s gRPC service backed by its co-simulation node."""
    module, service = GRPC[domain]
    pb2 = PB2[domain]
    base = getattr(module, f"{service}Servicer")

    class Servicer(base):  # type: ignore[misc, valid-type]
        async def GetState(self, request, context):
            if node.latest is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no run has started")
            return pb2.GetStateResponse(state=node.latest)

        async def GetConfig(self, request, context):
            config_type = getattr(pb2, f"{domain.capitalize()}Config")
            step = node.model.step if node.model else 0
            return pb2.GetConfigResponse(config=config_type(run_id=node.run_id, step=step))

        async def Apply(self, request, context):
            if node.model is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no run has started")
            try:
                action = COMMANDS[domain](request, node.model)
            except InvalidCommand as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            step = node.command(action)
            effective = common_pb2.Tick(run_id=node.run_id, step=step, time_s=step * node.model.dt)
            return pb2.ApplyResponse(effective=effective)

    return Servicer()


def add_to_server(domain: str, grpc_server, node: CoSimNode) -> None:
    module, service = GRPC[domain]
    grpc_server.add_servicer(
        getattr(module, f"add_{service}Servicer_to_server"), servicer(domain, node)
    )
