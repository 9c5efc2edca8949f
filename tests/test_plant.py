"""The plant emulator (services/plant) on tests/sites/small.yaml: each protocol serves
the sensors' reading of the true value (real clients: prometheus_client's parser, a
pymodbus client, an HTTP client with a Redfish session, an MQTT subscriber on
nats-server's MQTT listener); the perturbation is the one a hand calculation expects;
a seed gives the same readings; a bad truth file is one line naming the field."""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiomqtt
import httpx
import numpy as np
import pytest
from conftest import ROOT, SMALL, steady_load
from prometheus_client.parser import text_string_to_metric_families
from pymodbus.client import AsyncModbusTcpClient

from services.gateway.pointmap import RedfishSource, parse_pointmap
from services.plant.run import Plant, PlantOptions
from services.plant.sensors import Sensors
from services.plant.snapshot import Snapshot
from services.plant.truth import TruePlant, layout
from services.plant.truthfile import TruthError, load_truth, parse_truth
from services.runtime.nats_server import NatsServer
from twin_core.site import load_site

TRUTH = """
seed: 11
overrides: {cooling.cdu.ua_w_per_k: 150000}
sensors:
  noise: {cdu_supply_c: 0.05, rack_power_w: 300, gpu_power_w: 5, gpu_temp_c: 0.5,
          meter_power_w: 1000, ups_output_w: 2000, ambient_c: 0.2, cdu_return_c: 0.05}
  bias: [{signal: cdu_supply_c, entity: cdu/0, value: 0.8}]
  dropout: 0.02
"""
SIGMAS = 5.0  # a reading within 5 sigma of true + bias: fails by chance ~1 in 10^6


def within_noise(snap: Snapshot, signal: str, bias: np.ndarray | float = 0.0) -> None:
    """The sensors' readings of ``signal`` are the true values plus ``bias`` plus noise
    of the truth file's sigma (dropped ones aside)."""
    sd = parse_truth(TRUTH).sensors.noise[signal]
    error = snap.measured[signal] - snap.true[signal] - bias
    kept = ~np.isnan(error)
    assert kept.any()
    assert np.all(np.abs(error[kept]) <= SIGMAS * sd), (signal, np.abs(error[kept]).max())


def started_plant(**options) -> Plant:
    return Plant(load_site(SMALL), parse_truth(TRUTH), "truth", PlantOptions(**options))


# --------------------------------------------------------------------- (a) protocols


def test_dcgm_exporter_serves_each_gpu_reading():
    async def main() -> None:
        plant = started_plant(dcgm_fields=("power", "temp", "energy", "util"))
        await plant.start()
        try:
            snap = plant.step_once()
            async with httpx.AsyncClient() as client:
                reply = await client.get(plant.endpoints().dcgm_url)
            assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
            families = {f.name: f for f in text_string_to_metric_families(reply.text)}
        finally:
            await plant.close()
        racks = plant.model.layout.racks
        assert len(racks) == 8 and all(r.gpus == 72 for r in racks)
        power = families["DCGM_FI_DEV_POWER_USAGE"]
        got = {(s.labels["Hostname"], int(s.labels["gpu"])): s.value for s in power.samples}
        gpus = [(r.host, g) for r in racks for g in range(r.gpus)]
        readings = snap.measured["gpu_power_w"]
        expected = {k: v for k, v in zip(gpus, readings, strict=True) if not math.isnan(v)}
        assert got.keys() == expected.keys()  # dropped readings are missing samples
        assert 0 < 576 - len(got) < 40  # 2 % dropout of 576: ~12 missing
        assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in expected.items())
        within_noise(snap, "gpu_power_w")
        within_noise(snap, "gpu_temp_c")
        sample = power.samples[0]
        assert sample.labels["modelName"] == "NVIDIA GB200"
        assert sample.labels["UUID"].startswith("GPU-") and sample.labels["gpu"] == "0"
        # The energy counter: every step's true GPU power x dt, in mJ (two steps: start's
        # first and this one, dt 1 s).
        energy = families["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
        assert energy.type == "counter"
        first = energy.samples[0]
        assert first.labels["Hostname"] == "rack-0-0" and first.labels["gpu"] == "0"
        assert first.value == pytest.approx(snap.gpu_energy_mj[0], abs=0.5)
        assert snap.gpu_energy_mj[0] > 2 * 400 * 1e3  # two steps of > 400 W

    asyncio.run(asyncio.wait_for(main(), 300))


def test_modbus_registers_hold_the_meter_and_ups_readings():
    async def main() -> None:
        plant = started_plant()
        await plant.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=plant.ports["modbus"])
        try:
            assert await client.connect()
            snaps, reads = [], []
            for _ in range(3):
                snaps.append(plant.step_once())
                meter = await client.read_holding_registers(0, count=2, device_id=1)
                ups = await client.read_input_registers(2, count=2, device_id=1)
                reads.append(
                    [
                        client.convert_from_registers(r.registers, client.DATATYPE.FLOAT32)
                        for r in (meter, ups)
                    ]
                )
        finally:
            client.close()
            await plant.close()
        for snap, (meter_kw, ups_kw) in zip(snaps, reads, strict=True):
            for value, signal in ((meter_kw, "meter_power_w"), (ups_kw, "ups_output_w")):
                measured = snap.measured[signal][0]
                if math.isnan(measured):
                    assert isinstance(value, float) and math.isnan(value)
                else:  # float32 kW
                    assert value == pytest.approx(measured / 1e3, rel=1e-6)
            within_noise(snap, "meter_power_w")
            within_noise(snap, "ups_output_w")
        # the meter reads the site: IT + cooling + losses, about 0.6-1.3 MW here
        assert 5e5 < snaps[-1].true["meter_power_w"][0] < 1.5e6

    asyncio.run(asyncio.wait_for(main(), 300))


