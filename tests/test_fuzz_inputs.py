"""Fuzzing with a fixed budget (Hypothesis, derandomized): site files, the ``--set``,
duration and YAML parsers, and every request message of the twin's gRPC services sent to
a real local twin. A bad input is a clean error; nothing is UNKNOWN or INTERNAL; the
services stay SERVING."""

from __future__ import annotations

import copy
import math
from typing import Any

import grpc
import jax.numpy as jnp
import pytest
import typed_stubs
import yaml
from conftest import SMALL
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.launcher import LocalTwin, free_addresses
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.energy.v1 import energy_pb2
from twin.history.v1 import history_pb2
from twin.power.v1 import power_pb2
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc
from twin.whatif.v1 import whatif_pb2
from twin_core.durations import parse_duration
from twin_core.inputs import load_yaml
from twin_core.rollout import simulate
from twin_core.site import SiteError, build_site, parse_overrides, set_path

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("fuzz-inputs")

FUZZ = settings(
    derandomize=True,  # the same examples on every run: a fixed budget, no flakes
    database=None,
    deadline=None,
    # All but the deprecated ones (HealthCheck's own iterator); narrowed for the type
    # checker, which cannot see through that iterator's metaclass.
    suppress_health_check=[h for h in HealthCheck if isinstance(h, HealthCheck)],
)
DOC = yaml.safe_load(SMALL.read_text())


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{prefix}{i}.")]
    return [(prefix[:-1], node)]


LEAVES = dict(_leaves(DOC))
PATHS = list(LEAVES)
NUMBERS = [p for p, v in LEAVES.items() if isinstance(v, int | float) and not isinstance(v, bool)]
# Valid-ish: a number of the small site scaled to an extreme (or made non-finite).
FACTORS = [0.0, -1.0, 1e-300, 1e-6, 1e-3, 10.0, 1e3, 1e6, 1e9, 1e12, 1e300, math.inf, math.nan]


def _scaled(path: str, factor: float) -> Any:
    value = LEAVES[path] * factor if LEAVES[path] else factor
    if isinstance(LEAVES[path], int) and math.isfinite(value) and abs(value) < 2**63:
        return int(value)
    return value


SCALED = st.builds(
    lambda path, factor: (path, _scaled(path, factor)),
    st.sampled_from(NUMBERS),
    st.sampled_from(FACTORS),
)
EXTREMES = [0, -1, 1e-300, 1e-6, 1e-3, 0.5, 1e6, 1e9, 1e12, 1e13, 1e300, -1e300, 2**63]
VALUES = st.one_of(
    st.sampled_from(EXTREMES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.lists(st.floats(-100, 100), max_size=13),
)


def one_line(exc: Exception) -> None:
    text = str(exc)
    assert text and "\n" not in text and len(text) < 600, text


# ------------------------------------------------------------------------ site files


@settings(FUZZ, max_examples=100)
@given(
    st.lists(
        st.one_of(SCALED, SCALED, SCALED, st.tuples(st.sampled_from(PATHS), VALUES)),
        min_size=1,
        max_size=3,
    )
)
def test_site_documents_validate_or_simulate_to_finite_kpis(changes):
    doc = copy.deepcopy(DOC)
    try:
        for path, value in changes:
            set_path(doc, path, value)
        site = build_site(doc)
        result = simulate(site, 1800.0, 60.0, dtype=jnp.float32)
    except SiteError as exc:
        one_line(exc)
        return
    bad = {k: v for k, v in result.kpis.items() if not math.isfinite(v)}
    assert not bad, (changes, bad)


# ------------------------------------------------------------------------- parsers


@settings(FUZZ, max_examples=300)
@given(st.lists(st.text(max_size=40), max_size=3))
def test_set_option_raises_only_site_errors(items):
    try:
        parse_overrides(items)
    except SiteError as exc:
        one_line(exc)


@settings(FUZZ, max_examples=300)
@given(
    st.one_of(
        st.text(max_size=30),
        st.from_regex(r"\A[0-9.eE+-]{1,12}(ms|s|m|min|h|d)?\Z"),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**400), max_value=10**400),
    ),
    st.booleans(),
)
def test_durations_raise_only_value_errors(text, allow_zero):
    try:
        seconds = parse_duration(text, allow_zero=allow_zero)
    except ValueError as exc:
        one_line(exc)
        return
    assert math.isfinite(seconds) and 0 <= seconds <= 100 * 365 * 86400


@settings(FUZZ, max_examples=200)
@given(st.text(alphabet="[]{}:,- \n'\"&*!ab1", max_size=200))
def test_yaml_text_raises_only_site_errors(text):
    try:
        load_yaml(text, "x", SiteError)
    except SiteError as exc:
        one_line(exc)


# --------------------------------------------------------------------- gRPC requests

