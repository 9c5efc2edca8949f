"""Domain outputs <-> the protobuf state messages published on ``twin.<site>.<domain>.state``.

State message fields are named after the model's output fields, so the mapping is by
name; per-rack arrays travel as packed ``FloatArray``s. The ``quantities`` map carries the
domain's site quantities (``twin_core.contract``) by their contract names. This module
imports no JAX: it maps host arrays.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.energy.v1 import energy_pb2
from twin.power.v1 import power_pb2
from twin_core import contract
from twin_core.contract import BOUNDARY_FIELD, OWNS

# Any domain's state message: they share the header (run_id, step, time_s) and the
# quantities map, so code that reads only those is typed against this union.
StateMessage = (
    compute_pb2.ComputeState
    | cooling_pb2.CoolingState
    | power_pb2.PowerState
    | energy_pb2.EnergyState
)

STATE_TYPES: dict[str, type[StateMessage]] = {
    "compute": compute_pb2.ComputeState,
    "cooling": cooling_pb2.CoolingState,
    "power": power_pb2.PowerState,
    "energy": energy_pb2.EnergyState,
}
HEADER = ("run_id", "step", "time_s")
# The model's own values of measured things (``DomainModel.modelled``): left empty by a
# message built without them (the step -1 "ready" message, tests).
MODELLED = ("rack_ac_model_w", "tcs_supply_model_c", "tcs_return_model_c")
QUANTITIES = "quantities"  # the map field of the contract's quantities


def pack(array: Any) -> common_pb2.FloatArray:
    a = np.asarray(array, dtype=np.float32)
    return common_pb2.FloatArray(values=a.ravel().tolist(), shape=list(a.shape))


def unpack(message: common_pb2.FloatArray) -> np.ndarray:
    values = np.asarray(message.values, dtype=np.float32)
    return values.reshape(tuple(message.shape)) if message.shape else values


def state_message(
    domain: str,
    run_id: str,
    step: int,
    time_s: float,
    sources: dict[str, Any],
    quantities: dict[str, float],
) -> StateMessage:
    """Build ``domain``'s state message; each field is looked up by name in ``sources``
    (boundary values first, then outputs, then drivers); ``quantities`` fill the map."""
    message = STATE_TYPES[domain](run_id=run_id, step=step, time_s=time_s)
    message.quantities.update(quantities)
    for field in message.DESCRIPTOR.fields:
        if field.name in HEADER or field.name == QUANTITIES:
            continue
        if field.name in MODELLED and field.name not in sources:
            continue
        value = sources[field.name]
        if field.message_type is not None:
            getattr(message, field.name).CopyFrom(pack(value))
        elif field.is_repeated:
            getattr(message, field.name).extend(np.asarray(value, dtype=float).ravel().tolist())
        elif field.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_INT64):
            setattr(message, field.name, round(float(value)))
        else:
            setattr(message, field.name, float(value))
    return message


def sources_of(outputs: Any, parts: dict[str, np.ndarray], drivers: Any) -> dict[str, Any]:
    """Name -> value for ``state_message`` from a domain step's results."""
    sources: dict[str, Any] = {}
    for obj in (drivers, outputs):
        sources.update({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    for name, value in parts.items():
        sources[BOUNDARY_FIELD[name].message_field] = value
    return sources


def parts_of(domain: str, message: StateMessage) -> dict[str, np.ndarray]:
    """The boundary values a peer reads from ``domain``'s state message."""
    parts = {}
    for name in OWNS[domain]:
        value = getattr(message, BOUNDARY_FIELD[name].message_field)
        if isinstance(value, common_pb2.FloatArray):
            parts[name] = unpack(value)
        elif hasattr(value, "__len__"):
            parts[name] = np.asarray(value, dtype=float)
        else:
            parts[name] = np.asarray(float(value))
    return parts


def state_problem(message: StateMessage) -> str | None:
    """Why a decoded state message cannot be used (None when it can): an empty run id, a
    step before the initial one, a non-finite number, or an array whose shape does not
    match its values."""
    if not message.run_id:
        return "run_id: empty"
    if message.step < -1:
        return f"step: {message.step} is before the initial state (-1)"
    for field, value in message.ListFields():
        if field.name == QUANTITIES:
            value = list(value.values())
        elif isinstance(value, common_pb2.FloatArray):
            if value.shape and int(np.prod(value.shape)) != len(value.values):
                return f"{field.name}: shape {list(value.shape)} does not hold its values"
            value = value.values
        elif field.type not in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            continue
        if not np.all(np.isfinite(np.asarray(value, dtype=float))):
            return f"{field.name}: not a finite number"
    return None


_NUMERIC = {
    FieldDescriptor.CPPTYPE_DOUBLE,
    FieldDescriptor.CPPTYPE_FLOAT,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
}


def fill_quantities(domain: str, message: StateMessage) -> StateMessage:
    """Fill ``message``'s quantities map from its own fields with the contract's
    expressions: for messages built without a model (tests, benchmarks). Only the stored
    quantities whose sources the message carries are filled."""
    fields = SimpleNamespace(
        **{
            f.name: np.asarray(getattr(message, f.name), dtype=float)
            for f in message.DESCRIPTOR.fields
            if f.cpp_type in _NUMERIC and not f.is_repeated
        }
    )
    for q in contract.of_domain(domain):
        if q.sql is None:
            continue
        try:
            value = q.of(fields, fields, None)
        except AttributeError:  # a source this message does not carry
            continue
        message.quantities[q.name] = float(value)
    return message
