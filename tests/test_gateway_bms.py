"""BMS Event Bus points over MQTT into the gateway: through nats-server's own MQTT
listener, and from an external broker (mosquitto) with username/password and retained
metadata. Real servers on loopback, a real MQTT 3.1.1 client (aiomqtt)."""

from __future__ import annotations

import asyncio
import getpass
import json
import shutil
import socket
import ssl
import subprocess
import time

import aiomqtt
import nats
import pytest
from google.protobuf import struct_pb2

from services.gateway.adapters.bms import BmsMqttAdapter, BmsNatsAdapter
from services.gateway.pointmap import parse_pointmap
from services.gateway.service import Gateway, stats_subject
from services.runtime.nats_server import NatsServer
from twin.telemetry.v1 import telemetry_pb2 as tm

SITE = "small"
VALUE = "BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu{}/supply"
META = "BMS/v1/PUB/Metadata/CDU/LiquidTemperature/hall-a/cdu{}/supply"
MAP = r"""
sources:
  bms: {kind: bms, transport: %s}
points:
  - source: bms
    point: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall.b/cdu0/supply'
    entity: 'cdu/4'
    quantity: supply_temperature_c
    stale_s: 300
  - source: bms
    match: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu(?P<cdu>\d+)/supply'
    entity: 'cdu/{cdu}'
    quantity: supply_temperature_c
    range: [5, 60]
    stale_s: 300
"""


def payload(value, *, quality=1, ms=None) -> bytes:
    stamp = int(time.time() * 1000) if ms is None else ms
    return json.dumps({"value": value, "timestamp": stamp, "quality": quality}).encode()


def mqtt_port(server: NatsServer) -> int:
    """The port of the server's MQTT listener (started with ``mqtt=True``)."""
    assert server.mqtt_port is not None
    return server.mqtt_port


def nats_adapter(gateway: Gateway) -> BmsNatsAdapter:
    """The gateway's one adapter, of a map whose source has ``transport: nats``."""
    adapter = gateway.adapters[0]
    assert isinstance(adapter, BmsNatsAdapter)
    return adapter


def mqtt_adapter(gateway: Gateway) -> BmsMqttAdapter:
    """The gateway's one adapter, of a map whose source names an MQTT broker."""
    adapter = gateway.adapters[0]
    assert isinstance(adapter, BmsMqttAdapter)
    return adapter


async def until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def tick_values(nc, gateway: Gateway) -> dict[str, float]:
    """Run one tick; the published batch as {entity: value}."""
    sub = await nc.subscribe(f"telemetry.{SITE}.>")
    await nc.flush()
    await gateway.publish_tick()
    msg = await sub.next_msg(timeout=5)
    await sub.unsubscribe()
    batch = tm.MeasurementBatch.FromString(msg.data)
    assert msg.subject == f"telemetry.{SITE}.bms" and batch.source == "bms"
    return {m.entity: m.value for m in batch.measurements}