# Ids that exist once the twin runs (the fixture adds its run's id): requests naming
# them get past the lookup to the values they carry.
KNOWN_IDS = ["small", "base", "train"]
STRINGS = st.one_of(
    st.text(max_size=12),
    st.deferred(lambda: st.sampled_from(KNOWN_IDS)),
    st.sampled_from(
        [
            "",
            "\x00",
            "a" * 100_000,
            "/etc/passwd",
            "../../etc/passwd",
            "{file: /etc/passwd, column: x}",
            "[" * 5_000,
            "fairwater-wi",
            "1e400s",
            "nan",
            "weather.epw=/etc/passwd",
        ]
    ),
)
F = FieldDescriptor
SCALARS = {
    F.TYPE_DOUBLE: st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 1e-9])
    ),
    F.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    F.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: st.integers(-(2**31), 2**31 - 1),
    F.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: st.integers(-(2**63), 2**63 - 1),
    F.TYPE_UINT32: st.integers(0, 2**32 - 1),
    F.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    F.TYPE_UINT64: st.integers(0, 2**64 - 1),
    F.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_STRING: STRINGS,
    F.TYPE_BYTES: st.binary(max_size=16),
}


def _value(draw, field, depth: int):
    if field.type == F.TYPE_MESSAGE:
        return draw(messages(field.message_type, depth + 1))
    if field.type == F.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return draw(st.one_of(st.sampled_from(known), st.integers(-5, 1000)))
    return draw(SCALARS[field.type])


@st.composite
def messages(draw, descriptor, depth: int = 0):
    """Any message of ``descriptor``: each field set or not, oneofs at random, nested
    messages down to depth 3, lists of up to 3 items."""
    msg = message_factory.GetMessageClass(descriptor)()
    if depth > 3:
        return msg
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            continue  # no request carries a map
        if not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if repeated and field.type == F.TYPE_MESSAGE:
            for _ in range(draw(st.integers(0, 3))):
                getattr(msg, field.name).add().CopyFrom(_value(draw, field, depth))
        elif repeated:
            getattr(msg, field.name).extend(_value(draw, field, depth) for _ in range(3))
        elif field.type == F.TYPE_MESSAGE:
            getattr(msg, field.name).CopyFrom(_value(draw, field, depth))
        else:
            setattr(msg, field.name, _value(draw, field, depth))
    return msg


# process name -> the gRPC services it serves (module, service name)
SERVED = {
    "twin": [
        (twin_pb2, "TwinService"),
        (whatif_pb2, "WhatIfService"),
        (history_pb2, "HistoryService"),
    ],
    "compute": [(compute_pb2, "ComputeService")],
    "cooling": [(cooling_pb2, "CoolingService")],
    "power": [(power_pb2, "PowerService")],
    "energy": [(energy_pb2, "EnergyService")],
    "historian": [(history_pb2, "HistoryService")],
}  # fmt: skip
METHODS = [
    (process, module.DESCRIPTOR.services_by_name[service], method)
    for process, served in SERVED.items()
    for module, service in served
    for method in module.DESCRIPTOR.services_by_name[service].methods
    # Start of a valid spec would compile a site per example: covered by test_inputs.
    if method.name != "Start"
]
BAD_CODES = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)


@pytest.fixture(scope="module")
def twin():
    with LocalTwin("small", free_addresses(), ready_timeout_s=240) as local:
        with grpc.insecure_channel(local.addresses["twin"]) as channel:
            spec = clock_pb2.RunSpec(scenario_yaml=SMALL.read_text(), dt_s=60)
            reply = twin_pb2_grpc.TwinServiceStub(channel).Start(
                twin_pb2.StartRequest(spec=spec, paused=True), timeout=180
            )
            twin_pb2_grpc.TwinServiceStub(channel).Step(
                twin_pb2.StepRequest(run_id=reply.run_id, ticks=3), timeout=60
            )
        KNOWN_IDS.append(reply.run_id)
        yield local


def call(channel: grpc.Channel, service, method, request) -> grpc.StatusCode:
    path = f"/{service.full_name}/{method.name}"
    serialize, parse = type(request).SerializeToString, lambda b: b
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, serialize, parse)(request, timeout=5)
            for i, _ in enumerate(stream):
                if i >= 3:
                    stream.cancel()
                    break
        else:
            channel.unary_unary(path, serialize, parse)(request, timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() not in BAD_CODES, (path, request, exc.code(), exc.details())
        return exc.code()
    return grpc.StatusCode.OK


def fuzzer(channel: grpc.Channel, service, method):
    """A Hypothesis test sending generated requests of ``method`` over ``channel``."""

    @settings(FUZZ, max_examples=40)
    @given(messages(method.input_type))
    def fuzz(request):
        call(channel, service, method, request)

    return fuzz


@pytest.mark.slow
def test_every_request_message_gets_a_clean_status(twin):
    channels = {name: grpc.insecure_channel(address) for name, address in twin.addresses.items()}
    try:
        for process, service, method in METHODS:
            fuzzer(channels[process], service, method)()
        for name, channel in channels.items():
            health = typed_stubs.health(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    finally:
        for channel in channels.values():
            channel.close()