def test_redfish_sessions_basic_auth_and_rack_power_sensors():
    async def main() -> None:
        plant = started_plant()
        await plant.start()
        base = plant.endpoints().redfish_url
        try:
            snap = plant.step_once()
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                assert (await http.get("/redfish/v1/Chassis")).status_code == 401
                root = (await http.get("/redfish/v1")).json()  # the service root is open
                assert root["Chassis"] == {"@odata.id": "/redfish/v1/Chassis"}
                wrong = {"UserName": "twin-monitor", "Password": "nope"}
                sessions = "/redfish/v1/SessionService/Sessions"
                assert (await http.post(sessions, json=wrong)).status_code == 401
                login = await http.post(
                    sessions, json={"UserName": "twin-monitor", "Password": "plant"}
                )
                assert login.status_code == 201
                token = {"X-Auth-Token": login.headers["X-Auth-Token"]}
                chassis = (await http.get("/redfish/v1/Chassis", headers=token)).json()
                ids = [m["@odata.id"].rsplit("/", 1)[-1] for m in chassis["Members"]]
                assert ids == [r.host for r in plant.model.layout.racks]
                readings = {}
                for host in ids:
                    uri = f"/redfish/v1/Chassis/{host}/Sensors/PowerConsumption"
                    doc = (await http.get(uri, headers=token)).json()
                    assert (doc["ReadingType"], doc["ReadingUnits"]) == ("Power", "W")
                    readings[host] = doc["Reading"]
                basic = await http.get(
                    f"/redfish/v1/Chassis/{ids[0]}/PowerSubsystem",
                    auth=("twin-monitor", "plant"),
                )
                assert basic.status_code == 200
                assert (
                    await http.delete(login.headers["Location"], headers=token)
                ).status_code == 204
                after = await http.get("/redfish/v1/Chassis", headers=token)
                assert after.status_code == 401  # logged out
        finally:
            await plant.close()
        for i, host in enumerate(readings):
            measured = snap.measured["rack_power_w"][i]
            if math.isnan(measured):
                assert readings[host] is None
            else:
                assert readings[host] == pytest.approx(measured, abs=1e-3)
        within_noise(snap, "rack_power_w")

    asyncio.run(asyncio.wait_for(main(), 300))


