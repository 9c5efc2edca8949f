"""Domain outputs <-> the protobuf state messages published on ``twin.<site>.<domain>.state``.

State message fields are named after the model's output fields, so the mapping is by
name; per-rack arrays travel as packed ``FloatArray``s. The ``quantities`` map carries the
domain's site quantities (``twin_core.contract``) by their contract names. This module
imports no JAX: it maps host arrays.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
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


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pack_into(target: common_pb2.FloatArray, array: Any) -> None:
    """Set ``target`` to ``array`` as float32, row-major. The packed wire form is built
    from the array's bytes and parsed in one call: the same message as assigning the
    values one by one, without a Python float per element (a rack array of a large site
    would cost a third of a millisecond per state message that way)."""
    a = np.asarray(array, dtype="<f4")
    raw = a.tobytes()  # row-major whatever the array's own order
    wire = b"\x0a" + _varint(len(raw)) + raw if raw else b""  # field 1: values (packed)
    if a.shape:
        dims = b"".join(_varint(n) for n in a.shape)
        wire += b"\x12" + _varint(len(dims)) + dims  # field 2: shape (packed)
    target.Clear()
    target.MergeFromString(wire)


def pack(array: Any) -> common_pb2.FloatArray:
    message = common_pb2.FloatArray()
    pack_into(message, array)
    return message


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
            pack_into(getattr(message, field.name), value)
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
    if _sound(message):  # the common case, checked fast; a faulty message is named below
        return None
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


_REAL = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)


@functools.cache
def _layout(message_type: type[StateMessage]) -> tuple[Callable[[Any], tuple], ...]:
    """Getters of a state message type's real-valued fields, by kind: (scalars as one
    tuple, each repeated field, each packed array)."""
    fields = message_type.DESCRIPTOR.fields
    real = [f for f in fields if f.type in _REAL]
    scalars = [f.name for f in real if not f.is_repeated]
    arrays = [f.name for f in fields if f.message_type is common_pb2.FloatArray.DESCRIPTOR]
    return (
        lambda m, get=operator.attrgetter(*scalars, "run_id"): get(m)[:-1],
        *(operator.attrgetter(f.name) for f in real if f.is_repeated),
        *(operator.attrgetter(name) for name in arrays),
    )


def _sound(message: StateMessage) -> bool:
    """Every number finite and every array's shape holding its values, checked in bulk (a
    sum in float64 is finite when every term is, or overflows only for terms beyond any
    physical value: then ``state_problem`` looks field by field and finds nothing). Each
    service runs this on every state message it reads, so it must cost microseconds."""
    scalars, *rest = _layout(type(message))
    if not math.isfinite(sum(scalars(message)) + sum(message.quantities.values())):
        return False
    for get in rest:
        value = get(message)
        if isinstance(value, common_pb2.FloatArray):
            if value.shape and math.prod(value.shape) != len(value.values):
                return False
            value = value.values
        if value and not math.isfinite(np.asarray(value, dtype=float).sum()):
            return False
    return True


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
