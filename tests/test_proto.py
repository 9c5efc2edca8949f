"""The protobuf contract (proto/): generated code is current, buf lint passes, per-rack
arrays travel packed, and the service stubs carry the RPCs the services implement."""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from node_packages import ensure_installed

from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2, compute_pb2_grpc
from twin.cooling.v1 import cooling_pb2, cooling_pb2_grpc
from twin.energy.v1 import energy_pb2, energy_pb2_grpc
from twin.power.v1 import power_pb2, power_pb2_grpc
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2, snapshot_pb2, twin_pb2, twin_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GEN = PROTO / "gen" / "python"


def load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", PROTO / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- generation


def test_regenerating_changes_nothing(tmp_path):
    generator = load_generator()
    written = generator.generate(tmp_path)
    assert written, "nothing generated"
    problems = generator.differences(tmp_path / "twin", GEN / "twin")
    assert not problems, "run `python proto/generate.py`:\n" + "\n".join(problems)


def test_every_proto_file_has_an_importable_module():
    generator = load_generator()
    files = generator.proto_files()
    assert len(files) >= 7
    for name in files:
        assert name.startswith("twin/") and "/v1/" in name, name
        module_name = name.removesuffix(".proto").replace("/", ".") + "_pb2"
        module = importlib.import_module(module_name)
        package = name.rsplit("/", 1)[0].replace("/", ".")
        assert module.DESCRIPTOR.package == package
        assert module.DESCRIPTOR.name == name
        assert module.__file__ is not None
        assert Path(module.__file__).with_suffix(".pyi").is_file()
        importlib.import_module(module_name + "_grpc")


# --------------------------------------------------------------------------- buf


@pytest.fixture(scope="session")
def buf() -> Path:
    """The buf binary from node_modules, installed with `npm ci` when missing (a clean
    clone); a lock keeps pytest-xdist workers from installing twice at once."""
    binary = ROOT / "node_modules" / ".bin" / "buf"
    ensure_installed(".bin/buf")
    return binary
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot install @bufbuild/buf")
    lock = Path(tempfile.gettempdir()) / (
        "twin-npm-ci-" + hashlib.sha1(str(ROOT).encode()).hexdigest()[:12] + ".lock"
    )
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if not binary.exists():
                subprocess.run(
                    [npm, "ci", "--silent", "--no-audit", "--no-fund"],
                    cwd=ROOT,
                    check=True,
                    timeout=600,
                )
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    assert binary.exists(), "npm ci did not install node_modules/.bin/buf"
    return binary