def test_bms_over_the_nats_mqtt_listener_with_garbage_counted():
    async def main() -> None:
        async with NatsServer(mqtt=True) as server:
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, SITE, parse_pointmap(MAP % "nats"))
            await gateway.start()
            await nc.flush()
            async with aiomqtt.Client("127.0.0.1", mqtt_port(server)) as mqtt:
                # Metadata (units) first, as the spec requires; then values.
                meta = json.dumps({"engUnit": "degreesFahrenheit"}).encode()
                await mqtt.publish(META.format(1), meta, qos=1)
                await mqtt.publish(VALUE.format(0), payload(31.5), qos=1)
                # A "." in a level (NATS carries it as "//") is part of the point id.
                dotted = VALUE.format(0).replace("hall-a", "hall.b")
                await mqtt.publish(dotted, payload(33.0), qos=1)
                await until(lambda: "BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu1/supply"
                            in nats_adapter(gateway).payloads.units)  # fmt: skip
                await mqtt.publish(VALUE.format(1), payload(95.0), qos=1)  # 35 degC
                garbage = [
                    b"{not json",  # malformed
                    b'{"value": 1.0, "timestamp": 1}',  # malformed: no quality
                    b'{"value": "31", "timestamp": 1, "quality": 1}',  # malformed: a string
                    payload(float("nan")),  # non_finite
                    payload(None),  # non_finite: the BMS has no reading
                    payload(31.0, quality=0),  # bad_quality
                    payload(80.0),  # out_of_range
                    payload(31.0, ms=int(time.time() * 1000) - 400_000),  # stale
                ]
                for body in garbage:
                    await mqtt.publish(VALUE.format(2), body, qos=1)
                await mqtt.publish(VALUE.format(9).replace("CDU", "HX"), payload(1.0), qos=1)
                for i in range(3000):  # a flood of one point: all but one late or duplicate
                    await mqtt.publish(VALUE.format(3), payload(20.0 + i % 7, ms=5), qos=0)
            s = gateway.aligner.stats
            await until(lambda: sum(s.rejected.values()) + s.accepted >= 3012)
            assert await tick_values(nc, gateway) == {
                "cdu/0": 31.5, "cdu/1": pytest.approx(35.0), "cdu/4": 33.0
            }  # fmt: skip
            reply = await nc.request(stats_subject(SITE), b"", timeout=5)
            stats = struct_pb2.Struct.FromString(reply.data)
            counts = stats["rejected"]
            assert isinstance(counts, struct_pb2.Struct)
            rejected = dict(counts.items())
            assert (rejected["malformed"], rejected["non_finite"], rejected["bad_quality"]) == (
                3,
                2,
                1,
            )
            assert (rejected["out_of_range"], rejected["unknown_point"]) == (1, 1)
            # the flood: timestamp 5 ms after the epoch, older than stale_s
            assert rejected["stale"] == 1 + 3000
            assert (stats["accepted"], stats["published"], stats["ticks"]) == (3, 3, 1)
            await gateway.stop()
            await nc.close()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mosquitto(tmp_path, *, tls: bool):
    """mosquitto on a free loopback port, user ``bms``/``s3cret``; with TLS, a server
    certificate for 127.0.0.1 from a throwaway CA (``tmp_path/ca.crt``)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not shutil.which(binary):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    subprocess.run([passwd, "-c", "-b", str(tmp_path / "passwd"), "bms", "s3cret"], check=True)
    port = _free_port()
    conf = (
        f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {tmp_path / 'passwd'}\npersistence false\n"
        f"user {getpass.getuser()}\n"  # started as root it would switch to `mosquitto`
    )
    if tls:
        from test_security import make_pki

        pki = make_pki(tmp_path)
        conf += (
            f"cafile {pki['ca_crt']}\ncertfile {pki['server_crt']}\nkeyfile {pki['server_key']}\n"
        )
    (tmp_path / "m.conf").write_text(conf)
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "m.conf")], stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"mosquitto did not start: {proc.stderr.read()!r}")
            time.sleep(0.05)
    return port, proc


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def mosquitto(request, tmp_path):
    port, proc = start_mosquitto(tmp_path, tls=request.param)
    yield port, (str(tmp_path / "ca.crt") if request.param else None)
    proc.terminate()
    proc.wait(5)


def broker_map(port: int, ca: str | None) -> str:
    tls = f", tls: true, ca_file: '{ca}'" if ca else ""
    return (MAP % "mqtt").replace(
        "transport: mqtt}",
        f"transport: mqtt, port: {port}, username: bms, password_env: BMS_PASSWORD{tls}}}",
    )


def broker_client(port: int, ca: str | None, password: str = "s3cret") -> aiomqtt.Client:
    context = ssl.create_default_context(cafile=ca) if ca else None
    return aiomqtt.Client("127.0.0.1", port, username="bms", password=password, tls_context=context)


def test_bms_from_an_external_broker_with_password_and_retained_metadata(mosquitto, monkeypatch):
    monkeypatch.setenv("BMS_PASSWORD", "s3cret")
    text = broker_map(*mosquitto)

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            async with broker_client(*mosquitto) as mqtt:
                # Retained before the gateway connects: the broker hands it over on subscribe.
                meta = json.dumps({"engUnit": "kelvins"}).encode()
                await mqtt.publish(META.format(0), meta, qos=1, retain=True)
                gateway = Gateway(nc, SITE, parse_pointmap(text))
                await gateway.start()
                adapter = mqtt_adapter(gateway)
                await asyncio.wait_for(adapter.connected.wait(), 10)
                await until(lambda: VALUE.format(0) in adapter.payloads.units)
                await mqtt.publish(VALUE.format(0), payload(305.15), qos=1)
            await until(lambda: gateway.aligner.stats.accepted == 1)
            assert await tick_values(nc, gateway) == {"cdu/0": pytest.approx(32.0)}
            await gateway.stop()
            await nc.close()

    asyncio.run(main())


def test_wrong_broker_password_is_retried_not_fatal(mosquitto, monkeypatch):
    monkeypatch.setenv("BMS_PASSWORD", "wrong")
    text = broker_map(*mosquitto)

    async def main() -> None:
        async with NatsServer() as server:
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, SITE, parse_pointmap(text))
            await gateway.start()
            await asyncio.sleep(1.5)
            assert not mqtt_adapter(gateway).connected.is_set()
            assert all(not t.done() for t in gateway._tasks)  # still retrying
            await gateway.stop()
            await nc.close()

    asyncio.run(main())


def test_nats_server_mqtt_listener_keeps_its_port_across_a_restart():
    async def main() -> None:
        with NatsServer(mqtt=True) as server:
            port = server.mqtt_port
            assert port is not None
            assert server.mqtt_url == f"mqtt://127.0.0.1:{port}"
            server.restart()
            assert server.mqtt_port == port
            async with aiomqtt.Client("127.0.0.1", port) as mqtt:
                await mqtt.publish("BMS/v1/PUB/Value/System/Status/x", b"{}", qos=1)

    asyncio.run(main())


def test_retained_metadata_is_read_from_nats_servers_mqtt_store():
    async def main() -> None:
        async with NatsServer(mqtt=True) as server:
            async with aiomqtt.Client("127.0.0.1", mqtt_port(server)) as mqtt:
                # Retained long before the gateway starts (the BMS publishes it once).
                meta = json.dumps({"engUnit": "kelvins"}).encode()
                await mqtt.publish(META.format(2), meta, qos=1, retain=True)
            nc = await nats.connect(server.url)
            gateway = Gateway(nc, SITE, parse_pointmap(MAP % "nats"))
            await gateway.start()
            adapter = nats_adapter(gateway)
            await asyncio.wait_for(adapter.retained_read.wait(), 10)
            assert adapter.payloads.units == {VALUE.format(2): "K"}
            async with aiomqtt.Client("127.0.0.1", mqtt_port(server)) as mqtt:
                await mqtt.publish(VALUE.format(2), payload(303.15), qos=1)
            await until(lambda: gateway.aligner.stats.accepted == 1)
            assert await tick_values(nc, gateway) == {"cdu/2": pytest.approx(30.0)}
            await gateway.stop()
            await nc.close()

    asyncio.run(main())
