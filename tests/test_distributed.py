"""The distributed twin: real nats-server, the four domain services and the clock as
separate processes, driven over gRPC; its published states equal the monolithic rollout."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TypeVar

import grpc
import nats
import numpy as np
import pytest
from conftest import ROOT

from services.launcher import LocalTwin, free_addresses
from twin.common.v1 import common_pb2
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2, cooling_pb2_grpc
from twin.power.v1 import power_pb2
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc
from twin_core.rollout import simulate
from twin_core.site import load_site

# One twin (five processes) per module, all its tests on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]
TICKS = 600
# The state messages collect() gathers.
S = TypeVar("S", power_pb2.PowerState, cooling_pb2.CoolingState)


@pytest.fixture(scope="module")
def local_twin():
    with LocalTwin("fairwater-wi", free_addresses(), ready_timeout_s=120) as twin:
        yield twin


def stub(twin, name="twin"):
    channel = grpc.insecure_channel(twin.addresses[name])
    return channel, twin_pb2_grpc.TwinServiceStub(channel)


def start_paused(twin, scenario="fairwater-wi", overrides=()):
    channel, s = stub(twin)
    spec = clock_pb2.RunSpec(scenario_name=scenario, dt_s=1.0, overrides=list(overrides))
    reply = s.Start(twin_pb2.StartRequest(spec=spec, paused=True), timeout=300)
    return channel, s, reply.run_id


async def collect(
    url: str,
    subject: str,
    message_type: type[S],
    until_step: int,
    run_id: str,
    action: Callable[[], object],
) -> list[S]:
    """Subscribe, run ``action`` (a blocking gRPC call) in a thread, gather the states."""
    nc = await nats.connect(url)
    got: dict[int, S] = {}

    async def handle(msg):
        state = message_type.FromString(msg.data)
        if state.run_id == run_id and state.step >= 0:
            got[state.step] = state

    await nc.subscribe(subject, cb=handle)
    await nc.flush()
    await asyncio.to_thread(action)
    for _ in range(100):
        if len(got) >= until_step:
            break
        await asyncio.sleep(0.05)
    await nc.close()
    return [got[k] for k in sorted(got)]


def test_distributed_run_equals_monolithic_rollout(local_twin):
    channel, s, run_id = start_paused(local_twin)
    with channel:
        states = asyncio.run(
            collect(
                local_twin.nats_url,
                "twin.fairwater-wi.power.state",
                power_pb2.PowerState,
                TICKS,
                run_id,
                lambda: s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=TICKS), timeout=600),
            )
        )
        snapshot = s.GetSnapshot(twin_pb2.GetSnapshotRequest(run_id=run_id)).snapshot
    assert [st.step for st in states] == list(range(TICKS))
    # the services advance every rack: compare with the monolithic run that does too
    whole = simulate(
        load_site(ROOT / "scenarios" / "fairwater-wi.yaml"), TICKS, 1.0, 1, merge_identical=False
    )
    meter = np.array([st.meter_w for st in states])
    np.testing.assert_allclose(meter, whole.means["facility_w"], rtol=1e-6)
    it = np.array([st.it_w for st in states])
    np.testing.assert_allclose(it, whole.means["it_w"], rtol=1e-6)
    assert snapshot.step == TICKS
    assert snapshot.quantities["pue"] == pytest.approx(meter[-1] / it[-1], rel=1e-6)
    # and the historian stored every step, with the published values
    stored = stored_series(local_twin.database_url, run_id, TICKS)
    np.testing.assert_array_equal(stored[:, 0], np.arange(TICKS))
    np.testing.assert_allclose(stored[:, 1], meter, rtol=1e-12)


def stored_series(url: str, run_id: str, rows: int, timeout_s: float = 60.0) -> np.ndarray:
    """(step, facility_w) rows of a run once the historian has written ``rows`` of them."""
    import time

    import psycopg

    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            found = conn.execute(
                "SELECT step, facility_w FROM site_series WHERE run_id = %s ORDER BY step",
                (run_id,),
            ).fetchall()
            if len(found) >= rows or time.monotonic() > deadline:
                return np.array(found, dtype=float)
            time.sleep(0.25)


def cooling_stub(twin):
    channel = grpc.insecure_channel(twin.addresses["cooling"])
    return channel, cooling_pb2_grpc.CoolingServiceStub(channel)


def supply_series(twin, overrides, commands_at: int | None, failures: int) -> np.ndarray:
    channel, s, run_id = start_paused(twin, overrides=overrides)
    with channel:
        s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=commands_at), timeout=600)
        cch, cooling = cooling_stub(twin)
        with cch:
            for index in range(failures):
                ref = common_pb2.EquipmentRef(kind=common_pb2.EQUIPMENT_KIND_CHILLER, index=index)
                reply = cooling.Apply(
                    cooling_pb2.ApplyRequest(
                        fail_equipment=cooling_pb2.FailEquipment(equipment=ref)
                    )
                )
                assert reply.effective.step == commands_at
        states = asyncio.run(
            collect(
                twin.nats_url,
                "twin.fairwater-wi.cooling.state",
                cooling_pb2.CoolingState,
                100,
                run_id,
                lambda: s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=100), timeout=600),
            )
        )
    return np.array([st.fws_supply_c for st in states])


def test_chiller_failures_over_grpc_show_up_in_the_next_states(local_twin):
    hot = ["weather.offset_c=16"]
    failed = supply_series(local_twin, hot, 50, failures=8)
    healthy = supply_series(local_twin, hot, 50, failures=0)
    assert failed[-1] > healthy[-1] + 1e-3  # fewer chillers: warmer facility water
    # and exactly as a failure scheduled in the site file at the same time
    scheduled = [
        *hot,
        "failures=["
        + ", ".join(f"{{equipment: chiller, index: {i}, at: 50}}" for i in range(8))
        + "]",
    ]
    channel, s, run_id = start_paused(local_twin, overrides=scheduled)
    with channel:
        states = asyncio.run(
            collect(
                local_twin.nats_url,
                "twin.fairwater-wi.cooling.state",
                cooling_pb2.CoolingState,
                150,
                run_id,
                lambda: s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=150), timeout=600),
            )
        )
    np.testing.assert_allclose(failed, [st.fws_supply_c for st in states][50:], rtol=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda c: c.Apply(
                cooling_pb2.ApplyRequest(
                    fail_equipment=cooling_pb2.FailEquipment(
                        equipment=common_pb2.EquipmentRef(
                            kind=common_pb2.EQUIPMENT_KIND_CHILLER, index=99
                        )
                    )
                )
            ),
            "fail_equipment.equipment.index: 99 out of range, the site has 32 chiller unit(s)",
        ),
        (
            lambda c: c.Apply(
                cooling_pb2.ApplyRequest(
                    set_supply_setpoint=cooling_pb2.SetSupplySetpoint(supply_c=90)
                )
            ),
            "set_supply_setpoint.supply_c: 90 C is outside 5..60 C",
        ),
        (
            lambda c: c.Apply(cooling_pb2.ApplyRequest()),
            "command: required (set_supply_setpoint, fail_equipment, repair_equipment)",
        ),
    ],
)
def test_bad_cooling_commands_are_invalid_argument(local_twin, call, message):
    start_paused(local_twin)[0].close()
    channel, cooling = cooling_stub(local_twin)
    with channel, pytest.raises(grpc.RpcError) as info:
        call(cooling)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message


def test_bad_twin_requests_are_invalid_argument(local_twin):
    channel, s = stub(local_twin)
    with channel:
        cases = [
            (
                twin_pb2.StartRequest(spec=clock_pb2.RunSpec(scenario_name="atlantis")),
                "spec.scenario_name: unknown scenario 'atlantis' (known: fairwater-wi, "
                "loughton-uk, narvik-no)",
            ),
            (
                twin_pb2.StartRequest(spec=clock_pb2.RunSpec()),
                "spec.scenario: give scenario_name or scenario_yaml",
            ),
            (
                twin_pb2.StartRequest(spec=clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=7)),
                "spec.dt: 7 s must divide an hour (e.g. 0.5, 1, 10, 60)",
            ),
            (
                twin_pb2.StartRequest(
                    spec=clock_pb2.RunSpec(
                        scenario_name="fairwater-wi", overrides=["cooling.supply_c=hot"]
                    )
                ),
                "cooling.supply_c: Input should be a valid number, unable to parse string as a "
                "number",
            ),
        ]
        for request, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                s.Start(request, timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == message
        _, _, run_id = start_paused(local_twin)
        with pytest.raises(grpc.RpcError) as info:
            s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=0))
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "ticks: must be 1..100000",
        )


def test_bad_start_leaves_the_running_run_alone(local_twin):
    channel, s, run_id = start_paused(local_twin)
    fw = "fairwater-wi"
    cases = [
        (
            clock_pb2.RunSpec(scenario_name=fw, horizon_s=float("inf")),
            "spec.horizon_s: inf is out of range (0, meaning open-ended, to 3.1536e+08 s)",
        ),
        (clock_pb2.RunSpec(scenario_name=fw, dt_s=1e-9), "spec.dt: 1e-09 s is out of range"),
        (clock_pb2.RunSpec(scenario_name=fw, dt_s=float("nan")), "spec.dt: nan s is out of"),
        (
            clock_pb2.RunSpec(
                scenario_name=fw, overrides=["weather.epw=/etc/passwd", "weather.synthetic=null"]
            ),
            "spec.weather.epw: '/etc/passwd' is outside the data directory",
        ),
        (
            clock_pb2.RunSpec(
                scenario_name=fw,
                overrides=["energy.grid.price_usd_per_mwh={file: /dev/zero, column: x}"],
            ),
            "spec.energy.grid.price_usd_per_mwh.file: '/dev/zero' is outside the data",
        ),
        (
            clock_pb2.RunSpec(scenario_yaml="a: " + "[" * 50_000 + "]" * 50_000),
            "spec.scenario_yaml: nested deeper than 64 levels",
        ),
    ]
    with channel:
        for spec, message in cases:
            with pytest.raises(grpc.RpcError) as info:
                s.Start(twin_pb2.StartRequest(spec=spec), timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = info.value.details()
            assert details is not None and details.startswith(message), details
        for speed in (float("nan"), float("inf"), -1.0):
            request = twin_pb2.StartRequest(
                spec=clock_pb2.RunSpec(scenario_name=fw),
                speed=clock_pb2.Speed(real_time_factor=speed),
            )
            with pytest.raises(grpc.RpcError) as info:
                s.Start(request, timeout=60)
            assert info.value.details() == (
                "speed.real_time_factor: must be positive and at most 1e+06"
            )
        with pytest.raises(grpc.RpcError) as info:
            s.Pause(twin_pb2.PauseRequest(run_id="r\x00" + "x" * 1_000_000), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "run_id: unknown run 'r\\x00" + "x" * 77 + "…'"
        snapshot = s.GetSnapshot(twin_pb2.GetSnapshotRequest(), timeout=10).snapshot
        assert snapshot.run_id == run_id  # the run started first is still there
        # and its domains still answer and step
        s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=2), timeout=60)
        assert s.GetSnapshot(twin_pb2.GetSnapshotRequest(), timeout=10).snapshot.step == 2


def test_garbled_bus_messages_are_skipped(local_twin):
    channel, s, run_id = start_paused(local_twin)

    async def garble():
        nc = await nats.connect(local_twin.nats_url)
        for subject in (
            "twin.fairwater-wi.clock",
            "twin.fairwater-wi.power.state",
            "twin.fairwater-wi.compute.state",
        ):
            await nc.publish(subject, b"\xff\x00 not protobuf")
        await nc.flush()
        await nc.close()

    with channel:
        asyncio.run(garble())
        reply = s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=5), timeout=120)
    assert reply.snapshot.step == 5 and reply.snapshot.quantities["pue"] > 1.0
    assert all(p.poll() is None for p in local_twin.processes.values())


def test_watch_streams_snapshots(local_twin):
    channel, s, run_id = start_paused(local_twin)
    with channel:
        stream = s.Watch(twin_pb2.WatchRequest(run_id=run_id, every_steps=10), timeout=120)
        s.SetSpeed(
            twin_pb2.SetSpeedRequest(run_id=run_id, speed=clock_pb2.Speed(as_fast_as_possible=True))
        )
        s.Resume(twin_pb2.ResumeRequest(run_id=run_id))
        steps = []
        for reply in stream:
            steps.append(reply.snapshot.step)
            if len(steps) == 4:
                stream.cancel()
                break
        s.Pause(twin_pb2.PauseRequest(run_id=run_id))
    assert steps == sorted(steps) and steps[-1] - steps[0] >= 30


def test_grpcurl_lists_services_and_reads_a_snapshot(local_twin):
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    grpcurl = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    start_paused(local_twin)[0].close()
    address = local_twin.addresses["twin"]
    listed = subprocess.run(
        [grpcurl, "-plaintext", address, "list"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert {"twin.twin.v1.TwinService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    snap = subprocess.run(
        [grpcurl, "-plaintext", address, "twin.twin.v1.TwinService/GetSnapshot"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert snap.returncode == 0, snap.stderr
    body = json.loads(snap.stdout)["snapshot"]
    # grpcurl prints JSON with the proto field names
    assert body["site_id"] == "fairwater-wi" and body["state"] == "RUN_STATE_PAUSED"


def test_live_telemetry_replaces_modelled_values_at_the_next_tick(local_twin):
    from twin.telemetry.v1 import telemetry_pb2

    channel, s, run_id = start_paused(local_twin)
    batch = telemetry_pb2.MeasurementBatch(
        site_id="fairwater-wi",
        source="bms",
        measurements=[
            telemetry_pb2.Measurement(
                entity="rack/2/7", value=150000.0, quantity=telemetry_pb2.QUANTITY_RACK_POWER_W
            ),
            telemetry_pb2.Measurement(
                entity="cdu/5", value=41.5, quantity=telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C
            ),
            telemetry_pb2.Measurement(
                entity="rack/99/99",
                value=1.0,  # no such rack: skipped
                quantity=telemetry_pb2.QUANTITY_RACK_POWER_W,
            ),
        ],
    )

    async def scenario():
        nc = await nats.connect(local_twin.nats_url)
        got = {"compute": {}, "cooling": {}}

        async def keep(domain, message_type):
            async def handle(msg):
                state = message_type.FromString(msg.data)
                if state.run_id == run_id:
                    got[domain][state.step] = state

            return handle

        await nc.subscribe(
            "twin.fairwater-wi.compute.state", cb=await keep("compute", compute_pb2.ComputeState)
        )
        await nc.subscribe(
            "twin.fairwater-wi.cooling.state", cb=await keep("cooling", cooling_pb2.CoolingState)
        )
        await asyncio.to_thread(s.Step, twin_pb2.StepRequest(run_id=run_id, ticks=3))
        await nc.publish("telemetry.fairwater-wi.bms", batch.SerializeToString())
        await nc.flush()
        await asyncio.sleep(0.2)
        await asyncio.to_thread(s.Step, twin_pb2.StepRequest(run_id=run_id, ticks=2))
        await asyncio.sleep(0.2)
        await nc.close()
        return got

    with channel:
        got = asyncio.run(scenario())
    from services.messages import unpack

    before = unpack(got["compute"][2].rack_ac_w)
    measured = unpack(got["compute"][3].rack_ac_w)
    assert before[2, 7] != 150000.0 and measured[2, 7] == 150000.0
    assert unpack(got["compute"][4].rack_ac_w)[2, 7] != 150000.0  # the model takes over again
    assert got["cooling"][3].tcs_supply_c[5] == 41.5
    assert got["cooling"][2].tcs_supply_c[5] != 41.5
    assert all(p.poll() is None for p in local_twin.processes.values())


def test_a_service_restarting_mid_run_rejoins_without_corrupting_it(local_twin):
    import time

    horizon = 900

    async def scenario():
        nc = await nats.connect(local_twin.nats_url)
        got: dict[int, power_pb2.PowerState] = {}
        run = {}

        async def handle(msg):
            state = power_pb2.PowerState.FromString(msg.data)
            if state.run_id == run.get("id") and state.step >= 0:
                got[state.step] = state  # a replayed step carries the same values

        await nc.subscribe("twin.fairwater-wi.power.state", cb=handle)
        channel, s = stub(local_twin)
        with channel:
            spec = clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=1.0, horizon_s=horizon)
            request = twin_pb2.StartRequest(spec=spec, paused=True)
            run["id"] = (await asyncio.to_thread(s.Start, request, timeout=300)).run_id
            await asyncio.to_thread(s.Resume, twin_pb2.ResumeRequest(run_id=run["id"]))
            await asyncio.sleep(1.0)
            restarted_at = len(got)
            await asyncio.to_thread(local_twin.restart, "compute")
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                snap = s.GetSnapshot(twin_pb2.GetSnapshotRequest(run_id=run["id"])).snapshot
                if snap.step >= horizon:
                    break
                await asyncio.sleep(0.5)
        await asyncio.sleep(0.3)
        await nc.close()
        return got, restarted_at, snap

    got, restarted_at, snap = asyncio.run(scenario())
    assert 0 < restarted_at < horizon - 100  # the restart really happened mid-run
    assert snap.step == horizon and sorted(got) == list(range(horizon))
    whole = simulate(
        load_site(ROOT / "scenarios" / "fairwater-wi.yaml"), horizon, 1.0, 1, merge_identical=False
    )
    meter = np.array([got[k].meter_w for k in range(horizon)])
    np.testing.assert_allclose(meter, whole.means["facility_w"], rtol=1e-6)


def test_commands_are_kept_in_the_live_configuration_bucket(local_twin):
    start_paused(local_twin)[0].close()
    channel, cooling = cooling_stub(local_twin)
    with channel:
        reply = cooling.Apply(
            cooling_pb2.ApplyRequest(
                set_supply_setpoint=cooling_pb2.SetSupplySetpoint(supply_c=33.5)
            )
        )
        config = cooling.GetConfig(cooling_pb2.GetConfigRequest()).config
    assert reply.config.supply_c == 33.5  # in force from the next tick

    async def stored():
        nc = await nats.connect(local_twin.nats_url)
        kv = await nc.jetstream().key_value("twin-fairwater-wi-config")
        entry = await kv.get("cooling")
        await nc.close()
        assert entry.value is not None
        return cooling_pb2.CoolingConfig.FromString(entry.value)

    assert asyncio.run(stored()).supply_c == 33.5
    assert config.chillers == 32 and config.cdus == 240


def test_twin_up_serves_until_interrupted_and_status_reports_health(tmp_path):
    """`twin up --base-port 0`: free ports, printed with the instance id; `twin status` on
    them sees every service SERVING for that instance; each service serves /metrics on
    its own port, listed in the --prometheus-targets file until the twin stops; its
    nats-server, killed, is restarted on its port and said so; Ctrl-C stops everything."""
    import json
    import re
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import psutil
    from prometheus_client.parser import text_string_to_metric_families

    from services.launcher import ORDER

    command = [
        sys.executable,
        "-m",
        "services.cli",
        "up",
        str(ROOT / "tests/sites/small.yaml"),
        "--speed",
        "0",
        "--base-port",
        "0",
        "--prometheus-targets",
        str(tmp_path / "targets.json"),
        # Six services compiling on a 2-core machine beside another test: as the other
        # twins in the tests, more time than the CLI's 120 s default.
        "--ready-timeout",
        "300s",
        "--log-dir",
        str(tmp_path / "logs"),
    ]
    err = tmp_path / "stderr"

    def diagnosis() -> str:
        services_log = tmp_path / "logs" / "services.log"
        tail = services_log.read_text()[-4000:] if services_log.exists() else "(no log)"
        return f"stderr:\n{err.read_text()}\nservices.log (end):\n{tail}"

    up = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err.open("w"),
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        assert up.stdout is not None
        lines = []
        while line := up.stdout.readline():  # until the ready banner, or the command ended
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        printed = "".join(lines)
        instance_match = re.search(r"up \(instance ([0-9a-f]{12})\)", printed)
        ports_match = re.search(r"gRPC: (.*)", printed)
        assert instance_match and ports_match, (lines, diagnosis())
        instance, ports = instance_match[1], ports_match[1]
        addresses = [part.split(" ")[1] for part in ports.split(", ")]
        assert len(addresses) == 6 and "127.0.0.1:50051" not in addresses, lines
        assert any(f"grpcurl -plaintext {addresses[0]}" in line for line in lines), lines
        status = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", *addresses],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert status.stdout.count("SERVING") == 6, status.stdout  # with the historian
        assert status.stdout.count(instance) == 6, status.stdout
        # Every service's /metrics on its own loopback port, printed and in the file_sd file.
        groups = json.loads((tmp_path / "targets.json").read_text())
        assert [g["labels"] for g in groups] == [
            {"twin_service": name, "twin_instance": instance} for name in ORDER
        ]
        scraped = [g["targets"][0] for g in groups]
        assert len(set(scraped)) == 6 and not set(scraped) & set(addresses)
        listed = ", ".join(f"{n} {a}" for n, a in zip(ORDER, scraped, strict=True))
        assert f"metrics: {listed} (Prometheus file_sd: {tmp_path / 'targets.json'})" in printed
        for name, address in zip(ORDER, scraped, strict=True):
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
                body = reply.read().decode()
            infos = [
                (sample.labels, sample.value)
                for family in text_string_to_metric_families(body)
                if family.name == "twin_service_info"
                for sample in family.samples
            ]
            assert infos == [({"service": name, "site": "small", "instance_id": instance}, 1.0)]
        (nats_server,) = [p for p in psutil.Process(up.pid).children() if p.name() == "nats-server"]
        port = nats_server.net_connections("tcp")[0].laddr.port
        nats_server.kill()
        deadline = time.monotonic() + 30
        while "nats-server died" not in err.read_text():
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        assert (
            f"  nats-server died (exit status -9); restarting it on port {port} with its "
            "JetStream store (restart 1 of 5)\n"
        ) in err.read_text()
        status = subprocess.run(
            [sys.executable, "-m", "services.cli", "status", *addresses, "--wait", "60s"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert status.stdout.count("SERVING") == 6, status.stdout
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0 and "stopped" in out
    assert not (tmp_path / "targets.json").exists()  # its targets leave with the twin
    after = subprocess.run(
        [sys.executable, "-m", "services.cli", "status", *addresses],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert after.stdout.count("UNREACHABLE") == 6


def test_history_api_serves_the_stored_run(local_twin):
    from twin.history.v1 import history_pb2, history_pb2_grpc

    channel, s, run_id = start_paused(local_twin)
    with channel:
        states = asyncio.run(
            collect(
                local_twin.nats_url,
                "twin.fairwater-wi.power.state",
                power_pb2.PowerState,
                120,
                run_id,
                lambda: s.Step(twin_pb2.StepRequest(run_id=run_id, ticks=120), timeout=600),
            )
        )
    stored_series(local_twin.database_url, run_id, 120)  # wait for the historian
    meter = np.array([st.meter_w for st in states])
    with grpc.insecure_channel(local_twin.addresses["historian"]) as hc:
        history = history_pb2_grpc.HistoryServiceStub(hc)
        reply = history.Query(
            history_pb2.QueryRequest(
                run_id=run_id,
                metrics=["facility_w"],
                bucket_s=60,
                aggregate=history_pb2.AGGREGATE_AVG,
            ),
            timeout=30,
        )
        runs = history.ListRuns(history_pb2.ListRunsRequest(), timeout=30).runs
    values = [row.values[0] for row in reply.rows]
    # step k ends at time_s = k + 1; buckets are [0, 60), [60, 120), [120, 180)
    bucket = (np.arange(120) + 1) // 60
    expected = [meter[bucket == b].mean() for b in range(3)]
    np.testing.assert_allclose(values, expected, rtol=1e-9)
    assert [row.time_s for row in reply.rows] == [0.0, 60.0, 120.0]
    assert run_id in {r.run_id for r in runs}
