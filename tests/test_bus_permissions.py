"""The bus permissions (services/bus_permissions.py) as the Helm chart renders them, on a
real nats-server: each service identity does its job, a forged clock (or another
domain's state, or the run key) is refused and never delivered, the field gateway and a
BMS integration work through nats-server's MQTT listener under their own identities, and
a whole twin of the small site runs to its horizon with one identity per service process."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import grpc
import nats
import psycopg
import pytest
import yaml
from google.protobuf import struct_pb2
from helm_binary import Helm
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.js.errors import NotFoundError
from pg_rows import one
from started_twin import database_url
from test_security import user_nkey
from typer.testing import CliRunner

from services import bus_permissions
from services.cli.main import app
from services.gateway.pointmap import parse_pointmap
from services.gateway.service import Gateway, stats_subject
from services.launcher import LocalTwin, free_addresses
from services.runtime import bus
from services.runtime.config import RuntimeConfig
from services.runtime.nats_server import NatsServer, find_nats_server
from services.runtime.service import connect_bus
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2, twin_pb2, twin_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "ai-factory-twin"
SITE = "small"
# nats-server lexes a $VARIABLE's value as a config value: one starting with "-" is read
# as a negative number and refused, so the random passwords start with a letter.
PASSWORDS = {i: "p" + secrets.token_urlsafe(16) for i in bus_permissions.IDENTITIES}
ENV = {bus_permissions.password_variable(i): p for i, p in PASSWORDS.items()}
DENIED = "Permissions Violation"
# The chart with the gateway and nats-server's MQTT listener: every identity's user.
GATEWAY_VALUES = {
    "site": {"id": SITE},
    "gateway": {"enabled": True, "existingConfigMap": "points"},
    "nats": {"mqtt": {"enabled": True}},
}
WITHOUT_GATEWAY = [i for i in bus_permissions.IDENTITIES if i not in ("gateway", "bms")]


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rendered_nats_config(helm: Helm, tmp: Path, values: dict[str, Any]) -> dict[str, str]:
    (tmp / "values.yaml").write_text(yaml.safe_dump(values))
    out = helm.run("template", "twin", str(CHART), "-f", str(tmp / "values.yaml")).stdout
    for doc in yaml.safe_load_all(out):
        if (
            doc
            and doc["kind"] == "ConfigMap"
            and doc["metadata"]["name"] == "twin-ai-factory-twin-nats"
        ):
            return doc["data"]
    raise AssertionError("no NATS ConfigMap rendered")


@pytest.fixture(scope="module")
def auth_conf(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart's auth.conf for the small site (gateway on), as nats-server reads it."""
    tmp = tmp_path_factory.mktemp("auth")
    data = rendered_nats_config(helm, tmp, GATEWAY_VALUES)
    assert "include ./auth.conf" in data["nats.conf"]
    path = tmp / "auth.conf"
    path.write_text(data["auth.conf"])
    return path


@pytest.fixture(scope="module")
def server(auth_conf: Path) -> Iterator[NatsServer]:
    with NatsServer(extra_args=["-c", str(auth_conf)], env=ENV, start_timeout_s=30) as srv:
        arun(_jetstream_ready(srv.url))
        yield srv


