"""Redfish: real Redfish emulators from sushy-tools on loopback, over TLS with a
throwaway CA. ``sushy-static`` serves a mockup tree (the DMTF mockup layout, written
here: Sensors, PowerSubsystem and the older Power resource of two racks); the Flask
``sushy-emulator`` enforces HTTP basic auth. Neither speaks Redfish sessions, nor can
either be made slow: a small loopback server here does both (sessions in front of the
same mockup tree, and a sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import bcrypt
import nats
import pytest
from quiet_http import QuietThreadingHTTPServer
from test_security import make_pki

from services.gateway.adapters.redfish import Readings, RedfishAdapter
from services.gateway.pointmap import PointMapError, load_pointmap, parse_pointmap
from services.gateway.reading import Reading
from services.gateway.service import Gateway
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2 as tm

R = "/redfish/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ref(uri: str) -> dict[str, str]:
    return {"@odata.id": uri}


def _collection(uris: list[str]) -> dict[str, Any]:
    return {"Members": [_ref(u) for u in uris], "Members@odata.count": len(uris)}


def _sensor(sid: str, reading_type: str, units: str, reading: float | None, **status) -> dict:
    return {
        "@odata.type": "#Sensor.v1_7_0.Sensor",
        "Id": sid,
        "ReadingType": reading_type,
        "ReadingUnits": units,
        "Reading": reading,
        "Status": {"State": "Enabled", "Health": "OK", **status},
    }


def mockup() -> dict[str, Any]:
    """URI -> resource. Rack0: a current BMC (Sensors, PowerSubsystem, and Power);
    Rack1: an older one (Power only). A str is written as it is (bad JSON)."""
    c0, c1 = f"{R}/Chassis/Rack0", f"{R}/Chassis/Rack1"
    sensors = {
        "RackPower": _sensor("RackPower", "Power", "W", 31250.0),
        "InletTemp": _sensor("InletTemp", "Temperature", "Cel", 24.5),
        "PDUVoltage": _sensor("PDUVoltage", "Voltage", "V", 415.0),
        "Spare": _sensor("Spare", "Power", "W", None, State="Absent"),
    }
    tree: dict[str, Any] = {
        R: {"Id": "RootService", "Chassis": _ref(f"{R}/Chassis")},
        f"{R}/Chassis": _collection([c0, c1]),
        c0: {
            "Id": "Rack0",
            "ChassisType": "Rack",
            "Sensors": _ref(f"{c0}/Sensors"),
            "PowerSubsystem": _ref(f"{c0}/PowerSubsystem"),
            "Power": _ref(f"{c0}/Power"),
        },
        f"{c0}/Sensors": _collection([f"{c0}/Sensors/{s}" for s in [*sensors, "Broken"]]),
        **{f"{c0}/Sensors/{sid}": doc for sid, doc in sensors.items()},
        f"{c0}/Sensors/Broken": '{"Id": "Broken", "Reading": 12',  # truncated JSON
        f"{c0}/PowerSubsystem": {
            "CapacityWatts": 40000,
            "Allocation": {"AllocatedWatts": 36000, "RequestedWatts": 38000},
            "PowerSupplies": _ref(f"{c0}/PowerSubsystem/PowerSupplies"),
            "Status": {"State": "Enabled", "Health": "OK"},
        },
        f"{c0}/PowerSubsystem/PowerSupplies": _collection(
            [f"{c0}/PowerSubsystem/PowerSupplies/{p}" for p in ("PSU0", "PSU1")]
        ),
        f"{c0}/Power": {
            "PowerControl": [{"MemberId": "0", "PowerConsumedWatts": 31000}],
            "PowerSupplies": [{"MemberId": "0", "PowerInputWatts": 5210, "LineInputVoltage": 230}],
            "Voltages": [{"MemberId": "0", "ReadingVolts": 12.1}],
        },
        c1: {"Id": "Rack1", "ChassisType": "Rack", "Power": _ref(f"{c1}/Power")},
        f"{c1}/Power": {"PowerControl": [{"MemberId": "0", "PowerConsumedWatts": 28000}]},
    }
    for psu, watts in (("PSU0", 5200.0), ("PSU1", 5300.0)):
        uri = f"{c0}/PowerSubsystem/PowerSupplies/{psu}"
        tree[uri] = {"Id": psu, "Metrics": _ref(f"{uri}/Metrics"), "Status": {"Health": "OK"}}
        tree[f"{uri}/Metrics"] = {"InputPowerWatts": {"Reading": watts}, "EnergykWh": None}
    return tree


def write_mockup(root: Path) -> Path:
    """The DMTF mockup layout: each URI's resource in <URI>/index.json."""
    for uri, doc in mockup().items():
        path = root / uri.removeprefix("/") / "index.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return root / "redfish" / "v1"