def test_bms_points_over_mqtt_carry_the_biased_supply_temperature():
    async def main() -> None:
        async with NatsServer(mqtt=True) as server:
            assert server.mqtt_port is not None
            plant = started_plant(mqtt_port=server.mqtt_port)
            await plant.start()  # publishes the retained metadata
            received: dict[str, dict] = {}
            try:
                async with aiomqtt.Client("127.0.0.1", server.mqtt_port) as sub:
                    await sub.subscribe("BMS/v1/PUB/#", qos=1)
                    snap = plant.step_once()
                    assert plant.bms is not None
                    await plant.bms.publish(snap)
                    expected = len(
                        [
                            v
                            for s in ("cdu_supply_c", "cdu_return_c", "ambient_c")
                            for v in snap.measured[s]
                            if not math.isnan(v)
                        ]
                    )
                    async with asyncio.timeout(20):
                        async for msg in sub.messages:
                            assert isinstance(msg.payload, bytes)
                            received[msg.topic.value] = json.loads(msg.payload)
                            values = [t for t in received if "/Value/" in t]
                            if len(values) == expected and len(received) >= expected + 5:
                                break
            finally:
                await plant.close()
        meta = received["BMS/v1/PUB/Metadata/CDU/LiquidTemperature/hall-a/cdu0/supply"]
        assert meta["engUnit"] == "degreesCelsius"
        for i in range(2):
            topic = f"BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu{i}/supply"
            measured = snap.measured["cdu_supply_c"][i]
            if math.isnan(measured):
                assert topic not in received
                continue
            doc = received[topic]
            assert doc["quality"] == 1 and doc["timestamp"] == int(snap.wall_s * 1000)
            assert doc["value"] == pytest.approx(measured, abs=1e-4)
        # cdu/0's sensor reads 0.8 K high (the truth file's bias), cdu/1's does not
        within_noise(snap, "cdu_supply_c", np.array([0.8, 0.0]))

    asyncio.run(asyncio.wait_for(main(), 300))


def test_the_point_map_maps_every_served_point_to_a_site_entity(tmp_path: Path):
    async def main() -> tuple[str, str]:
        plant = started_plant()
        await plant.start()
        try:
            return plant.pointmap_text(), json.dumps(plant.truth_record())
        finally:
            await plant.close()

    text, record = asyncio.run(asyncio.wait_for(main(), 300))
    (tmp_path / "map.yaml").write_text(text)
    pm = parse_pointmap(text, "map.yaml")
    assert set(pm.sources) == {"bms", "gpus", "racks", "meter"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway", "check", str(tmp_path / "map.yaml"),
         "--site", str(SMALL)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "unknown" not in done.stdout and done.stdout.rstrip().endswith("ok")
    truth = json.loads(record)
    assert truth["parameters"] == {"cooling.cdu.ua_w_per_k": 150000.0}
    assert truth["twin_values"] == {"cooling.cdu.ua_w_per_k": 200000.0}
    assert truth["seed"] == 11 and truth["sensors"]["dropout"] == 0.02


# --------------------------------------------------------------- (b) the perturbation


def eps_counterflow(ntu: float, cr: float) -> float:
    e = math.exp(-ntu * (1.0 - cr))
    return (1.0 - e) / (1.0 - cr * e)


def test_a_fouled_cdu_exchanger_raises_the_supply_temperature_as_eps_ntu_says():
    # A constant load at the compute level: the load this case was sized on (a dt = 10 s
    # step once sampled the 14 s compute phase at both of its steps; the phases now
    # average to 0.755, and the hand figure below scales with the heat).
    base = load_site(SMALL, steady_load(0.95))
    truth = parse_truth("overrides: {cooling.cdu.ua_w_per_k: 120000}")
    clean = TruePlant(base, parse_truth("{}"), 10.0)
    fouled = TruePlant(truth.true_site(base), truth, 10.0)
    for _ in range(180):  # 30 min: both TCS loops settle (time constant ~ 1 min)
        c, f = clean.advance(), fouled.advance()
    # By hand: the loop settles where the exchanger passes its heat, q = g (T_tcs + rise
    # - T_fws), g = eps C_min; at the same load and facility water, the supply moves by
    # q (1/g_fouled - 1/g_clean). C_min: the facility water's share per CDU (one duty pump
    # of 40 L/s water for 2 CDUs); the TCS side from the racks' coolant flow.
    fws_c = 0.040 * 995 * 4180 / 2  # W/K
    tcs_c = float(np.asarray(clean.params.cooling.tcs_c)[0])
    q = (c["cdu_return_c"][0] - c["cdu_supply_c"][0]) * tcs_c  # rack heat into the loop
    q += float(np.asarray(clean.params.cooling.tcs_pump_w)[0])  # and the pump's
    c_min, c_max = min(tcs_c, fws_c), max(tcs_c, fws_c)

    def g(ua: float) -> float:
        return eps_counterflow(ua / c_min, c_min / c_max) * c_min

    hand = q * (1 / g(120_000) - 1 / g(200_000))
    moved = f["cdu_supply_c"] - c["cdu_supply_c"]
    assert hand > 1.0  # a visible fault: more than a kelvin
    assert moved == pytest.approx([hand, hand], rel=0.05)
    # the racks' load is the same: the same power at the rack inputs
    assert f["rack_power_w"] == pytest.approx(c["rack_power_w"], rel=1e-6)


def test_a_fouling_ramp_and_a_drifting_sensor_take_effect_at_their_times():
    base = load_site(SMALL)
    truth = parse_truth(
        """
faults:
  - {kind: fouling, at: 100s, ramp: 100s, cdu: 1, ua_fraction: 0.5}
  - {kind: sensor_drift, at: 50s, signal: cdu_supply_c, entity: cdu/1, per_hour: 36}
"""
    )
    plant = TruePlant(truth.true_site(base), truth, 10.0)
    assert plant.ua_fraction(99.0).tolist() == [1.0, 1.0]
    assert plant.ua_fraction(150.0).tolist() == [1.0, 0.75]
    assert plant.ua_fraction(1e4).tolist() == [1.0, 0.5]
    sensors = Sensors(truth, plant.layout)
    assert sensors.offset("cdu_supply_c", 50.0).tolist() == [0.0, 0.0]
    assert sensors.offset("cdu_supply_c", 150.0).tolist() == [0.0, pytest.approx(1.0)]


# ------------------------------------------------------------------- (c) determinism


def test_a_seed_gives_the_same_readings_and_another_seed_other_noise():
    base = load_site(SMALL)
    site_layout = TruePlant(base, parse_truth("{}"), 10.0).layout
    true = {s: np.full(len(site_layout.entities(s)), 40.0) for s in
            ("cdu_supply_c", "cdu_return_c", "ambient_c", "rack_power_w", "gpu_power_w",
             "gpu_temp_c", "meter_power_w", "ups_output_w")}  # fmt: skip

    def readings(seed: int) -> list[np.ndarray]:
        truth = parse_truth(TRUTH.replace("seed: 11", f"seed: {seed}"))
        sensors = Sensors(truth, site_layout)
        return [v for t in (10.0, 20.0, 30.0) for v in sensors.read(true, t).values()]

    a, b, other = readings(11), readings(11), readings(12)
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, other, strict=True))


