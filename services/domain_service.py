"""The gRPC face of a domain service: GetState, GetConfig and validated Apply commands.

Commands act from the next coupling interval (the node applies them before it steps);
invalid ones are answered INVALID_ARGUMENT with the field named.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import grpc
import jax
import numpy as np

from services.domain import DomainModel
from services.messages import pack
from services.node import CoSimNode
from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2, compute_pb2_grpc
from twin.cooling.v1 import cooling_pb2, cooling_pb2_grpc
from twin.energy.v1 import energy_pb2, energy_pb2_grpc
from twin.power.v1 import power_pb2, power_pb2_grpc
from twin_core import NO_LIMIT as BIG
from twin_core.contract import Equipment
from twin_core.coupling import active_failures
from twin_core.energy import ARBITRAGE, OFF, PEAK_SHAVE, SWING_FIRMING
from twin_core.inputs import clip

PB2 = {"compute": compute_pb2, "cooling": cooling_pb2, "power": power_pb2, "energy": energy_pb2}
GRPC = {
    "compute": (compute_pb2_grpc, "ComputeService"),
    "cooling": (cooling_pb2_grpc, "CoolingService"),
    "power": (power_pb2_grpc, "PowerService"),
    "energy": (energy_pb2_grpc, "EnergyService"),
}
# The bus's EquipmentKind -> the site file's label (EQUIPMENT_KIND_DRY_COOLER -> dry_cooler).
KIND_NAMES = {getattr(common_pb2, f"EQUIPMENT_KIND_{e.name}"): e.label for e in Equipment}


BATTERY_MODES = {
    energy_pb2.BATTERY_MODE_OFF: OFF,
    energy_pb2.BATTERY_MODE_PEAK_SHAVE: PEAK_SHAVE,
    energy_pb2.BATTERY_MODE_SWING_FIRMING: SWING_FIRMING,
    energy_pb2.BATTERY_MODE_ARBITRAGE: ARBITRAGE,
}


class InvalidCommand(ValueError):
    """A command that does not fit the site; ``str()`` names the field."""


def _installed(model: DomainModel, equipment: str) -> int:
    return int(model.params.installed[Equipment.of(equipment)])


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


# Upper bounds of commanded values: far above any facility, far below overflow.
MAX_W = 1e12  # a terawatt
MAX_W_PER_S = 1e15  # the site schema's default ramp limit (1e9 MW/s): no limit
MAX_USD_PER_MWH = 1e12
MAX_SECONDS = 1e12


def _positive(value: float, field: str, upper: float = MAX_W) -> float:
    if not (math.isfinite(value) and 0 < value <= upper):
        raise InvalidCommand(f"{field}: must be a positive number up to {upper:g}, got {value!r}")
    return value


def _in_range(value: float, field: str, lower: float, upper: float) -> float:
    if not (math.isfinite(value) and lower <= value <= upper):
        raise InvalidCommand(f"{field}: must be a number in {lower:g}..{upper:g}, got {value!r}")
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


def _set_all(changes: dict[str, float], index: tuple[int, ...] | None = None) -> Callable:
    """A command that sets several parameters (or one element of each) together."""

    def apply(m: DomainModel) -> None:
        for path, value in changes.items():
            if index is None:
                m.set(path, value)
            else:
                m.set_item(path, index, value)

    return apply


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
        command = request.set_battery_mode
        if command.mode not in BATTERY_MODES:
            raise InvalidCommand("set_battery_mode.mode: required (off, peak_shave, ...)")
        if (
            command.mode != energy_pb2.BATTERY_MODE_OFF
            and float(model.params.energy.battery_capacity_mwh) <= 0
        ):
            raise InvalidCommand("set_battery_mode.mode: the site has no battery")
        changes: dict[str, float] = {"energy.battery_mode": BATTERY_MODES[command.mode]}
        for field, path, lower, upper in (
            ("peak_threshold_w", "energy.peak_threshold_w", 0.0, MAX_W),
            ("ramp_limit_w_per_s", "energy.grid_ramp_w_per_s", 0.0, MAX_W_PER_S),
            ("charge_below_usd_per_mwh", "energy.charge_below", -MAX_USD_PER_MWH, MAX_USD_PER_MWH),
            (
                "discharge_above_usd_per_mwh",
                "energy.discharge_above",
                -MAX_USD_PER_MWH,
                MAX_USD_PER_MWH,
            ),
        ):
            if command.HasField(field):
                value = getattr(command, field)
                if field == "ramp_limit_w_per_s":
                    _positive(value, f"set_battery_mode.{field}", upper)
                else:
                    _in_range(value, f"set_battery_mode.{field}", lower, upper)
                changes[path] = value
        return _set_all(changes)
    raise InvalidCommand(
        "command: required (set_battery_mode, set_grid_import_limit, clear_grid_import_limit)"
    )


def compute_command(request: compute_pb2.ApplyRequest, model: DomainModel) -> Callable:
    which = request.WhichOneof("command")
    slots, cdus = model.params.compute.mask.shape
    if which == "set_rack_cap":
        rack, cap = request.set_rack_cap.rack, request.set_rack_cap.cap_w
        if (
            rack.slot >= slots
            or rack.cdu >= cdus
            or not model.params.compute.mask[rack.slot, rack.cdu]
        ):
            raise InvalidCommand(
                f"set_rack_cap.rack: no rack at slot {rack.slot}, cdu {rack.cdu} "
                f"(the site has {slots} slots x {cdus} CDUs)"
            )
        _positive(cap, "set_rack_cap.cap_w")
        return lambda m: m.set_item("compute.operator_cap_w", (rack.slot, rack.cdu), cap)
    if which == "set_all_rack_caps":
        cap = _positive(request.set_all_rack_caps.cap_w, "set_all_rack_caps.cap_w")
        return lambda m: m.set("compute.operator_cap_w", np.full((slots, cdus), cap))
    if which == "clear_rack_caps":
        return lambda m: m.set("compute.operator_cap_w", np.full((slots, cdus), BIG))
    if which == "update_training_job":
        return _training_update(request.update_training_job, model)
    raise InvalidCommand(
        "command: required (set_rack_cap, set_all_rack_caps, clear_rack_caps, ...)"
    )


def _training_update(job: compute_pb2.UpdateTrainingJob, model: DomainModel) -> Callable:
    names = [j.name for j in model.site.workload.training]
    if job.name not in names:
        raise InvalidCommand(
            f"update_training_job.name: unknown job {clip(job.name)!r} "
            f"(known: {clip(', '.join(names))})"
        )
    j = names.index(job.name)
    c = model.params.compute
    period = float(c.job_period_s[j])
    fraction = float(c.job_compute_s[j]) / period
    if job.HasField("iteration_s"):
        period = _positive(job.iteration_s, "update_training_job.iteration_s", MAX_SECONDS)
    if job.HasField("compute_fraction"):
        fraction = job.compute_fraction
        if not 0 < fraction <= 1:
            raise InvalidCommand(
                f"update_training_job.compute_fraction: {fraction:g} is outside (0, 1]"
            )
    changes = {"compute.job_period_s": period, "compute.job_compute_s": period * fraction}
    for field, path in (
        ("compute_util", "compute.job_compute_util"),
        ("comm_util", "compute.job_comm_util"),
        ("checkpoint_util", "compute.job_ckpt_util"),
    ):
        if job.HasField(field):
            value = getattr(job, field)
            if not 0 <= value <= 1:
                raise InvalidCommand(f"update_training_job.{field}: {value:g} is outside 0..1")
            changes[path] = value
    return _set_all(changes, (j,))


def _failed(model: DomainModel, kinds: tuple[str, ...]) -> list[tuple[str, int]]:
    """Units out of service now."""
    f = jax.tree.map(np.asarray, model.params.failures)
    kind = f.kind
    active = active_failures(f, model.step * model.dt)
    found = {
        (Equipment(k).label, int(i))
        for k, i in zip(kind[active], np.asarray(f.index)[active], strict=True)
    }
    return sorted(unit for unit in found if unit[0] in kinds)


def _limit(value: float) -> float | None:
    return None if value >= BIG / 10 else float(value)


def config_of(domain: str, model: DomainModel) -> Any:
    """The configuration in force (also kept in the live-configuration KV bucket)."""
    p, site = model.params, model.site
    if domain == "cooling":
        codes = {name: code for code, name in KIND_NAMES.items()}
        return cooling_pb2.CoolingConfig(
            step=model.step,
            supply_c=float(p.cooling.supply_c),
            cdus=site.cdu_count,
            pumps=site.cooling.facility_water.pumps,
            dry_coolers=site.cooling.dry_coolers.units,
            chillers=site.cooling.chillers.units,
            failed=[
                common_pb2.EquipmentRef(kind=codes[k], index=i)
                for k, i in _failed(model, ("chiller", "pump", "cdu", "dry_cooler"))
            ],
        )
    if domain == "power":
        return power_pb2.PowerConfig(
            step=model.step,
            interconnect_limit_w=float(p.power.interconnect_w),
            it_cap_w=_limit(float(p.power.it_cap_w)),
            feeders=site.power.feeders,
            failed_feeders=[i for _, i in _failed(model, ("feeder",))],
        )
    if domain == "energy":
        modes = {code: mode for mode, code in BATTERY_MODES.items()}
        e = p.energy
        return energy_pb2.EnergyConfig(
            step=model.step,
            battery_mode=modes[int(e.battery_mode)],
            peak_threshold_w=float(e.peak_threshold_w),
            ramp_limit_w_per_s=float(e.grid_ramp_w_per_s),
            charge_below_usd_per_mwh=float(e.charge_below),
            discharge_above_usd_per_mwh=float(e.discharge_above),
            battery_capacity_wh=float(e.battery_capacity_mwh) * 1e6,
            battery_power_w=float(e.battery_power_mw) * 1e6,
            grid_import_limit_w=_limit(float(e.import_limit_w)),
        )
    c = p.compute
    caps = np.broadcast_to(np.asarray(c.operator_cap_w), c.mask.shape)
    slots, cdus = c.mask.shape
    capped = [(r, d) for r in range(slots) for d in range(cdus) if caps[r, d] < BIG / 10]
    return compute_pb2.ComputeConfig(
        step=model.step,
        slots=slots,
        cdus=cdus,
        racks=site.rack_count,
        gpus=site.gpu_count,
        rack_full_load_w=pack(np.asarray(c.rack_max_ac_w)),
        rack_caps=[
            compute_pb2.RackCap(rack=common_pb2.RackRef(slot=r, cdu=d), cap_w=float(caps[r, d]))
            for r, d in capped
        ],
        training_jobs=[
            compute_pb2.TrainingJob(
                name=job.name,
                racks=job.racks,
                iteration_s=float(c.job_period_s[j]),
                compute_fraction=float(c.job_compute_s[j] / c.job_period_s[j]),
                compute_util=float(c.job_compute_util[j]),
                comm_util=float(c.job_comm_util[j]),
                checkpoint_every_s=float(c.job_ckpt_every_s[j]),
                checkpoint_s=float(c.job_ckpt_s[j]),
                checkpoint_util=float(c.job_ckpt_util[j]),
            )
            for j, job in enumerate(site.workload.training)
        ],
    )


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
        async def GetState(self, request, context: grpc.aio.ServicerContext):
            if node.latest is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no run has started")
            return pb2.GetStateResponse(state=node.latest)

        async def GetConfig(self, request, context: grpc.aio.ServicerContext):
            if node.model is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no run has started")
            config = config_of(domain, node.model)
            config.run_id = node.run_id
            return pb2.GetConfigResponse(config=config)

        async def Apply(self, request, context: grpc.aio.ServicerContext):
            if node.model is None:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no run has started")
            try:
                action = COMMANDS[domain](request, node.model)
            except InvalidCommand as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            step = node.command(action)
            effective = common_pb2.Tick(run_id=node.run_id, step=step, time_s=step * node.model.dt)
            # The configuration once the command is in force: applied to a copy now, so the
            # reply and the live-configuration bucket show it before the next tick.
            preview = copy.copy(node.model)
            preview.settings = dict(node.model.settings)
            action(preview)
            config = config_of(domain, preview)
            config.run_id = node.run_id
            await node.save_config(config)
            return pb2.ApplyResponse(effective=effective, config=config)

    return Servicer()


def add_to_server(domain: str, grpc_server, node: CoSimNode) -> None:
    module, service = GRPC[domain]
    grpc_server.add_servicer(
        getattr(module, f"add_{service}Servicer_to_server"), servicer(domain, node)
    )