async def _jetstream_ready(url: str, timeout_s: float = 30.0) -> None:
    """The client port opens before the account's JetStream API answers; on a loaded
    machine a first request in that gap gets "no responders"."""
    nc = await nats.connect(
        url, user="twin", password=PASSWORDS["twin"], inbox_prefix="_INBOX.twin"
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:  # an answer, "not found" included, means the API is up
                await nc.jetstream().stream_info(f"twin-{SITE}")
                return
            except NotFoundError:
                return
            except NoRespondersError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await nc.close()


# ------------------------------------------------------------------ one source, no drift


def test_chart_file_is_generated_from_the_table() -> None:
    assert bus_permissions.CHART_FILE.read_text() == bus_permissions.chart_yaml(), (
        "charts/ai-factory-twin/files/nats-permissions.yaml is stale: run "
        "`python -m services.bus_permissions --chart`"
    )


def test_chart_readme_has_the_table() -> None:
    readme = (CHART / "README.md").read_text()
    assert bus_permissions.markdown_table() in readme, (
        "charts/ai-factory-twin/README.md: paste `python -m services.bus_permissions --markdown`"
    )


def test_chart_renders_the_generator_block(auth_conf: Path) -> None:
    """The chart and the plain generator (non-Kubernetes) write the same block."""
    assert auth_conf.read_text() == bus_permissions.render_authorization(SITE)
    assert not any(p in auth_conf.read_text() for p in PASSWORDS.values())


def test_chart_without_the_gateway_has_no_gateway_users(helm: Helm, tmp_path: Path) -> None:
    auth = rendered_nats_config(helm, tmp_path, {"site": {"id": SITE}})["auth.conf"]
    assert auth == bus_permissions.render_authorization(SITE, WITHOUT_GATEWAY)


@pytest.mark.parametrize("values", [{}, {"nats": {"cluster": {"enabled": True}}}, GATEWAY_VALUES])
def test_rendered_nats_config_is_valid(helm: Helm, tmp_path: Path, values: dict[str, Any]) -> None:
    """nats-server itself checks the whole rendered config (-t), include and variables."""
    for key, text in rendered_nats_config(helm, tmp_path, values).items():
        (tmp_path / key).write_text(text)
    command = [str(find_nats_server()), "-c", str(tmp_path / "nats.conf"), "-t"]
    env = {**os.environ, **ENV, "POD_NAME": "nats-0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stderr
    # The passwords are variables nats-server needs from its environment (the Secret).
    del env["TWIN_NATS_PASSWORD_TWIN"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert "variable reference for 'TWIN_NATS_PASSWORD_TWIN'" in done.stderr


def test_generator_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bus_permissions.main(["--site", SITE]) == 0
    assert capsys.readouterr().out == bus_permissions.render_authorization(SITE)
    assert bus_permissions.main(["--site", "a.b"]) == 2
    assert capsys.readouterr().err == "error: --site: 'a.b' is not a site id\n"


# ------------------------------------------------------------------------- identities


async def connect_as(url: str, identity: str) -> NATS:
    """Connect as a service does (credentials from TWIN_NATS_*, its inbox prefix)."""
    env = {"TWIN_NATS_URL": url, "TWIN_NATS_USER": identity}
    config = RuntimeConfig.from_env({**env, "TWIN_NATS_PASSWORD": PASSWORDS[identity]})

    async def noop() -> None:
        return None

    return await connect_bus(
        config,
        name=identity,
        on_disconnect=noop,
        on_reconnect=noop,
        connect_deadline_s=5,
        inbox_prefix=f"_INBOX.{identity}",
    )


class Client:
    """A raw connection of one identity that records the server's -ERR lines."""

    def __init__(self, nc: NATS, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors

    @classmethod
    async def open(cls, url: str, identity: str, seed: Path | None = None) -> Client:
        """As ``identity`` with its password, or with the nkey ``seed`` file."""
        errors: list[str] = []

        async def error(exc: Exception) -> None:
            errors.append(str(exc))

        credentials: dict[str, Any] = (
            {"user": identity, "password": PASSWORDS[identity]}
            if seed is None
            else {"nkeys_seed": str(seed)}
        )
        nc = await nats.connect(
            url,
            **credentials,
            error_cb=error,
            allow_reconnect=False,
            inbox_prefix=f"_INBOX.{identity}",
        )
        return cls(nc, errors)

    @property
    def errors_text(self) -> str:
        return "\n".join(self.errors).lower()

    async def denied(self, subject: str, op: str = "publish") -> bool:
        """The server answered -ERR 'Permissions Violation for <op> to <subject>'."""
        await self.nc.flush()
        error = f'permissions violation for {op} to "{subject.lower()}"'
        return await until(lambda: error in self.errors_text)


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` (the machine may be loaded: no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def settle() -> None:
    """A stray (forged) message would have arrived by now: the real one, published after
    it, already has."""
    await asyncio.sleep(0.2)


async def _collect(nc: NATS, subject: str) -> list[bytes]:
    got: list[bytes] = []

    async def handle(msg: Any) -> None:
        got.append(msg.data)

    await nc.subscribe(subject, cb=handle)
    await nc.flush()
    return got


def test_each_identity_does_its_job(server: NatsServer) -> None:
    """What services/serve.py, clock.py, node.py and the historian do on the bus, each with
    its own identity: declarations, KV, state and clock traffic, replays, pull + ack."""

    async def main() -> None:
        twin = await connect_as(server.url, "twin")
        historian = await connect_as(server.url, "historian")
        telemetry = await connect_as(server.url, "telemetry")
        domains = {d: await connect_as(server.url, d) for d in ("compute", "cooling")}
        try:
            # twin: the stream and both buckets, the run key, the clock, every state.
            js = twin.jetstream()
            await bus.declare_all(js, SITE)
            run_kv = await bus.declare_run_bucket(js, SITE)
            await run_kv.put("run", b"start")
            assert (await run_kv.get("run")).value == b"start"
            states = await _collect(twin, f"twin.{SITE}.*.state")
            # historian: the stream (idempotent), its durable, pull.
            hjs = historian.jetstream()
            await bus.declare_stream(hjs, SITE)
            await bus.declare_consumer(hjs, SITE, filter_subjects=[f"twin.{SITE}.*.state"])
            pull = await bus.pull_subscription(hjs, SITE)
            # ... and its second durable: the site's telemetry, stored as measurements.
            await bus.declare_consumer(
                hjs,
                SITE,
                bus.MEASUREMENTS_DURABLE,
                filter_subjects=[bus.telemetry_subject(SITE)],
            )
            measured = await bus.pull_subscription(hjs, SITE, bus.MEASUREMENTS_DURABLE)
            await telemetry.publish(bus.telemetry_subject(SITE, "bms"), b"measurement batch")
            await telemetry.flush()
            got = await bus.fetch(measured, 1, 10.0)
            assert [m.data for m in got] == [b"measurement batch"]
            for m in got:
                await m.ack()
            # domains: clock in, state out, KV snapshot and config, replay both ways.
            compute, cooling = domains["compute"], domains["cooling"]
            clock_in = await _collect(compute, bus.clock_subject(SITE))
            cjs = compute.jetstream()
            kv = await bus.declare_run_bucket(cjs, SITE)
            assert (await kv.get("run")).value == b"start"  # _rejoin reads the run
            await compute.publish(f"$KV.{bus.run_bucket(SITE)}.compute", b"snapshot")
            config = await cjs.key_value(bus.config_bucket(SITE))
            await config.put("compute", b"setpoints")

            async def replay(msg: Any) -> None:
                await msg.respond(b"state of step 3")

            await cooling.subscribe(bus.replay_subject(SITE, "cooling"), cb=replay)
            await cooling.flush()
            reply = await compute.request(bus.replay_subject(SITE, "cooling"), b"3", timeout=10)
            assert reply.data == b"state of step 3"
            await twin.publish(bus.clock_subject(SITE), b"tick")
            await compute.publish(bus.state_subject(SITE, "compute"), b"compute state")
            await twin.flush()
            await compute.flush()
            msgs = await bus.fetch(pull, 1, 10.0)
            assert [m.data for m in msgs] == [b"compute state"]
            for m in msgs:
                await m.ack()
            assert await until(lambda: bool(clock_in and states))
            await settle()
            assert clock_in == [b"tick"] and states == [b"compute state"]
            assert (await run_kv.get("compute")).value == b"snapshot"
        finally:
            for nc in (twin, historian, telemetry, *domains.values()):
                await nc.close()

    arun(main())


@pytest.mark.parametrize(
    "forger", ["telemetry", "compute", "historian", "observer", "gateway", "bms"]
)
def test_forged_clock_is_refused_and_not_delivered(server: NatsServer, forger: str) -> None:
    async def main() -> None:
        listener = await Client.open(server.url, "energy")
        clock = await Client.open(server.url, "twin")
        forging = await Client.open(server.url, forger)
        try:
            got = await _collect(listener.nc, bus.clock_subject(SITE))
            await forging.nc.publish(bus.clock_subject(SITE), b"\x10\x01")  # START, no spec
            assert await forging.denied(bus.clock_subject(SITE))
            await clock.nc.publish(bus.clock_subject(SITE), b"real")
            await clock.nc.flush()
            errors = (listener.errors, clock.errors, listener.nc.is_connected)
            assert await until(lambda: bool(got)), errors
            await settle()
            assert got == [b"real"]  # the forged message never arrived
            assert clock.errors == [] and listener.errors == []
        finally:
            for c in (listener, clock, forging):
                await c.nc.close()

    arun(main())


def test_only_the_owner_publishes_a_state_and_the_run_key(server: NatsServer) -> None:
    async def main() -> None:
        twin = await Client.open(server.url, "twin")
        power = await Client.open(server.url, "power")
        compute = await Client.open(server.url, "compute")
        try:
            got = await _collect(twin.nc, f"twin.{SITE}.*.state")
            forged = bus.state_subject(SITE, "compute")
            await power.nc.publish(forged, b"forged")
            assert await power.denied(forged)
            await compute.nc.publish(forged, b"real")
            run_key = f"$KV.{bus.run_bucket(SITE)}.run"
            await compute.nc.publish(run_key, b"forged run")
            assert await compute.denied(run_key)
            await compute.nc.publish(bus.clock_subject(SITE), b"x")
            assert await compute.denied(bus.clock_subject(SITE))
            assert await until(lambda: bool(got))
            await settle()
            assert got == [b"real"]
            # A domain cannot read another identity's replies either.
            await compute.nc.subscribe("_INBOX.twin.>")
            assert await compute.denied("_INBOX.twin.>", "subscription")
        finally:
            for c in (twin, power, compute):
                await c.nc.close()

    arun(main())


def test_telemetry_publishes_telemetry_only(server: NatsServer) -> None:
    async def main() -> None:
        gateway = await Client.open(server.url, "telemetry")
        cooling = await Client.open(server.url, "cooling")
        observer = await Client.open(server.url, "observer")
        try:
            got = await _collect(cooling.nc, f"telemetry.{SITE}.>")
            await gateway.nc.publish("telemetry.other.bms.cdu", b"elsewhere")
            assert await gateway.denied("telemetry.other.bms.cdu")
            await gateway.nc.subscribe(f"twin.{SITE}.clock")
            assert await gateway.denied(f"twin.{SITE}.clock", "subscription")
            await observer.nc.publish(f"telemetry.{SITE}.bms.cdu", b"x")
            assert await observer.denied(f"telemetry.{SITE}.bms.cdu")
            # Core NATS is at-most-once: on a loaded machine a first reading has been seen
            # to go missing, so the gateway repeats it (as it does at every tick).
            for _ in range(30):
                await gateway.nc.publish(f"telemetry.{SITE}.bms.cdu", b"reading")
                await gateway.nc.flush()
                if await until(lambda: bool(got), timeout_s=1):
                    break
            await settle()
            assert got and set(got) == {b"reading"}, (got, cooling.errors_text)
        finally:
            for c in (gateway, cooling, observer):
                await c.nc.close()

    arun(main(), timeout=60)


GATEWAY_MAP = r"""
sources:
  bms: {kind: bms, transport: nats}
points:
  - source: bms
    match: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu(?P<cdu>\d+)/supply'
    entity: 'cdu/{cdu}'
    quantity: supply_temperature_c
    stale_s: 300
"""
VALUE = "BMS/v1/PUB/Value/CDU/LiquidTemperature/hall-a/cdu1/supply"
META = "BMS/v1/PUB/Metadata/CDU/LiquidTemperature/hall-a/cdu1/supply"


def test_gateway_and_bms_identities_over_the_mqtt_listener(auth_conf: Path) -> None:
    """The real Gateway as `gateway`, a real MQTT client as `bms`, on nats-server with the
    chart's users and its MQTT listener: the retained metadata (unit °F) is read from
    $MQTT_rmsgs, the value arrives in °C on telemetry at the tick, the observer reads the
    stats; a forged clock from either identity is refused and never delivered."""
    tick = clock_pb2.Clock(run_id="r", step=1, command=clock_pb2.CLOCK_COMMAND_TICK)
    now_ms = int(time.time() * 1000)

    async def main(server: NatsServer) -> None:
        assert server.mqtt_port is not None
        mqtt = aiomqtt.Client(
            "127.0.0.1", server.mqtt_port, username="bms", password=PASSWORDS["bms"]
        )
        async with mqtt:  # before the gateway: only the retained copy tells the unit
            await mqtt.publish(
                META, json.dumps({"engUnit": "degreesFahrenheit"}), qos=1, retain=True
            )
        as_gateway = await Client.open(server.url, "gateway")  # its inbox, as the service
        nc, errors = as_gateway.nc, as_gateway.errors
        gateway = Gateway(nc, SITE, parse_pointmap(GATEWAY_MAP))
        clock = await Client.open(server.url, "twin")
        cooling = await Client.open(server.url, "cooling")
        observer = await Client.open(server.url, "observer")
        try:
            await gateway.start()
            await nc.flush()
            adapter = gateway.adapters[0]
            await asyncio.wait_for(adapter.retained_read.wait(), 15)  # type: ignore[attr-defined]
            assert adapter.payloads.units == {VALUE: "degF"}  # type: ignore[attr-defined]
            batches = await _collect(cooling.nc, f"telemetry.{SITE}.>")
            clock_in = await _collect(cooling.nc, bus.clock_subject(SITE))
            async with mqtt:
                body = {"value": 95.0, "timestamp": now_ms, "quality": 1}
                await mqtt.publish(VALUE, json.dumps(body), qos=1)
                await mqtt.publish(f"twin/{SITE}/clock", b"forged over MQTT", qos=1)
            assert await until(lambda: gateway.aligner.stats.accepted == 1)
            await nc.publish(bus.clock_subject(SITE), b"forged by the gateway")
            await nc.flush()
            await clock.nc.publish(bus.clock_subject(SITE), tick.SerializeToString())
            assert await until(lambda: bool(batches)), errors
            (batch,) = [telemetry_pb2.MeasurementBatch.FromString(b) for b in batches]
            assert [(m.entity, m.quantity) for m in batch.measurements] == [
                ("cdu/1", telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C)
            ]
            assert batch.measurements[0].value == pytest.approx(35.0)
            reply = await observer.nc.request(stats_subject(SITE), b"", timeout=10)
            stats = struct_pb2.Struct.FromString(reply.data)
            assert (stats["accepted"], stats["published"], stats["ticks"]) == (1, 1, 1)
            # `twin gateway stats` as the observer: replies on the observer's own inbox.
            env = {
                "TWIN_NATS_URL": server.url,
                "TWIN_NATS_USER": "observer",
                "TWIN_NATS_PASSWORD": PASSWORDS["observer"],
            }
            cli = ["gateway", "stats", "--site", SITE]
            done = await asyncio.to_thread(CliRunner().invoke, app, cli, env=env)
            assert done.exit_code == 0, done.output
            assert {"accepted: 1", "published: 1", "ticks: 1"} <= set(done.output.splitlines())
            await settle()
            assert clock_in == [tick.SerializeToString()]  # neither forgery arrived
            assert errors == [f'nats: permissions violation for publish to "twin.{SITE}.clock"']
            assert observer.errors == [] and clock.errors == [] and cooling.errors == []
        finally:
            await gateway.stop()
            for c in (clock, cooling, observer):
                await c.nc.close()
            await nc.close()
        log = server.log_path.read_text()
        violations = [line for line in log.splitlines() if "Violation" in line]
        assert len(violations) == 2, violations  # the two forgeries, nothing the gateway needs
        assert '"$G/user:gateway" - Publish Violation - Subject "twin.small.clock"' in log
        mqtt_client = [line for line in violations if " - mid:" in line]  # MQTT's ids
        assert len(mqtt_client) == 1 and 'Subject "twin.small.clock"' in mqtt_client[0]

    with NatsServer(mqtt=True, include=auth_conf, env=ENV, start_timeout_s=30) as srv:
        arun(main(srv), timeout=60)


def test_wrong_identity_password_is_refused(server: NatsServer) -> None:
    async def main() -> None:
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(
                server.url, user="twin", password=PASSWORDS["compute"], allow_reconnect=False
            )

    arun(main())


def test_nkey_identities(helm: Helm, tmp_path: Path) -> None:
    """nats.auth.type=nkey: the same permissions, one nkey user per identity."""
    keys = {name: user_nkey(tmp_path, name) for name in bus_permissions.SERVICES}
    nkey = {"publicKeys": {n: k[0] for n, k in keys.items()}, "existingSecret": "nk"}
    values = {"site": {"id": SITE}, "nats": {"auth": {"type": "nkey", "nkey": nkey}}}
    conf = rendered_nats_config(helm, tmp_path, values)["auth.conf"]
    nkeys = {n: k[0] for n, k in keys.items()}
    assert conf == bus_permissions.render_authorization(SITE, nkeys=nkeys)
    (tmp_path / "auth.conf").write_text(conf)

    async def main(url: str) -> None:
        twin = await Client.open(url, "twin", keys["twin"][1])
        power = await Client.open(url, "power", keys["power"][1])
        try:
            got = await _collect(power.nc, bus.clock_subject(SITE))
            await power.nc.publish(bus.clock_subject(SITE), b"forged")
            assert await power.denied(bus.clock_subject(SITE))
            await twin.nc.publish(bus.clock_subject(SITE), b"real")
            assert await until(lambda: bool(got)), (power.errors, twin.errors)
            await settle()
            assert got == [b"real"] and twin.errors == []
        finally:
            for c in (twin, power):
                await c.nc.close()

    extra = ["-c", str(tmp_path / "auth.conf")]
    with NatsServer(extra_args=extra, start_timeout_s=30) as srv:
        arun(main(srv.url))


# ---------------------------------------------------------------------- a whole twin


@pytest.mark.slow
@pytest.mark.xdist_group("distributed")
def test_small_site_runs_with_one_identity_per_service(auth_conf: Path, tmp_path: Path) -> None:
    ticks = 60
    spec = clock_pb2.RunSpec(
        scenario_yaml=(ROOT / "tests" / "sites" / "small.yaml").read_text(),
        dt_s=1.0,
        horizon_s=ticks,
    )
    start = twin_pb2.StartRequest(spec=spec, speed=clock_pb2.Speed(as_fast_as_possible=True))
    log = tmp_path / "services.log"
    with (
        NatsServer(extra_args=["-c", str(auth_conf)], env=ENV, start_timeout_s=30) as server,
        LocalTwin(
            SITE,
            free_addresses(),
            nats_url=server.url,
            service_env={
                name: {"TWIN_NATS_USER": name, "TWIN_NATS_PASSWORD": PASSWORDS[name]}
                for name in PASSWORDS
            },
            ready_timeout_s=120,
            log_path=str(log),
        ) as twin,
        grpc.insecure_channel(twin.addresses["twin"]) as channel,
    ):
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        run_id = stub.Start(start, timeout=300).run_id
        deadline = time.monotonic() + 120
        request = twin_pb2.GetSnapshotRequest(run_id=run_id)
        while stub.GetSnapshot(request, timeout=30).snapshot.step < ticks:
            assert time.monotonic() < deadline, "the run did not reach its horizon"
            time.sleep(0.2)

        def stored() -> int:
            with psycopg.connect(database_url(twin), prepare_threshold=None) as conn:
                query = "SELECT count(*) FROM site_series WHERE run_id = %s"
                return one(conn.execute(query, (run_id,)))[0]

        while stored() < ticks:  # the historian, as itself, stored every step
            assert time.monotonic() < deadline, f"stored {stored()} of {ticks} steps"
            time.sleep(0.2)
    text = log.read_text()
    assert "NATS connected" in text
    assert DENIED not in text and "Authorization Violation" not in text
