"""The co-simulation node of one domain on the bus.

Protocol (one site, one run at a time):
- the clock publishes ``START`` (run id + scenario) on ``twin.<site>.clock``; each node
  builds its ``DomainModel`` and publishes its initial state as step -1 (its "ready");
- for ``TICK k`` a node waits until every peer it reads has published step ``k - 1``,
  advances one coupling interval and publishes step ``k`` on ``twin.<site>.<domain>.state``;
- the clock sends ``TICK k + 1`` once all four domains have published step ``k``.
Garbled or foreign messages are logged, counted and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from google.protobuf.message import Message
from nats.aio.client import Client as NATS

from services.domain import NEEDS, DomainModel
from services.messages import STATE_TYPES, parts_of, sources_of, state_message
from services.runtime import bus
from services.runtime.codec import DecodeStats, decode_msg
from services.scenario import site_from_spec
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2
from twin_core.pytree import replace

log = logging.getLogger(__name__)
PEER_TIMEOUT_S = 30.0
# Live mode: measured quantity -> (published boundary field, entity prefix, index shape).
MEASURED = {
    "compute": {
        telemetry_pb2.QUANTITY_RACK_POWER_W: (
            "rack_ac_w",
            "rack",
            lambda m: tuple(np.shape(m.initial.rack_ac_w)),
        ),
    },
    "cooling": {
        telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C: (
            "tcs_supply_c",
            "cdu",
            lambda m: (int(np.sum(np.asarray(m.params.cooling.cdu_mask))),),
        ),
    },
}


def _entity_index(entity: str, prefix: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """``rack/3/17`` -> (3, 17) within ``shape``; None when malformed or out of range."""
    head, *rest = entity.split("/")
    if head != prefix or len(rest) != len(shape) or not all(r.isdigit() for r in rest):
        return None
    index = tuple(int(r) for r in rest)
    return index if all(i < n for i, n in zip(index, shape, strict=True)) else None


class CoSimNode:
    def __init__(self, nc: NATS, site_id: str, domain: str, dtype: Any = jnp.float32) -> None:
        self.nc, self.site_id, self.domain, self.dtype = nc, site_id, domain, dtype
        self.model: DomainModel | None = None
        self.run_id = ""
        self.latest: Message | None = None
        self.stats = DecodeStats()
        self._peers: dict[int, dict[str, dict[str, np.ndarray]]] = defaultdict(dict)
        self._arrived = asyncio.Condition()
        self._ticks: asyncio.Queue[clock_pb2.Clock] = asyncio.Queue()
        self._pending: list[Callable[[DomainModel], None]] = []
        # Live mode: measurements replace modelled values at the next tick.
        self._measured: dict[tuple[str, tuple[int, ...]], float] = {}

    async def start(self) -> None:
        await self.nc.subscribe(bus.clock_subject(self.site_id), cb=self._on_clock)
        for peer in NEEDS[self.domain]:
            subject = bus.state_subject(self.site_id, peer)
            await self.nc.subscribe(subject, cb=self._peer_handler(peer))
        if self.domain in MEASURED:
            subject = bus.telemetry_subject(self.site_id)
            await self.nc.subscribe(subject, cb=self._on_telemetry)

    async def run(self) -> None:
        """Process clock messages in order (a background task of the service)."""
        while True:
            clock = await self._ticks.get()
            if clock.command == clock_pb2.CLOCK_COMMAND_START:
                await self._start_run(clock)
            elif clock.command == clock_pb2.CLOCK_COMMAND_TICK and clock.run_id == self.run_id:
                await self._tick(clock.step)

    def command(self, action: Callable[[DomainModel], None]) -> int:
        """Queue a live command for the next interval; returns that interval's index."""
        self._pending.append(action)
        return self.model.step if self.model else 0

    # ------------------------------------------------------------------ bus handlers

    async def _on_clock(self, msg) -> None:
        clock = decode_msg(clock_pb2.Clock, msg, stats=self.stats)
        if clock is not None:
            await self._ticks.put(clock)

    async def _on_telemetry(self, msg) -> None:
        batch = decode_msg(telemetry_pb2.MeasurementBatch, msg, stats=self.stats)
        if batch is None or self.model is None:
            return
        for m in batch.measurements:
            target = MEASURED[self.domain].get(m.quantity)
            if target is None:
                continue
            field, prefix, shape = target
            index = _entity_index(m.entity, prefix, shape(self.model))
            if index is None:
                self.stats.record("Measurement.entity")
                log.warning("unknown entity", extra={"entity": m.entity, "domain": self.domain})
                continue
            self._measured[(field, index)] = m.value

    def _peer_handler(self, peer: str):
        message_type = STATE_TYPES[peer]

        async def handle(msg) -> None:
            state = decode_msg(message_type, msg, stats=self.stats)
            if state is None or state.run_id != self.run_id:
                return
            async with self._arrived:
                self._peers[state.step][peer] = parts_of(peer, state)
                self._arrived.notify_all()

        return handle

    # ------------------------------------------------------------------ stepping

    async def _start_run(self, clock: clock_pb2.Clock) -> None:
        site = site_from_spec(clock.spec)
        dt = clock.spec.dt_s or 1.0
        loop = asyncio.get_running_loop()
        # Building params and compiling the step takes seconds: keep the loop responsive.
        model = await loop.run_in_executor(None, self._build, site, dt)
        async with self._arrived:
            self.model, self.run_id = model, clock.run_id
            self._peers.clear()
            self._pending.clear()
        await self._publish(-1, model.initial_outputs(), model.initial_parts(), model.drivers(0))
        log.info("run started", extra={"domain": self.domain, "run_id": self.run_id})

    def _build(self, site, dt: float) -> DomainModel:
        model = DomainModel(site, self.domain, dt=dt, dtype=self.dtype)
        model.warm_up()
        return model

    async def _tick(self, step: int) -> None:
        model = self.model
        if model is None or step != model.step:
            log.warning("tick out of order", extra={"domain": self.domain, "step": step})
            return
        if step > 0:
            async with self._arrived:
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: self._ready(step - 1)), PEER_TIMEOUT_S
                )
        for action in self._pending:
            action(model)
        self._pending.clear()
        outputs, parts = model.advance(self._peers.get(step - 1, {}))
        if self._measured:
            parts = self._assimilate(model, parts)
        self._peers.pop(step - 2, None)
        await self._publish(step, outputs, parts, model.drivers(step))

    def _assimilate(self, model: DomainModel, parts: dict[str, np.ndarray]):
        """Replace modelled values by the measurements received since the last tick: in
        what peers read and, for state variables, in the model's state."""
        parts = {k: np.array(v) for k, v in parts.items()}
        for (field, index), value in self._measured.items():
            parts[field][index] = value
        if "tcs_supply_c" in parts:
            model.state = replace(
                model.state, tcs_supply_c=jnp.asarray(parts["tcs_supply_c"], model.dtype)
            )
        self._measured.clear()
        return parts

    def _ready(self, step: int) -> bool:
        return all(peer in self._peers.get(step, {}) for peer in NEEDS[self.domain])

    async def _publish(self, step: int, outputs, parts, drivers) -> None:
        time_s = (step + 1) * self.model.dt if self.model else 0.0
        message = state_message(
            self.domain, self.run_id, step, time_s, sources_of(outputs, parts, drivers)
        )
        self.latest = message
        await bus.publish(self.nc, bus.state_subject(self.site_id, self.domain), message)
