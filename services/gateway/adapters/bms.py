"""BMS points over MQTT, following NVIDIA DSX Exchange "BMS Event Bus 1.0.0":

- Value topic ``BMS/v1/PUB/Value/{objectType}/{pointType}/{tagPath}``, JSON
  ``{"value": number|null, "timestamp": <epoch ms, source event time>, "quality": int}``
  where quality 1 is good and any other integer is not trustworthy;
- retained Metadata topic ``BMS/v1/PUB/Metadata/{objectType}/{pointType}/{tagPath}``,
  JSON whose ``engUnit`` is the point's engineering unit (state points carry
  ``stateText`` instead); values are interpreted in that unit once it is known.

Point id: the Value topic (with ``/``), the same over both transports. ``nats``: the
twin's own bus, where nats-server's MQTT listener puts what BMS clients publish (MQTT
``a/b/c`` = NATS ``a.b.c``); a NATS subscriber does not get retained messages, so at
start the adapter reads them from the server's retained-message stream (``$MQTT_rmsgs``,
subjects ``$MQTT.rmsgs.<subject>``, the MQTT topic in header ``Nmqtt-RTopic``), then
follows the live republishes. ``mqtt``: an external broker (TLS, username/password),
which sends the retained metadata on subscribe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Iterable
from typing import Any

import orjson
from nats.aio.client import Client as NATS

from services.gateway.pointmap import BmsSource
from services.gateway.reading import Emit, Reading

log = logging.getLogger(__name__)
RETAINED_STREAM = "$MQTT_rmsgs"  # nats-server's store of retained MQTT messages
TOPIC_CACHE = 200_000  # NATS subject -> MQTT topic, cached (a site's points, with room)

# BMS (BACnet-style) engineering unit names -> the gateway's unit table.
ENG_UNITS = {
    "degreesCelsius": "degC", "degreesFahrenheit": "degF", "degreesKelvin": "K",
    "kelvins": "K", "watts": "W", "kilowatts": "kW", "megawatts": "MW", "percent": "%",
    "litersPerSecond": "L/s", "litersPerMinute": "L/min", "usGallonsPerMinute": "gpm",
    "cubicMetersPerSecond": "m3/s", "cubicMetersPerHour": "m3/h",
}  # fmt: skip


class BmsPayloads:
    """Value/Metadata decoding shared by both transports."""

    def __init__(self, name: str, prefix: str) -> None:
        self.name = name
        self.value_prefix = f"{prefix}/Value/"
        self.meta_prefix = f"{prefix}/Metadata/"
        self.units: dict[str, str] = {}  # value topic -> unit (from metadata)

    def on_message(self, topic: str, payload: bytes, emit: Emit, *, retained: bool = False) -> None:
        if topic.startswith(self.meta_prefix):
            value_topic = self.value_prefix + topic[len(self.meta_prefix) :]
            if not (retained and value_topic in self.units):  # a live one is newer
                self._metadata(value_topic, payload)
        elif topic.startswith(self.value_prefix) and not retained:
            emit(self._value(topic, payload))

    def on_messages(self, messages: Iterable[tuple[str, bytes]], emit: Emit) -> None:
        """``on_message`` of each (topic, payload), in order."""
        on_message = self.on_message
        for topic, payload in messages:
            on_message(topic, payload, emit)

    def _metadata(self, value_topic: str, payload: bytes) -> None:
        try:
            doc = _loads(payload)
        except (ValueError, UnicodeDecodeError):
            log.warning("BMS metadata is not JSON", extra={"topic": value_topic})
            return
        unit = doc.get("engUnit") if isinstance(doc, dict) else None
        if isinstance(unit, str) and unit:
            self.units[value_topic] = ENG_UNITS.get(unit, unit)

    def _value(self, topic: str, payload: bytes) -> Reading:
        try:
            doc: Any = _loads(payload)
            value, stamp, quality = doc["value"], doc["timestamp"], doc["quality"]
            ok = (value is None or _number(value)) and _number(stamp) and isinstance(quality, int)
        except (ValueError, UnicodeDecodeError, TypeError, KeyError):
            ok = False
        if not ok:
            return Reading(self.name, topic, None, time.time(), good=False, problem="malformed")
        return Reading(
            self.name,
            topic,
            None if value is None else float(value),
            stamp / 1000.0,
            good=quality == 1,
            unit=self.units.get(topic),
        )


def _loads(payload: bytes) -> Any:
    """JSON: orjson (~10x faster than json), or json for what only json reads (``NaN``,
    ``Infinity``, integers beyond 64 bits), which the checks then judge as before."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def subject_to_topic(subject: str) -> str:
    """nats-server's MQTT mapping undone: levels are tokens, and a ``.`` inside a level
    travels as ``//`` (MQTT ``hall.a/cdu0`` is NATS ``hall//a.cdu0``)."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))


class BmsNatsAdapter:
    def __init__(self, name: str, cfg: BmsSource, nc: NATS) -> None:
        self.name, self.cfg, self.nc = name, cfg, nc
        self.payloads = BmsPayloads(name, cfg.prefix)
        self.retained_read = asyncio.Event()  # set once the retained metadata was read

    async def run(self, emit: Emit) -> None:
        base = self.cfg.prefix.replace("/", ".")
        loop = asyncio.get_running_loop()
        pending: list[tuple[str, bytes]] = []
        topics: dict[str, str] = {}  # subject -> topic: a site has a fixed set of points

        def drain() -> None:
            """Every message that arrived since the last drain, decoded in one go: the
            NATS callbacks only queue (one BMS message per point, ~10^3 a second)."""
            batch = pending.copy()
            pending.clear()
            for i, (subject, data) in enumerate(batch):
                if (topic := topics.get(subject)) is None:
                    topic = subject_to_topic(subject)
                    if len(topics) < TOPIC_CACHE:  # made-up subjects must not fill memory
                        topics[subject] = topic
                batch[i] = (topic, data)
            self.payloads.on_messages(batch, emit)

        async def on_msg(msg) -> None:
            if not pending:
                loop.call_soon(drain)
            pending.append((msg.subject, msg.data))

        subs = [
            await self.nc.subscribe(f"{base}.Metadata.>", cb=on_msg),
            await self.nc.subscribe(f"{base}.Value.>", cb=on_msg),
        ]
        await self._retained_metadata(f"$MQTT.rmsgs.{base}.Metadata.>", emit)
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            for sub in subs:
                await sub.unsubscribe()

    async def _retained_metadata(self, subject: str, emit: Emit) -> None:
        """The retained Metadata messages nats-server keeps for MQTT subscribers."""
        from nats.js.api import DeliverPolicy

        try:
            # The stream named: no stream lookup ($JS.API.STREAM.NAMES), which the
            # gateway's NATS identity is not allowed (services/bus_permissions.py).
            sub = await self.nc.jetstream().subscribe(
                subject,
                stream=RETAINED_STREAM,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            )
        except Exception as exc:  # no MQTT listener (stream absent), or not permitted
            log.warning("no retained BMS metadata", extra={"error": repr(exc)})
            return
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except TimeoutError:
                    break
                topic = (msg.headers or {}).get("Nmqtt-RTopic") or subject_to_topic(
                    msg.subject.removeprefix("$MQTT.rmsgs.")
                )
                self.payloads.on_message(topic, msg.data, emit, retained=True)
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        self.retained_read.set()


class BmsMqttAdapter:
    """An external MQTT 3.1.1 broker; reconnects with backoff (1 s doubling to 30 s)."""

    def __init__(self, name: str, cfg: BmsSource) -> None:
        self.name, self.cfg = name, cfg
        self.payloads = BmsPayloads(name, cfg.prefix)
        self.connected = asyncio.Event()

    def _tls(self) -> ssl.SSLContext | None:
        if not self.cfg.tls:
            return None
        return ssl.create_default_context(cafile=self.cfg.ca_file)

    async def run(self, emit: Emit) -> None:
        import aiomqtt

        password = os.environ.get(self.cfg.password_env) if self.cfg.password_env else None
        backoff = 1.0
        while True:
            try:
                async with aiomqtt.Client(
                    self.cfg.host,
                    self.cfg.port,
                    username=self.cfg.username,
                    password=password,
                    identifier=self.cfg.client_id or None,
                    tls_context=self._tls(),
                    protocol=aiomqtt.ProtocolVersion.V311,
                    timeout=10,
                ) as client:
                    # Metadata first: the broker sends the retained units before values.
                    await client.subscribe(f"{self.cfg.prefix}/Metadata/#", qos=0)
                    await client.subscribe(f"{self.cfg.prefix}/Value/#", qos=0)
                    self.connected.set()
                    backoff = 1.0
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = str(payload).encode()
                        self.payloads.on_message(message.topic.value, bytes(payload), emit)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning(
                    "MQTT broker unreachable; retrying",
                    extra={"source": self.name, "error": str(exc), "retry_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