def test_two_plants_with_one_seed_step_identically():
    async def main() -> list[list[np.ndarray]]:
        out = []
        for _ in range(2):
            plant = started_plant()
            out.append([plant.step_once().measured["cdu_supply_c"] for _ in range(3)])
        return out

    first, second = asyncio.run(main())
    assert all(np.array_equal(x, y, equal_nan=True) for x, y in zip(first, second, strict=True))


def test_many_steps_in_one_loop_read_as_one_step_at_a_time():
    truth = parse_truth("seed: 3", "t.yaml")
    one, many = (TruePlant(load_site(SMALL), truth, dt=10.0) for _ in range(2))
    singly = [one.advance() for _ in range(12)]
    looped = many.advance_many(5) + many.advance_many(7)
    assert (many.step, many.time_s) == (12, 120.0)
    for a, b in zip(singly, looped, strict=True):
        assert a.keys() == b.keys()
        for k in a:  # one compiled loop may fuse differently from single steps: rounding
            np.testing.assert_allclose(b[k], a[k], rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(many.energy_mj, one.energy_mj, rtol=1e-6)
    assert one.energy_mj.sum() > 0


# --------------------------------------------------------------- (d) bad truth files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sensors: {dropout: 1.5}", "t.yaml: sensors.dropout: Input should be less than 1"),
        ("sensors: {noise: {cdu_supply: 1}}", "t.yaml: sensors.noise.cdu_supply.[key]: "),
        ("faults: [{kind: fouling, at: soon, cdu: 0, ua_fraction: 0.5}]",
         "t.yaml: faults.0.at: "),
        ("faults: [{kind: leak, at: 1h}]", "t.yaml: faults.0: "),
        ("seed: -1", "t.yaml: seed: Input should be greater than or equal to 0"),
        ("- 1", "t.yaml: the top level must be a mapping"),
        ("overrides: {cooling.cdu.ua_w_per_kk: 1}",
         "t.yaml: overrides: cooling.cdu.ua_w_per_kk: unknown field"),
        ("overrides: {cooling.cdu.ua_w_per_k: -5}",
         "t.yaml: overrides: cooling.cdu.ua_w_per_k: Input should be greater than or equal"),
        ("sensors: {bias: [{signal: cdu_supply_c, entity: cdu/9, value: 1}]}",
         "t.yaml: sensors.bias.0.entity: cdu_supply_c has no sensor at 'cdu/9' "
         "(known: cdu/0, cdu/1)"),
        ("faults: [{kind: pump_failure, at: 1h, index: 2}]",
         "t.yaml: faults.0.index: 2 out of range, the site has 2 facility water pump(s)"),
        ("faults: [{kind: fouling, at: 1h, cdu: 2, ua_fraction: 0.5}]",
         "t.yaml: faults.0.cdu: 2 out of range, the site has 2 CDU(s)"),
    ],
)  # fmt: skip
def test_a_bad_truth_file_is_one_line_naming_the_field(tmp_path: Path, text: str, message: str):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TruthError) as err:
        Plant(load_site(SMALL), parse_truth(path.read_text(), "t.yaml"), "t.yaml")
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_twin_plant_reports_a_bad_truth_file_in_one_line(tmp_path: Path):
    (tmp_path / "t.yaml").write_text("sensors: {dropout: 2}\n")
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "plant", str(SMALL), "--truth",
         str(tmp_path / "t.yaml")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {tmp_path / 't.yaml'}: sensors.dropout: Input should be less than 1"
    )