def wait_listening(port: int, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, "the emulator exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


class Emulator:
    """sushy-static (a mockup tree) or sushy-emulator (Flask, --fake) over TLS."""

    def __init__(self, args: list[str], port: int) -> None:
        self.args, self.port = args, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("redfish-pki"))


@pytest.fixture
def static_emulator(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Emulator]:
    files, port = write_mockup(tmp_path / "mockup"), free_port()
    emulator = Emulator(
        ["sushy_tools.static.main", "-i", "127.0.0.1", "-p", str(port), "-m", str(files),
         "-c", str(pki["server_crt"]), "-k", str(pki["server_key"])],
        port,
    )  # fmt: skip
    emulator.start()
    yield emulator
    emulator.stop()


def record(gateway: Gateway) -> list[tuple[float, Reading]]:
    """Every reading the adapters hand the quality stage, with its arrival time."""
    seen: list[tuple[float, Reading]] = []
    offer = gateway.aligner.offer

    def recording(r: Reading):
        seen.append((time.monotonic(), r))
        return offer(r)

    gateway.aligner.offer = recording  # type: ignore[method-assign]
    return seen


async def until(check, what: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def rack_map(port: int, ca: Path) -> str:
    return rf"""
sources:
  racks:
    kind: redfish
    url: https://127.0.0.1:{port}
    auth: basic
    username: monitor
    password_env: TWIN_TEST_REDFISH_PASSWORD
    ca_file: {ca}
    interval_s: 0.2
    timeout_s: 2
    max_backoff_s: 0.8
points:
  - {{source: racks, point: Rack0/Sensors/RackPower, entity: rack/0/0, quantity: rack_power_w,
     range: [0, 100000], stale_s: 30}}
  - {{source: racks, point: Rack0/Sensors/InletTemp, entity: rack/0/0,
     quantity: ambient_temperature_c, stale_s: 30}}
  - source: racks                     # the older Power resource, every rack
    match: 'Rack(?P<slot>\d+)/Power/PowerControl/0'
    entity: 'rack/{{slot}}/1'
    quantity: rack_power_w
    stale_s: 30
  - source: racks                     # PSU input power summed; the source's W wins over kW
    match: 'Rack0/PowerSubsystem/PowerSupplies/(?P<psu>[^/]+)/InputPowerWatts'
    entity: pdu/0
    quantity: equipment_power_w
    unit: kW
    aggregate: sum
    stale_s: 30
  - {{source: racks, point: Rack0/PowerSubsystem/Allocation/AllocatedWatts, entity: pdu/1,
     quantity: equipment_power_w, stale_s: 30}}
  - {{source: racks, point: Rack0/Sensors/PDUVoltage, entity: meter, quantity: meter_power_w,
     stale_s: 30}}                    # volts are no power: rejected (unit)
  - {{source: racks, point: Rack0/Sensors/Spare, entity: rack/2/0, quantity: rack_power_w,
     stale_s: 30}}                    # an Absent sensor: rejected (bad_quality)
"""


def test_rack_power_from_a_redfish_emulator_then_it_dies_and_comes_back(
    static_emulator: Emulator, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWIN_TEST_REDFISH_PASSWORD", "not-in-the-map")
    text = rack_map(static_emulator.port, pki["ca_crt"])

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, "small", parse_pointmap(text))
            seen = record(gateway)
            sub = await nc.subscribe("telemetry.small.racks")
            await gateway.start()
            (adapter,) = gateway.adapters
            assert isinstance(adapter, RedfishAdapter)
            s = gateway.aligner.stats
            await until(lambda: adapter.polls >= 1 and s.accepted >= 7, s)
            await gateway.publish_tick()
            batch = tm.MeasurementBatch.FromString((await sub.next_msg(timeout=5)).data)
            got = {(m.entity, m.quantity): m.value for m in batch.measurements}
            assert got == {
                ("rack/0/0", tm.QUANTITY_RACK_POWER_W): 31250.0,  # Sensors, W
                ("rack/0/0", tm.QUANTITY_AMBIENT_TEMPERATURE_C): 24.5,  # Cel -> degC
                ("rack/0/1", tm.QUANTITY_RACK_POWER_W): 31000.0,  # Power.PowerControl
                ("rack/1/1", tm.QUANTITY_RACK_POWER_W): 28000.0,  # an older BMC
                ("pdu/0", tm.QUANTITY_EQUIPMENT_POWER_W): 10500.0,  # PSU metrics, summed
                ("pdu/1", tm.QUANTITY_EQUIPMENT_POWER_W): 36000.0,  # PowerSubsystem
            }
            rejected = s.rejected
            assert rejected["malformed"] >= 1  # Sensors/Broken
            assert rejected["unit"] >= 1 and rejected["bad_quality"] >= 1
            assert rejected["unknown_point"] >= 1  # e.g. Power/Voltages/0: not mapped
            assert rejected["unreachable"] == rejected["timeout"] == 0
            broken = {r.point for _, r in seen if r.problem == "malformed"}
            assert broken == {f"{R}/Chassis/Rack0/Sensors/Broken"}

            # A dead endpoint: counted, retried with a doubling wait (0.4, 0.8, 0.8 s).
            static_emulator.stop()
            dead = lambda: [t for t, r in seen if r.problem == "unreachable"]  # noqa: E731
            await until(lambda: len(dead()) >= 4, s)
            gaps = [b - a for a, b in zip(dead(), dead()[1:], strict=False)]
            assert gaps[0] > 0.3 and all(g > 0.65 for g in gaps[1:3]), gaps  # doubled ...
            assert all(g < 2.0 for g in gaps), gaps  # ... up to max_backoff_s
            assert gateway.restarts == 0 and all(not t.done() for t in gateway._tasks)

            # ... and read again once it is back.
            polls = adapter.polls
            static_emulator.start()
            await until(lambda: adapter.polls > polls, s)
            await gateway.stop()
            await nc.close()

    asyncio.run(asyncio.wait_for(main(), 120))


@pytest.fixture
def auth_emulator(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Emulator]:
    digest = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "htpasswd").write_text(f"monitor:{digest}\n")
    (tmp_path / "emulator.conf").write_text(
        f"SUSHY_EMULATOR_AUTH_FILE = {str(tmp_path / 'htpasswd')!r}\n"
    )
    port = free_port()
    emulator = Emulator(
        ["sushy_tools.emulator.main", "--fake", "--config", str(tmp_path / "emulator.conf"),
         "-i", "127.0.0.1", "-p", str(port), "--ssl-certificate", str(pki["server_crt"]),
         "--ssl-key", str(pki["server_key"])],
        port,
    )  # fmt: skip
    emulator.start()
    yield emulator
    emulator.stop()