def test_buf_lint(buf):
    result = subprocess.run(
        [buf, "lint", "proto"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_format(buf):
    result = subprocess.run(
        [buf, "format", "--diff", "--exit-code", "proto"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, "run `npx buf format -w proto`:\n" + result.stdout


# --------------------------------------------------------------------------- wire format


def rack_array(slots: int, cdus: int) -> tuple[np.ndarray, common_pb2.FloatArray]:
    values = np.random.default_rng(0).uniform(0.0, 140e3, (slots, cdus)).astype(np.float32)
    message = common_pb2.FloatArray(shape=[slots, cdus])
    message.values.extend(values.ravel())
    return values, message


def test_compute_state_round_trip_with_packed_rack_array():
    slots, cdus = 40, 25  # 1,000 racks
    values, rack_ac_w = rack_array(slots, cdus)
    state = compute_pb2.ComputeState(
        run_id="run-1",
        step=86_399,
        time_s=86_400.0,
        rack_ac_w=rack_ac_w,
        heat_liquid_w=np.linspace(1e6, 2e6, cdus).tolist(),
        heat_air_w=4.2e6,
        ac_total_w=float(values.sum(dtype=np.float64)),
        gpu_temp_max_c=75.6,
        gpu_temp_mean_c=61.0,
        throttled_gpus=72,
        delivered_pflops=2.5e5,
        gpu_power_w=1.0e8,
        rack_outlet_mean_c=45.0,
    )
    wire = state.SerializeToString(deterministic=True)
    parsed = compute_pb2.ComputeState.FromString(wire)
    assert parsed == state

    shape = tuple(parsed.rack_ac_w.shape)
    assert shape == (slots, cdus)
    back = np.asarray(parsed.rack_ac_w.values, dtype=np.float32).reshape(shape)
    np.testing.assert_array_equal(back, values)  # float32 survives bit for bit
    assert list(parsed.heat_liquid_w) == list(state.heat_liquid_w)

    # Packed: one tag and length, then 4 bytes a float. Unpacked would cost a tag per
    # element (5 bytes each, 5,000+ for 1,000 floats).
    array_wire = rack_ac_w.SerializeToString()
    assert array_wire[:3] == bytes([0x0A]) + encode_varint(4 * slots * cdus)
    assert 4_000 <= len(array_wire) < 4_020
    assert len(wire) < 4_400


def test_every_per_rack_array_is_a_packed_float_array():
    float_array = common_pb2.FloatArray.DESCRIPTOR
    values = float_array.fields_by_name["values"]
    assert values.type == values.TYPE_FLOAT and values.is_packed
    assert float_array.fields_by_name["shape"].is_packed
    for message, field in [
        (compute_pb2.ComputeState, "rack_ac_w"),
        (power_pb2.PowerState, "rack_cap_w"),
        (compute_pb2.ComputeConfig, "rack_full_load_w"),
    ]:
        assert message.DESCRIPTOR.fields_by_name[field].message_type is float_array


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


STATES = {
    "compute": (
        compute_pb2.ComputeState,
        "rack_ac_w heat_liquid_w heat_air_w ac_total_w gpu_temp_max_c gpu_temp_mean_c "
        "throttled_gpus delivered_pflops gpu_power_w rack_outlet_mean_c",
    ),
    "cooling": (
        cooling_pb2.CoolingState,
        "tcs_supply_c electrical_w pumps_w fans_w chillers_w air_handling_w heat_rejected_w "
        "chillers_running chiller_load_w fan_speed fws_supply_c fws_return_c "
        "tcs_supply_mean_c tcs_supply_max_c water_m3_per_s",
    ),
    "power": (
        power_pb2.PowerState,
        "meter_w it_w losses_w misc_w rack_cap_w cap_fraction limit_w ramp_w_per_s band_w",
    ),
    "energy": (
        energy_pb2.EnergyState,
        "grid_w battery_w generation_w soc supply_limit_w cost_usd_per_s emissions_t_per_s "
        "market_emissions_t_per_s",
    ),
}


@pytest.mark.parametrize("domain", sorted(STATES))
def test_domain_states_share_a_header_and_carry_their_outputs(domain):
    message, fields = STATES[domain]
    by_name = message.DESCRIPTOR.fields_by_name
    header = [(name, by_name[name].number) for name in ("run_id", "step", "time_s")]
    assert header == [("run_id", 1), ("step", 2), ("time_s", 3)]
    assert by_name["step"].type == by_name["step"].TYPE_INT64
    assert by_name["time_s"].type == by_name["time_s"].TYPE_DOUBLE
    missing = set(fields.split()) - set(by_name)
    assert not missing, missing


# --------------------------------------------------------------------------- services


class RecordingChannel:
    """Stands in for a grpc.Channel: records which multicallable each RPC gets."""

    def __init__(self):
        self.calls: dict[str, str] = {}

    def _record(self, kind):
        def make(path, request_serializer=None, response_deserializer=None, **_):
            self.calls[path] = kind
            return path

        return make

    def __getattr__(self, kind):
        if kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            return self._record(kind)
        raise AttributeError(kind)


DOMAIN_SERVICES = {
    "compute": (compute_pb2, compute_pb2_grpc, "ComputeService"),
    "cooling": (cooling_pb2, cooling_pb2_grpc, "CoolingService"),
    "power": (power_pb2, power_pb2_grpc, "PowerService"),
    "energy": (energy_pb2, energy_pb2_grpc, "EnergyService"),
}


@pytest.mark.parametrize("domain", sorted(DOMAIN_SERVICES))
def test_domain_service_stubs(domain):
    messages, stubs, service = DOMAIN_SERVICES[domain]
    rpcs = {"GetState", "GetConfig", "Apply"}
    assert set(messages.DESCRIPTOR.services_by_name[service].methods_by_name) == rpcs

    channel = RecordingChannel()
    stub = getattr(stubs, f"{service}Stub")(channel)
    package = f"twin.{domain}.v1"
    assert channel.calls == {f"/{package}.{service}/{rpc}": "unary_unary" for rpc in rpcs}
    for rpc in rpcs:
        assert getattr(stub, rpc) == f"/{package}.{service}/{rpc}"
        assert callable(getattr(getattr(stubs, f"{service}Servicer"), rpc))
    assert callable(getattr(stubs, f"add_{service}Servicer_to_server"))

    # Apply takes one command out of a oneof; each command is its own message.
    apply = messages.ApplyRequest.DESCRIPTOR
    assert [oneof.name for oneof in apply.oneofs] == ["command"]
    assert len(apply.oneofs[0].fields) >= 3
    assert all(field.message_type is not None for field in apply.fields)


def test_domain_commands():
    commands = {
        compute_pb2: {"set_rack_cap", "set_all_rack_caps", "clear_rack_caps"}
        | {"update_training_job"},
        cooling_pb2: {"set_supply_setpoint", "fail_equipment", "repair_equipment"},
        power_pb2: {"set_interconnect_limit", "set_it_cap", "clear_it_cap"}
        | {"fail_feeder", "repair_feeder"},
        energy_pb2: {"set_battery_mode", "set_grid_import_limit", "clear_grid_import_limit"},
    }
    for module, names in commands.items():
        oneof = module.ApplyRequest.DESCRIPTOR.oneofs_by_name["command"]
        assert {field.name for field in oneof.fields} == names
    request = compute_pb2.ApplyRequest(
        set_rack_cap=compute_pb2.SetRackCap(rack=common_pb2.RackRef(slot=3, cdu=17), cap_w=1e5)
    )
    parsed = compute_pb2.ApplyRequest.FromString(request.SerializeToString())
    assert parsed.WhichOneof("command") == "set_rack_cap"
    assert (parsed.set_rack_cap.rack.slot, parsed.set_rack_cap.rack.cdu) == (3, 17)
    fail = cooling_pb2.ApplyRequest(
        fail_equipment=cooling_pb2.FailEquipment(
            equipment=common_pb2.EquipmentRef(kind=common_pb2.EQUIPMENT_KIND_CHILLER, index=1)
        )
    )
    assert fail.WhichOneof("command") == "fail_equipment"
    update = compute_pb2.UpdateTrainingJob(name="pretrain", iteration_s=12.0)
    assert update.HasField("iteration_s") and not update.HasField("compute_util")


def test_twin_service_stubs():
    rpcs = {
        "Start": "unary_unary",
        "Pause": "unary_unary",
        "Resume": "unary_unary",
        "Step": "unary_unary",
        "SetSpeed": "unary_unary",
        "Stop": "unary_unary",
        "GetSnapshot": "unary_unary",
        "Watch": "unary_stream",
    }
    methods = twin_pb2.DESCRIPTOR.services_by_name["TwinService"].methods_by_name
    assert set(methods) == set(rpcs)
    assert methods["Watch"].server_streaming and not methods["Watch"].client_streaming
    assert methods["Watch"].output_type.fields_by_name["snapshot"].message_type is (
        snapshot_pb2.SiteSnapshot.DESCRIPTOR
    )

    channel = RecordingChannel()
    twin_pb2_grpc.TwinServiceStub(channel)
    assert channel.calls == {f"/twin.twin.v1.TwinService/{rpc}": k for rpc, k in rpcs.items()}
    for rpc in rpcs:
        assert callable(getattr(twin_pb2_grpc.TwinServiceServicer, rpc))


def test_twin_messages():
    start = twin_pb2.StartRequest(
        spec=clock_pb2.RunSpec(scenario_name="fairwater-wi", horizon_s=86_400.0),
        speed=clock_pb2.Speed(as_fast_as_possible=True),
    )
    assert start.spec.WhichOneof("scenario") == "scenario_name"
    assert start.speed.WhichOneof("pace") == "as_fast_as_possible"
    tick = clock_pb2.Clock(
        run_id="r", step=5, time_s=5.0, command=clock_pb2.CLOCK_COMMAND_TICK
    ).SerializeToString()
    assert clock_pb2.Clock.FromString(tick).command == clock_pb2.CLOCK_COMMAND_TICK
    states = set(snapshot_pb2.RunState.keys())
    assert {"RUN_STATE_RUNNING", "RUN_STATE_PAUSED", "RUN_STATE_STOPPED"} <= states
    snapshot = snapshot_pb2.SiteSnapshot.DESCRIPTOR.fields_by_name
    for name in ("quantities", "totals", "state", "reason", "real_time_factor"):
        assert name in snapshot, name
    for removed in ("pue", "it_mw", "facility_mw"):  # one name per quantity: the map's
        assert removed not in snapshot, removed


def test_telemetry_batch_round_trip():
    batch = telemetry_pb2.MeasurementBatch(
        site_id="fairwater-wi",
        source="bms",
        measurements=[
            telemetry_pb2.Measurement(
                site_id="fairwater-wi",
                entity="rack/3/17",
                quantity=telemetry_pb2.QUANTITY_RACK_POWER_W,
                time_s=1.75e9,
                value=132_000.0,
            ),
            telemetry_pb2.Measurement(
                site_id="fairwater-wi",
                entity="cdu/5",
                quantity=telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C,
                time_s=1.75e9,
                value=32.5,
            ),
        ],
    )
    assert telemetry_pb2.MeasurementBatch.FromString(batch.SerializeToString()) == batch


def test_generated_package_imports_without_the_repo_on_the_path():
    """`twin` is installed from proto/gen/python, not found by accident from the cwd."""
    code = "import twin.compute.v1.compute_pb2 as m, twin_core, services; print(m.__file__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("twin/compute/v1/compute_pb2.py")
