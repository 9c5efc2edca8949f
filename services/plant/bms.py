"""The plant's BMS: an MQTT 3.1.1 client (aiomqtt) publishing BMS Event Bus points, as
services/gateway/adapters/bms.py reads them:

    BMS/v1/PUB/Value/CDU/LiquidTemperature/<hall>/cdu<i>/supply    TCS supply, degC
    BMS/v1/PUB/Value/CDU/LiquidTemperature/<hall>/cdu<i>/return    TCS return, degC
    BMS/v1/PUB/Value/Weather/AirTemperature/site/outdoor           outdoor dry bulb, degC

Values ``{"value", "timestamp" (epoch ms of the step), "quality": 1}`` after every plant
step; a dropped reading is simply not published. Each point's retained Metadata
(``engUnit: degreesCelsius``) is published once at connect. ``<i>`` is the CDU's index in
the site (the twin's ``cdu/<i>``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time

import aiomqtt

from services.plant.snapshot import Board, Snapshot

log = logging.getLogger(__name__)
PREFIX = "BMS/v1/PUB"


def _level(name: str) -> str:
    """A name usable as one topic level (no /, + or #)."""
    return re.sub(r"[/+#\s]", "_", name) or "_"


def points(board: Board) -> list[tuple[str, str, int]]:
    """(tag path after Value/, signal, element) of every BMS point."""
    out = []
    for i, hall in enumerate(board.layout.hall_of_cdu):
        for end, signal in (("supply", "cdu_supply_c"), ("return", "cdu_return_c")):
            out.append((f"CDU/LiquidTemperature/{_level(hall)}/cdu{i}/{end}", signal, i))
    out.append(("Weather/AirTemperature/site/outdoor", "ambient_c", 0))
    return out


def messages(board: Board, snap: Snapshot) -> list[tuple[str, bytes]]:
    """The Value messages of one step (dropped readings left out)."""
    stamp = int(snap.wall_s * 1000)
    out = []
    for tag, signal, i in points(board):
        value = float(snap.measured[signal][i])
        if not math.isnan(value):
            body = {"value": round(value, 4), "timestamp": stamp, "quality": 1}
            out.append((f"{PREFIX}/Value/{tag}", json.dumps(body).encode()))
    return out


class BmsPublisher:
    """Publishes each step's values; a lost broker is logged and reconnected (at most
    every ``RETRY_S``) while the plant runs on, as a BMS gateway does."""

    RETRY_S = 5.0

    def __init__(self, board: Board, host: str, port: int, username: str | None = None,
                 password: str | None = None) -> None:  # fmt: skip
        self.board = board
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.client: aiomqtt.Client | None = None
        self.published = 0
        self._next_try = 0.0

    async def connect(self) -> None:
        client = aiomqtt.Client(
            self.host, self.port, username=self.username, password=self.password,
            protocol=aiomqtt.ProtocolVersion.V311, timeout=10,
        )  # fmt: skip
        await client.__aenter__()
        self.client = client
        for tag, _, _ in points(self.board):
            meta = {"engUnit": "degreesCelsius", "objectType": tag.split("/")[0],
                    "pointType": tag.split("/")[1]}  # fmt: skip
            await client.publish(
                f"{PREFIX}/Metadata/{tag}", json.dumps(meta).encode(), qos=1, retain=True
            )

    async def publish(self, snap: Snapshot) -> None:
        try:
            if self.client is None:
                if time.monotonic() < self._next_try:
                    return
                self._next_try = time.monotonic() + self.RETRY_S
                await self.connect()
            assert self.client is not None
            for topic, body in messages(self.board, snap):
                await self.client.publish(topic, body, qos=1)
                self.published += 1
        except aiomqtt.MqttError as exc:
            log.warning("MQTT broker lost; retrying", extra={"error": str(exc)})
            await self.close()

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
