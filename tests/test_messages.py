"""State messages: packed arrays built from an array's bytes, and the checks every
service runs on each state message it reads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.messages import pack, state_problem, unpack
from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2
from twin.power.v1 import power_pb2


def element_by_element(array) -> common_pb2.FloatArray:
    """The FloatArray built one Python float at a time (what ``pack`` replaces)."""
    a = np.asarray(array, dtype=np.float32)
    return common_pb2.FloatArray(values=a.ravel().tolist(), shape=list(a.shape))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),  # row-major on the wire all the same
        np.arange(24.0).reshape(2, 3, 4)[:, ::2],  # not contiguous
        np.float64(1.0 / 3.0),  # a scalar: one value, no shape
        [],
        np.zeros((0, 3)),
        [np.nan, np.inf, -0.0, 3.4e38],
    ],
    ids=["2d", "fortran", "strided", "scalar", "empty", "zero-rows", "special"],
)
def test_pack_is_byte_for_byte_the_element_by_element_message(array):
    packed = pack(array).SerializeToString(deterministic=True)
    assert packed == element_by_element(array).SerializeToString(deterministic=True)


def test_pack_round_trips_through_unpack():
    array = np.arange(6, dtype=np.float32).reshape(2, 3) * 1.5
    np.testing.assert_array_equal(unpack(pack(array)), array)
    assert unpack(pack(array)).shape == (2, 3)


def sound_compute() -> compute_pb2.ComputeState:
    state = compute_pb2.ComputeState(run_id="r", step=3, time_s=4.0, heat_air_w=1.0e5)
    state.rack_ac_w.CopyFrom(pack(np.full((2, 3), 1.3e5)))
    state.heat_liquid_w.extend([4.0e5, 3.9e5, 4.1e5])
    state.quantities.update({"gpu_temp_max_c": 61.5, "throttled_gpus": 0.0})
    return state


def test_a_sound_state_has_no_problem():
    assert state_problem(sound_compute()) is None


def test_finite_values_whose_sum_overflows_are_sound():
    state = power_pb2.PowerState(run_id="r", step=0, meter_w=1.7e308, it_w=1.7e308)
    assert math.isinf(state.meter_w + state.it_w)
    assert state_problem(state) is None


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (lambda s: setattr(s, "gpu_temp_max_c", math.nan), "gpu_temp_max_c: not a finite number"),
        (lambda s: s.quantities.update({"pue": math.inf}), "quantities: not a finite number"),
        (lambda s: s.heat_liquid_w.append(-math.inf), "heat_liquid_w: not a finite number"),
        (lambda s: s.rack_ac_w.values.__setitem__(4, math.nan), "rack_ac_w: not a finite number"),
        (
            lambda s: s.rack_ac_w.shape.__setitem__(0, 3),
            "rack_ac_w: shape [3, 3] does not hold its values",
        ),
        (lambda s: setattr(s, "run_id", ""), "run_id: empty"),
        (lambda s: setattr(s, "step", -2), "step: -2 is before the initial state (-1)"),
    ],
    ids=["scalar", "quantity", "repeated", "array", "shape", "run_id", "step"],
)
def test_a_faulty_state_is_named_by_its_field(spoil, problem):
    state = sound_compute()
    spoil(state)
    assert state_problem(state) == problem
