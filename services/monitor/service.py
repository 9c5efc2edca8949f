"""The residual monitor on the bus, in the twin process beside the clock: it reads the
site's telemetry and the compute and cooling states of the clock's run, and publishes
each deviation raised or cleared on ``twin.<site>.events`` (header ``Twin-Message``
names the type; ``Nats-Msg-Id`` is the event id, so JetStream drops a duplicate). The
clock's snapshots carry the open ones (``SiteSnapshot.deviations``).

A garbled message is counted and skipped (``stats``); nothing a message holds stops the
monitor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client as NATS

from services.messages import state_problem, unpack
from services.monitor.cause import RACK_POWER, RETURN, SUPPLY
from services.monitor.residuals import MonitorConfig, ResidualMonitor
from services.monitor.wire import deviation_headers
from services.runtime import bus
from services.runtime.codec import DecodeStats, decode_msg, reject
from twin.compute.v1 import compute_pb2
from twin.cooling.v1 import cooling_pb2
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import deviation_pb2

log = logging.getLogger(__name__)


def _index(entity: str) -> list[int]:
    return [int(p) for p in entity.split("/")[1:]]


def cooling_lookup(state: cooling_pb2.CoolingState):
    supply, ret = list(state.tcs_supply_model_c), list(state.tcs_return_model_c)

    def lookup(entity: str, quantity: int) -> float | None:
        values = supply if quantity == SUPPLY else ret if quantity == RETURN else []
        (i,) = _index(entity)
        return values[i] if i < len(values) else None

    return lookup


def compute_lookup(state: compute_pb2.ComputeState):
    # Unset when no reading replaced any rack's power: rack_ac_w is then the model's own.
    model = state.HasField("rack_ac_model_w")
    power = unpack(state.rack_ac_model_w if model else state.rack_ac_w)

    def lookup(entity: str, quantity: int) -> float | None:
        slot, cdu = _index(entity)
        if quantity != RACK_POWER or power.ndim != 2:
            return None
        inside = slot < power.shape[0] and cdu < power.shape[1]
        return float(power[slot, cdu]) if inside else None

    return lookup


class MonitorNode:
    """``run_id()``: the clock's run; states of any other run are not the twin's now."""

    def __init__(
        self,
        nc: NATS,
        site_id: str,
        run_id: Callable[[], str],
        config: MonitorConfig | None = None,
    ) -> None:
        self.nc, self.site_id, self._run_id = nc, site_id, run_id
        self.monitor = ResidualMonitor(site_id, config)
        self.stats = DecodeStats()
        self.published = 0

    async def start(self) -> None:
        subscriptions = (
            (bus.telemetry_subject(self.site_id), self._on_telemetry),
            (
                bus.state_subject(self.site_id, "cooling"),
                self._state_handler("cooling", cooling_pb2.CoolingState, cooling_lookup),
            ),
            (
                bus.state_subject(self.site_id, "compute"),
                self._state_handler("compute", compute_pb2.ComputeState, compute_lookup),
            ),
        )
        for subject, handler in subscriptions:
            await self.nc.subscribe(subject, cb=self._guarded(handler))

    def _guarded(self, handler):
        async def guarded(msg) -> None:
            try:
                await handler(msg)
            except Exception as exc:  # counted and logged; never the subscription's end
                reject(self.stats, "handler.failed", msg.subject, repr(exc)[:200])

        return guarded

    def _follow_run(self) -> bool:
        """Whether a run is on; a new run starts the monitor afresh."""
        run_id = self._run_id()
        if run_id != self.monitor.run_id:
            self.monitor.start_run(run_id)
        return bool(run_id)

    async def _on_telemetry(self, msg) -> None:
        batch = decode_msg(telemetry_pb2.MeasurementBatch, msg, stats=self.stats)
        if batch is None or not self._follow_run():
            return
        for m in batch.measurements:
            self.monitor.offer(m.entity, m.quantity, m.value, m.time_s)

    def _state_handler(self, domain: str, message_type, lookup):
        async def handle(msg) -> None:
            # Decoded and checked only while a reading waits for this domain's model values
            # (a whole rack array each tick for compute; the clock in this process checks
            # every state message anyway).
            if not (self._follow_run() and self.monitor.waiting(domain)):
                return
            state = decode_msg(message_type, msg, stats=self.stats)
            if state is None or state.run_id != self.monitor.run_id or state.step < 0:
                return
            problem = state_problem(state)
            if problem is not None:
                reject(self.stats, f"{type(state).__name__}.invalid", domain, problem)
                return
            events = self.monitor.on_model(domain, lookup(state), state.step, state.time_s)
            for event in events:
                await self.publish(event)

        return handle

    async def publish(self, event: deviation_pb2.Deviation) -> None:
        subject = bus.events_subject(self.site_id)
        try:
            data = event.SerializeToString(deterministic=True)
            await self.nc.publish(subject, data, headers=deviation_headers(event))
            self.published += 1
        except Exception as exc:  # NATS away: the deviation stays open in the snapshot
            log.warning("deviation not published", extra={"error": repr(exc)[:200]})
        log.info(
            "deviation",
            extra={
                "event_id": event.event_id,
                "cause": deviation_pb2.DeviationCause.Name(event.cause),
                "departure": event.departure,
            },
        )
