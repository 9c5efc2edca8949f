"""The bus: NATS connection, subject names, and idempotent JetStream declarations.

Subjects (DESIGN.md, "The bus"):
  twin.<site>.<domain>.state   outputs of a domain at each coupling interval
  twin.<site>.clock            ticks and run control
  twin.<site>.<domain>.cmd     request/reply: setpoints, failures
  twin.<site>.events           alarms, run start/stop
  telemetry.<site>.>           measurements from a real site (live mode)

Every service declares what it uses at start-up; declaring is create-or-update, so the
order in which services start does not matter and a restart never duplicates anything.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from services.runtime.codec import encode
from services.runtime.config import SITE_RE
from services.runtime.redact import redact

log = logging.getLogger(__name__)

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
HISTORIAN_DURABLE = "historian"
MEASUREMENTS_DURABLE = "historian-measurements"  # the historian's telemetry consumer

# JetStream API error: "stream name already in use with a different configuration".
_ERR_STREAM_CONFIG_DIFFERS = 10058
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")

Hook = Callable[[], Awaitable[None]]

# ----------------------------------------------------------------------------- subjects


def _token(kind: str, value: str) -> str:
    # A dot, space or wildcard in a token would silently widen or split a subject.
    if not _TOKEN_RE.match(value):
        raise ValueError(f"{kind} {value!r} is not a subject token (letters, digits, '-', '_')")
    return value


def _site(site: str) -> str:
    if not SITE_RE.match(site):
        raise ValueError(f"site {site!r} is not a site id")
    return site


def state_subject(site: str, domain: str) -> str:
    return f"twin.{_site(site)}.{_token('domain', domain)}.state"


def cmd_subject(site: str, domain: str) -> str:
    return f"twin.{_site(site)}.{_token('domain', domain)}.cmd"


def clock_subject(site: str) -> str:
    return f"twin.{_site(site)}.clock"


def events_subject(site: str) -> str:
    return f"twin.{_site(site)}.events"


def telemetry_subject(site: str, *tokens: str) -> str:
    """``telemetry.<site>.>`` (all of a site's telemetry), or a concrete subject below it."""
    tail = ".".join(_token("telemetry token", t) for t in tokens) if tokens else ">"
    return f"telemetry.{_site(site)}.{tail}"


def stream_name(site: str) -> str:
    return f"twin-{_site(site)}"


def config_bucket(site: str) -> str:
    return f"twin-{_site(site)}-config"


def run_bucket(site: str) -> str:
    """KV bucket of the run in progress: the START message and each domain's latest state
    snapshot, so a restarted service rejoins the run where it left it."""
    return f"twin-{_site(site)}-run"


def replay_subject(site: str, domain: str) -> str:
    """Request/reply: a domain answers with the state message it published for a step."""
    return f"twin.{_site(site)}.{_token('domain', domain)}.replay"


async def declare_run_bucket(js: JetStreamContext, site: str) -> KeyValue:
    try:
        return await js.create_key_value(
            bucket=run_bucket(site),
            description=f"run in progress at {site}",
            history=1,
            storage=api.StorageType.FILE,
        )
    except BadRequestError:  # exists (with other settings): use it as it is
        return await js.key_value(run_bucket(site))


def stream_subjects(site: str) -> list[str]:
    """What the history stream captures: state, clock, events and the site's telemetry
    (stored in ``measurements``); never ``.cmd``, because JetStream answers every captured
    message that has a reply subject with a publish ack, which would reach the requester
    before the real reply (telemetry is published without one)."""
    return [
        f"twin.{_site(site)}.*.state",
        clock_subject(site),
        events_subject(site),
        telemetry_subject(site),
    ]


# --------------------------------------------------------------------------- connection


class BusRefused(ConnectionError):
    """NATS refused the credentials or the TLS handshake: retrying would not help."""


def _refusal(exc: BaseException) -> bool:
    """A refusal that will not go away by retrying, as opposed to a server still starting."""
    return isinstance(exc, ssl.SSLError | nats.errors.AuthorizationError) or (
        "authorization violation" in str(exc).lower()  # nats-py raises a plain Error for it
    )


async def connect(
    servers: str | Sequence[str] = DEFAULT_NATS_URL,
    *,
    name: str = "twin",
    reconnect_wait_s: float = 1.0,
    max_reconnect_attempts: int = -1,
    connect_timeout_s: float = 2.0,
    connect_deadline_s: float = 30.0,
    on_disconnect: Hook | None = None,
    on_reconnect: Hook | None = None,
    **options: Any,
) -> NATS:
    """Connect with reconnection on (forever by default: a service outlives NATS restarts)
    and logged disconnect/reconnect/error/close events. ``on_disconnect``/``on_reconnect``
    let a service report NOT_SERVING while the bus is away; ``options`` go to nats-py's
    ``connect`` (credentials, ``tls``).

    The first connection retries too, for at most ``connect_deadline_s``: in a cluster the
    service often starts before NATS does. Raises TimeoutError after that, and BusRefused
    at once when the server refuses the credentials or the TLS handshake.
    """
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    nc = NATS()
    refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def disconnected() -> None:
        if nc.is_closed:  # our own close()/drain(): nc reports the disconnect too
            return
        log.warning("NATS disconnected", extra={"connection": name})
        if on_disconnect is not None:
            await on_disconnect()

    async def reconnected() -> None:
        log.info("NATS reconnected", extra={"connection": name, "url": _url(nc)})
        if on_reconnect is not None:
            await on_reconnect()

    async def error(exc: Exception) -> None:
        log.warning("NATS error", extra={"connection": name, "error": repr(exc)})
        if not nc.is_connected and _refusal(exc) and not refused.done():
            refused.set_result(exc)

    async def closed() -> None:
        log.info("NATS connection closed", extra={"connection": name})

    connecting = asyncio.ensure_future(
        nc.connect(
            servers=list(servers),
            name=name,
            allow_reconnect=True,
            reconnect_time_wait=reconnect_wait_s,  # type: ignore[arg-type]
            max_reconnect_attempts=max_reconnect_attempts,
            connect_timeout=connect_timeout_s,  # type: ignore[arg-type]
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            closed_cb=closed,
            **options,
        )
    )
    try:
        done, _ = await asyncio.wait(
            {connecting, refused}, timeout=connect_deadline_s, return_when=asyncio.FIRST_COMPLETED
        )
        if connecting in done and connecting.exception() is None:
            tls = "tls" in options
            log.info("NATS connected", extra={"connection": name, "url": _url(nc), "tls": tls})
            return nc
    except BaseException:
        await _abandon(nc, connecting)
        raise
    finally:
        refused.cancel()  # no-op once it has a result
    await _abandon(nc, connecting)
    where = redact(", ".join(servers))
    if refused.done() and not refused.cancelled():
        reason = refused.result()
        raise BusRefused(
            f"NATS at {where} refused the connection: {redact(str(reason))}"
        ) from reason
    failure = connecting.exception() if connecting in done else None
    if failure is not None and not isinstance(failure, nats.errors.NoServersError):
        raise failure
    raise TimeoutError(f"no NATS server reachable at {where} within {connect_deadline_s} s")


async def _abandon(nc: NATS, connecting: asyncio.Future[None]) -> None:
    connecting.cancel()
    with suppress(asyncio.CancelledError, Exception):
        await connecting
    with suppress(Exception):
        await nc.close()


def _url(nc: NATS) -> str:
    url = nc.connected_url
    return redact(url.geturl()) if url is not None else "?"


async def publish(nc: NATS, subject: str, message: Message) -> None:
    """Publish a protobuf message (core NATS: captured by the stream when it matches)."""
    await nc.publish(subject, encode(message))


# ---------------------------------------------------------------------------- JetStream


@dataclass(frozen=True)
class StreamLimits:
    """Limits of the history stream: it is a buffer for the historian, not the archive."""

    max_age_s: float = 24 * 3600.0
    max_bytes: int = 1 << 30
    max_msgs: int = -1
    max_msg_size: int = 8 << 20  # a per-GPU state message of a 200k-GPU site fits
    duplicate_window_s: float = 120.0
    replicas: int = 1
    storage: api.StorageType = api.StorageType.FILE


async def declare_stream(
    js: JetStreamContext, site: str, limits: StreamLimits = StreamLimits()
) -> api.StreamInfo:
    """Create the site's history stream, or update it to this configuration."""
    config = api.StreamConfig(
        name=stream_name(site),
        description=f"twin state, clock, events and telemetry of {site}",
        subjects=stream_subjects(site),
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        storage=limits.storage,
        max_age=limits.max_age_s,
        max_bytes=limits.max_bytes,
        max_msgs=limits.max_msgs,
        max_msg_size=limits.max_msg_size,
        duplicate_window=limits.duplicate_window_s,
        num_replicas=limits.replicas,
    )
    try:
        # Identical configuration: the server answers with the existing stream.
        return await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _ERR_STREAM_CONFIG_DIFFERS:
            raise
    log.info("updating stream configuration", extra={"stream": config.name})
    return await js.update_stream(config)


async def declare_consumer(
    js: JetStreamContext,
    site: str,
    durable: str = HISTORIAN_DURABLE,
    *,
    filter_subjects: Sequence[str] | None = None,
    ack_wait_s: float = 30.0,
    max_deliver: int = -1,
    max_ack_pending: int = 10_000,
) -> api.ConsumerInfo:
    """Create (or update) a durable pull consumer with explicit ack on the site stream.

    The server's consumer create is create-or-update for a durable, so this is idempotent.
    """
    config = api.ConsumerConfig(
        durable_name=_token("durable", durable),
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
        filter_subjects=list(filter_subjects) if filter_subjects else None,
    )
    return await js.add_consumer(stream_name(site), config)


async def declare_config_bucket(
    js: JetStreamContext, site: str, *, history: int = 16, replicas: int = 1
) -> KeyValue:
    """The KV bucket of the live configuration (setpoints, failures in force)."""
    bucket = config_bucket(site)
    try:
        return await js.create_key_value(
            bucket=bucket,
            description=f"live configuration of {site}",
            history=history,
            replicas=replicas,
            storage=api.StorageType.FILE,
        )
    except BadRequestError as exc:
        if exc.err_code != _ERR_STREAM_CONFIG_DIFFERS:
            raise
    # Exists with other settings: update only what we own, keep the rest as created.
    info = await js.stream_info(f"KV_{bucket}")
    await js.update_stream(info.config.evolve(max_msgs_per_subject=history))
    log.info("updated KV bucket configuration", extra={"bucket": bucket})
    return await js.key_value(bucket)


@dataclass(frozen=True)
class Declared:
    stream: api.StreamInfo
    consumer: api.ConsumerInfo | None
    config: KeyValue


async def declare_all(
    js: JetStreamContext,
    site: str,
    *,
    durable: str | None = None,
    limits: StreamLimits = StreamLimits(),
) -> Declared:
    """Stream, optional durable consumer, and config bucket of a site."""
    stream = await declare_stream(js, site, limits)
    consumer = await declare_consumer(js, site, durable) if durable else None
    kv = await declare_config_bucket(js, site)
    return Declared(stream, consumer, kv)


async def pull_subscription(
    js: JetStreamContext, site: str, durable: str = HISTORIAN_DURABLE
) -> JetStreamContext.PullSubscription:
    """Bind to an existing durable (declare it first): binding never changes its config."""
    return await js.pull_subscribe_bind(durable=durable, stream=stream_name(site))


async def fetch(
    sub: JetStreamContext.PullSubscription, batch: int = 256, timeout_s: float = 1.0
) -> list[Msg]:
    """Up to ``batch`` messages, waiting at most ``timeout_s``; ``[]`` when none arrived.

    nats-py signals "nothing yet" with nats.errors.TimeoutError (FetchTimeoutError) or, on
    some paths, a bare asyncio.TimeoutError; both are the builtin TimeoutError on 3.11+. In
    a consume loop that is the idle case, not a failure.
    """
    try:
        return await sub.fetch(batch, timeout=timeout_s)
    except TimeoutError:
        return []


def pending_after(msgs: Sequence[Msg]) -> int:
    """The consumer's messages not delivered yet after the last of ``msgs`` (JetStream's
    ``num_pending``, read from the ack subject: no round trip); 0 for no messages."""
    if not msgs:
        return 0
    with suppress(Exception):  # not a JetStream message
        return msgs[-1].metadata.num_pending
    return 0


def stream_time_s(msgs: Iterable[Msg]) -> float | None:
    """The newest stream timestamp (s since 1970) of ``msgs``; None when none has one."""
    newest = None
    for msg in msgs:
        with suppress(Exception):
            t = msg.metadata.timestamp.timestamp()
            newest = t if newest is None else max(newest, t)
    return newest
