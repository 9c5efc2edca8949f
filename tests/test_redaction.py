"""No credential of a NATS or database URL in a log line, an error message or a repr:
connecting to a real nats-server with the password in the URL (accepted, refused,
unreachable), the config errors and reprs, and the formatter on library error text."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime import bus
from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.log import setup_logging
from services.runtime.nats_server import NatsServer
from services.runtime.redact import redact

SECRET = "s3cret-Pa55"


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """What the services' one-line handler writes, at DEBUG."""
    root = logging.getLogger()
    level, stream = root.level, io.StringIO()
    handler = setup_logging("DEBUG", stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    conf = tmp_path_factory.mktemp("redact") / "nats.conf"
    conf.write_text(f'authorization {{ user: svc, password: "{SECRET}" }}\n')
    with NatsServer(extra_args=["-c", str(conf)]) as srv:
        yield srv


def with_password(url: str, password: str = SECRET) -> str:
    return url.replace("nats://", f"nats://svc:{password}@")


def test_connected_url_is_redacted(server: NatsServer, logs: io.StringIO) -> None:
    async def main() -> None:
        nc = await bus.connect(with_password(server.url), name="redact", connect_deadline_s=5)
        await nc.close()

    asyncio.run(main())
    text = logs.getvalue()
    assert f"url=nats://svc:***@127.0.0.1:{server.port}" in text
    assert SECRET not in text


def test_refused_connection_message_is_redacted(server: NatsServer, logs: io.StringIO) -> None:
    url = with_password(server.url, "wrong-" + SECRET)

    async def main() -> None:
        with pytest.raises(bus.BusRefused) as info:
            await bus.connect(url, name="redact", connect_deadline_s=5)
        message = str(info.value)
        assert message.startswith(f"NATS at nats://svc:***@127.0.0.1:{server.port} refused")
        assert SECRET not in message

    asyncio.run(main())
    assert SECRET not in logs.getvalue()


def test_unreachable_message_is_redacted(tmp_path: Path, logs: io.StringIO) -> None:
    with NatsServer() as gone:
        url = with_password(gone.url)  # a port nothing listens on once it stopped

    async def main() -> None:
        with pytest.raises(TimeoutError) as info:
            await bus.connect(url, name="redact", connect_deadline_s=0.5)
        assert str(info.value) == (f"no NATS server reachable at {redact(url)} within 0.5 s")
        assert SECRET not in str(info.value)

    asyncio.run(main())
    assert SECRET not in logs.getvalue()


def test_config_error_and_repr_are_redacted() -> None:
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({"TWIN_NATS_URL": f"http://svc:{SECRET}@nats:4222"})
    assert str(info.value) == (
        "TWIN_NATS_URL: 'http://svc:***@nats:4222' is not a NATS URL (e.g. nats://127.0.0.1:4222)"
    )
    config = RuntimeConfig.from_env({"TWIN_NATS_URL": f"nats://svc:{SECRET}@nats:4222"})
    assert "nats_url='nats://svc:***@nats:4222'" in repr(config)
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert config.nats_servers == [f"nats://svc:{SECRET}@nats:4222"]  # used as given


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "nats://svc:pw@a:4222,nats://svc:pw@b:4222",
            "nats://svc:***@a:4222,nats://svc:***@b:4222",
        ),
        ("tls://tok3n@a:4222", "tls://***@a:4222"),
        ("postgresql://twin:pw%40x@db:5432/twin", "postgresql://twin:***@db:5432/twin"),
        (
            "host=db user=twin password='p w' dbname=twin",
            "host=db user=twin password=*** dbname=twin",
        ),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("user@example.org wrote", "user@example.org wrote"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_every_log_line_is_redacted(logs: io.StringIO) -> None:
    """Whatever a library puts in a message, an extra field or a traceback."""
    log = logging.getLogger("twin.test")
    url = f"postgresql://twin:{SECRET}@db:5432/twin"
    log.warning("connect failed to %s", url, extra={"dsn": f"password={SECRET} host=db"})
    try:
        raise ConnectionError(f"cannot reach nats://svc:{SECRET}@nats:4222")
    except ConnectionError:
        log.exception("bus down")
    text = logs.getvalue()
    assert SECRET not in text
    assert "postgresql://twin:***@db:5432/twin" in text and "nats://svc:***@nats:4222" in text