def test_basic_auth_is_sent_and_a_refusal_is_counted(
    auth_emulator: Emulator, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWIN_TEST_RIGHT", "right")
    monkeypatch.setenv("TWIN_TEST_WRONG", "wrong")
    sources = "\n".join(
        f"""  {name}:
    kind: redfish
    url: https://127.0.0.1:{auth_emulator.port}
    auth: basic
    username: monitor
    password_env: TWIN_TEST_{name.upper()}
    ca_file: {pki["ca_crt"]}
    interval_s: 0.2"""
        for name in ("right", "wrong")
    )
    text = f"""
sources:
{sources}
points:
  - {{source: right, point: x, entity: rack/0/0, quantity: rack_power_w, stale_s: 30}}
"""

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, "small", parse_pointmap(text))
            seen = record(gateway)
            await gateway.start()
            right, wrong = gateway.adapters
            assert isinstance(right, RedfishAdapter) and isinstance(wrong, RedfishAdapter)
            await until(
                lambda: right.polls >= 2 and any(r.source == "wrong" for _, r in seen), seen
            )
            assert wrong.polls == 0
            assert {(r.source, r.problem) for _, r in seen} == {("wrong", "unreachable")}
            await gateway.stop()
            await nc.close()

    asyncio.run(asyncio.wait_for(main(), 120))