def test_the_default_truth_file_loads_and_perturbs_the_small_site():
    truth, _ = load_truth(None)
    site = truth.true_site(load_site(SMALL))
    assert site.cooling.cdu.ua_w_per_k == 150_000
    assert layout  # the module's helpers are importable without a model


def test_redfish_over_tls_with_the_plants_self_signed_certificate(tmp_path: Path):
    async def main() -> None:
        plant = started_plant(redfish_tls=True, tls_dir=tmp_path)
        await plant.start()
        try:
            snap = plant.step_once()
            e = plant.endpoints()
            assert e.redfish_url.startswith("https://127.0.0.1:") and e.redfish_ca_file
            racks = parse_pointmap(plant.pointmap_text()).sources["racks"]
            assert isinstance(racks, RedfishSource)
            assert racks.ca_file == str(tmp_path / "redfish.crt")
            async with httpx.AsyncClient(base_url=e.redfish_url) as system_cas:
                with pytest.raises(httpx.ConnectError):  # self-signed: not a known CA's
                    await system_cas.get("/redfish/v1")
            verify = ssl.create_default_context(cafile=e.redfish_ca_file)
            async with httpx.AsyncClient(base_url=e.redfish_url, verify=verify) as http:
                doc = (
                    await http.get(
                        "/redfish/v1/Chassis/rack-0-0/Sensors/PowerConsumption",
                        auth=("twin-monitor", "plant"),
                    )
                ).json()
        finally:
            await plant.close()
        measured = snap.measured["rack_power_w"][0]
        assert doc["Reading"] == (None if math.isnan(measured) else pytest.approx(measured))

    asyncio.run(asyncio.wait_for(main(), 300))


def test_pump_failures_are_site_failures_from_their_time():
    base = load_site(SMALL)
    # Both facility water pumps (the small site runs 1 of 2): the CDUs lose their sink.
    truth = parse_truth(
        "faults: [{kind: pump_failure, at: 100s, index: 0},"
        " {kind: pump_failure, at: 100s, repair_at: 1h, index: 1}]"
    )
    site = truth.true_site(base)
    assert [(f.equipment, f.index, f.at, f.repair_at) for f in site.failures] == [
        ("pump", 0, 100.0, None),
        ("pump", 1, 100.0, 3600.0),
    ]
    clean, failed = TruePlant(base, parse_truth("{}"), 10.0), TruePlant(site, truth, 10.0)
    for _ in range(10):  # to t = 100 s: no difference
        c, f = clean.advance(), failed.advance()
    assert f["cdu_supply_c"] == pytest.approx(c["cdu_supply_c"], abs=1e-9)
    for _ in range(12):  # two minutes without facility water flow
        c, f = clean.advance(), failed.advance()
    assert np.all(f["cdu_supply_c"] > c["cdu_supply_c"] + 1.0)