class SessionService:
    """Redfish sessions in front of a mockup tree, over plain HTTP on loopback:
    POST .../Sessions gives a token, a GET without a live token is 401, DELETE ends
    the session. Chassis ``slow`` answers after 2 s."""

    def __init__(self, files: Path) -> None:
        self.tokens: dict[str, str] = {}  # token -> session URI
        self.logins: list[dict] = []
        self.deleted: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(code)
                for key, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(key.replace("_", "-"), value)
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # a client that timed out
                    self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.logins.append(body)
                n = len(service.logins)
                uri = f"{R}/SessionService/Sessions/{n}"
                service.tokens[f"token-{n}"] = uri
                self._send(201, json.dumps({"@odata.id": uri}).encode(),
                           X_Auth_Token=f"token-{n}", Location=uri)  # fmt: skip

            def do_GET(self) -> None:
                if self.path.endswith("/slow"):
                    time.sleep(2)
                if self.headers.get("X-Auth-Token") not in service.tokens:
                    self._send(401)
                    return
                path = files / self.path.removeprefix(R).strip("/") / "index.json"
                if path.is_file():
                    self._send(200, path.read_bytes(), Content_Type="application/json")
                else:
                    self._send(404)

            def do_DELETE(self) -> None:
                token = self.headers.get("X-Auth-Token", "")
                if service.tokens.get(token) == self.path:
                    del service.tokens[token]
                    service.deleted.append(self.path)
                self._send(204)

            def log_message(self, *args) -> None:
                pass

        self.server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[SessionService]:
    service = SessionService(write_mockup(tmp_path / "mockup"))
    yield service
    service.close()


def test_session_login_relogin_logout_and_a_slow_service(
    sessions: SessionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWIN_TEST_REDFISH_PASSWORD", "s3cret")
    text = f"""
sources:
  racks:
    kind: redfish
    url: {sessions.url}
    username: monitor
    password_env: TWIN_TEST_REDFISH_PASSWORD
    chassis: [Rack1]
    interval_s: 0.1
  slow:
    kind: redfish
    url: {sessions.url}
    username: monitor
    chassis: [slow]
    interval_s: 0.1
    timeout_s: 0.3
points:
  - {{source: racks, point: Rack1/Power/PowerControl/0, entity: rack/1/1,
     quantity: rack_power_w, stale_s: 30}}
"""

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, "small", parse_pointmap(text))
            await gateway.start()
            racks, slow = gateway.adapters
            assert isinstance(racks, RedfishAdapter) and isinstance(slow, RedfishAdapter)
            s = gateway.aligner.stats
            await until(lambda: racks.polls >= 1 and s.rejected["timeout"] >= 1, s)
            assert {"UserName": "monitor", "Password": "s3cret"} in sessions.logins  # racks'
            assert {"UserName": "monitor", "Password": ""} in sessions.logins  # slow: no env
            sessions.tokens.clear()  # the BMC drops every session (a reboot, a timeout)
            polls = racks.polls
            await until(lambda: racks.polls >= polls + 2, s)
            assert racks.client is not None and racks.client.logins == 2  # once again
            assert s.rejected["unreachable"] == 0  # the 401 was answered by a login
            assert slow.polls == 0 and s.accepted >= 3
            live = set(sessions.tokens.values())  # racks' new session (slow's was dropped)
            await gateway.stop()
            assert set(sessions.deleted) == live and len(live) == 1  # logged out at stop
            assert sessions.tokens == {}
            await nc.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_readings_of_a_power_resource_and_a_malformed_field() -> None:
    out = Readings("racks", now=100.0)
    control = [{"PowerConsumedWatts": 1500}, {"MemberId": "B", "PowerConsumedWatts": "n/a"}]
    volts = [{"MemberId": "12V", "ReadingVolts": 12.2, "Status": {"Health": "Critical"}}]
    out.power("Rack7", {"PowerControl": control, "Voltages": volts})
    assert [(r.point, r.value, r.good, r.unit, r.problem) for r in out.out] == [
        ("Rack7/Power/PowerControl/0", 1500.0, True, "W", None),  # no MemberId: position
        ("Rack7/Power/PowerControl/B", None, False, None, "malformed"),
        ("Rack7/Power/Voltages/12V", 12.2, False, "V", None),  # Critical: not good
    ]


def test_point_map_redfish_source_errors_name_the_field() -> None:
    text = """
sources:
  racks: {kind: redfish, url: "https://bmc/redfish/v1", username: monitor}
points:
  - {source: racks, point: x, entity: rack/0/0, quantity: rack_power_w, stale_s: 30}
"""
    with pytest.raises(PointMapError, match=r"^m:3: sources\.racks\.url: "):
        parse_pointmap(text, "m")
    example = load_pointmap(Path(__file__).parents[1] / "services/gateway/examples/redfish.yaml")
    assert example.sources["racks"].kind == "redfish"
