"""The co-simulation node of one domain on the bus.

Protocol (one site, one run at a time):
- the clock publishes ``START`` (run id + scenario) on ``twin.<site>.clock``; each node
  builds its ``DomainModel`` and publishes its initial state as step -1 (its "ready");
- for ``TICK k`` a node waits until every peer it reads has published step ``k - 1``,
  advances one coupling interval and publishes step ``k`` on ``twin.<site>.<domain>.state``;
- the clock sends ``TICK k + 1`` once all four domains have published step ``k``.

Live mode: measurements on ``telemetry.<site>.>`` replace modelled values at the next tick.
Restarts: every ``SNAPSHOT_EVERY`` steps a node stores its state in the run KV bucket; a
restarted node restores it, asks its peers to replay the states it missed
(``twin.<site>.<domain>.replay``), and catches up when the clock re-sends its tick.
Garbled, foreign or out-of-sequence messages are logged, counted (``self.stats``, by
reason) and skipped; no message ends ``run``: an invalid START keeps the current run, a
TICK more than ``HISTORY`` steps ahead of the model is refused (a restarted node catches
up at most that far), a state with a non-finite value or a wrong shape never reaches the
model, and a measurement is used only when finite and in its physical range.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from services.domain import NEEDS, DomainModel
from services.messages import (
    STATE_TYPES,
    StateMessage,
    parts_of,
    sources_of,
    state_message,
    state_problem,
)
from services.runtime import bus
from services.runtime.codec import DecodeStats, decode_msg, reject
from services.scenario import site_from_spec
from twin.common.v1 import common_pb2
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2
from twin_core.site import SiteError

log = logging.getLogger(__name__)
PEER_TIMEOUT_S = 30.0
HISTORY = 64  # published states kept for replays
SNAPSHOT_EVERY = 10  # coupling intervals between restart snapshots (< HISTORY)
# Live mode: measured quantity -> (published boundary field, entity prefix, index shape,
# physical range of a plausible reading).
MEASURED = {
    "compute": {
        telemetry_pb2.QUANTITY_RACK_POWER_W: (
            "rack_ac_w",
            "rack",
            lambda m: tuple(np.shape(m.initial.rack_ac_w)),
            (0.0, 2.0e6),  # W: an NVL72 rack draws ~130 kW; 2 MW is far beyond any rack
        ),
    },
    "cooling": {
        telemetry_pb2.QUANTITY_SUPPLY_TEMPERATURE_C: (
            "tcs_supply_c",
            "cdu",
            lambda m: (int(np.sum(np.asarray(m.params.cooling.cdu_mask))),),
            (0.0, 100.0),  # degrees C: liquid water at ambient pressure
        ),
    },
}


def _entity_index(entity: str, prefix: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """``rack/3/17`` -> (3, 17) within ``shape``; None when malformed or out of range
    (ASCII digits only: ``str.isdigit`` accepts '²', which ``int`` refuses)."""
    head, *rest = entity.split("/")
    ok = all(r.isascii() and r.isdigit() and len(r) <= 9 for r in rest)
    if head != prefix or len(rest) != len(shape) or not ok:
        return None
    index = tuple(int(r) for r in rest)
    return index if all(i < n for i, n in zip(index, shape, strict=True)) else None


class CoSimNode:
    def __init__(
        self, nc: NATS, site_id: str, domain: str, dtype: Any = jnp.float32, js=None
    ) -> None:
        self.nc, self.site_id, self.domain, self.dtype, self.js = nc, site_id, domain, dtype, js
        self._history: dict[int, bytes] = {}  # published state messages, for replays
        self.model: DomainModel | None = None
        self.run_id = ""
        self.latest: StateMessage | None = None
        self.stats = DecodeStats()
        self._peers: dict[int, dict[str, dict[str, np.ndarray]]] = defaultdict(dict)
        self._arrived = asyncio.Condition()
        self._ticks: asyncio.Queue[clock_pb2.Clock] = asyncio.Queue()
        self._pending: list[Callable[[DomainModel], None]] = []
        # Live mode: measurements replace modelled values at the next tick.
        self._measured: dict[tuple[str, tuple[int, ...]], float] = {}

    async def start(self) -> None:
        subscribe = self._subscribe
        await subscribe(bus.clock_subject(self.site_id), self._on_clock)
        for peer in NEEDS[self.domain]:
            await subscribe(bus.state_subject(self.site_id, peer), self._peer_handler(peer))
        if self.domain in MEASURED:
            await subscribe(bus.telemetry_subject(self.site_id), self._on_telemetry)
        await subscribe(bus.replay_subject(self.site_id, self.domain), self._on_replay)
        if self.js is not None:
            self.kv = await bus.declare_run_bucket(self.js, self.site_id)
            await self._rejoin()

    async def _subscribe(self, subject: str, handler) -> None:
        """Subscribe with a handler that no message can break: whatever it raises is
        counted and logged (nats-py would only pass it to the error callback)."""

        async def guarded(msg) -> None:
            try:
                await handler(msg)
            except Exception as exc:
                reject(self.stats, "handler.failed", msg.subject, repr(exc)[:200])

        await self.nc.subscribe(subject, cb=guarded)

    async def _rejoin(self) -> None:
        """After a restart: rebuild the run in progress and continue from this domain's
        last snapshot (or, with none of this run, from its initial state: killed before
        its first snapshot); the clock re-sends the tick it is waiting for."""
        try:
            run = await self._kv_value("run")
            if run is None:  # no run in progress
                return
            run_id, _, data = (await self._kv_value(self.domain) or b"").partition(b"\n")
            clock = clock_pb2.Clock.FromString(run)
            fresh = run_id.decode(errors="replace") != clock.run_id
            await self._start_run(clock, publish=fresh)
            if not fresh:
                self._restore(data)
        except Exception as exc:  # a damaged key, or the bus away: wait for the next START
            self._failed("rejoin.failed", exc)
            self.model, self.run_id = None, ""
            return
        assert self.model is not None  # set by _start_run
        log.info("rejoined run", extra={"domain": self.domain, "step": self.model.step})

    async def _kv_value(self, key: str) -> bytes | None:
        """The value of ``key`` in the run bucket; None when it is absent."""
        try:
            return (await self.kv.get(key)).value
        except NotFoundError:  # never written, or deleted at the end of a run
            return None

    def _failed(self, reason: str, exc: BaseException) -> None:
        """Count (``self.stats``, by reason) and log an operation that failed and was
        given up; the node goes on serving."""
        self.stats.record(reason)
        extra = {"domain": self.domain, "reason": reason, "error": repr(exc)[:200]}
        log.warning("operation given up", extra=extra)

    async def _on_replay(self, msg) -> None:
        tick = decode_msg(common_pb2.Tick, msg, stats=self.stats)
        if tick is not None and tick.run_id == self.run_id and msg.reply:
            await msg.respond(self._history.get(tick.step, b""))

    async def run(self) -> None:
        """Process clock messages in order (a background task of the service). Nothing a
        message holds ends this loop: a refused or failing message is counted and logged."""
        while True:
            clock = await self._ticks.get()
            try:
                await self._handle_clock(clock)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a hostile message: keep serving
                reject(
                    self.stats,
                    "Clock.failed",
                    bus.clock_subject(self.site_id),
                    repr(exc),
                    domain=self.domain,
                    command=clock.command,
                )

    async def _handle_clock(self, clock: clock_pb2.Clock) -> None:
        subject = bus.clock_subject(self.site_id)
        if clock.command == clock_pb2.CLOCK_COMMAND_START:
            if not clock.run_id:
                reject(self.stats, "Clock.start_invalid", subject, "run_id: empty")
                return
            if not await self._started_by_clock(clock.run_id):
                detail = f"run {clock.run_id[:40]!r} is not the clock's run in progress"
                reject(self.stats, "Clock.start_unknown_run", subject, detail)
                return
            try:
                site = site_from_spec(clock.spec)
            except SiteError as exc:  # the current run goes on
                reject(self.stats, "Clock.start_invalid", subject, str(exc), run_id=clock.run_id)
                return
            await self._start_run(clock, site=site)
        elif clock.command == clock_pb2.CLOCK_COMMAND_TICK:
            if clock.run_id != self.run_id or self.model is None:
                reject(self.stats, "Clock.foreign_run", subject, f"run {clock.run_id!r}")
                return
            ahead = clock.step - self.model.step
            if clock.step < 0 or ahead > HISTORY:
                detail = f"tick {clock.step} while at step {self.model.step}"
                reject(self.stats, "Clock.out_of_sequence", subject, detail)
                return
            await self._tick(clock.step)

    async def _started_by_clock(self, run_id: str) -> bool:
        """With JetStream: the clock writes each run's START to the run key before it
        publishes it, so a START whose run is not that key's did not come from the clock.
        (Without JetStream there is nothing to check against.)"""
        if self.js is None:
            return True
        try:
            run = await self._kv_value("run")
            return run is not None and clock_pb2.Clock.FromString(run).run_id == run_id
        except DecodeError:  # a damaged key: no run this START can be checked against
            return False

    async def save_config(self, config: Message) -> None:
        """Keep the configuration in force in the site's live-configuration KV bucket."""
        if self.js is None:
            return
        try:
            kv = await self.js.key_value(bus.config_bucket(self.site_id))
            await kv.put(self.domain, config.SerializeToString())
        except NatsError as exc:  # NATS away: the command is in force, only not kept
            self._failed("config.not_saved", exc)

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
            field, prefix, shape, (low, high) = target
            index = _entity_index(m.entity, prefix, shape(self.model))
            if index is None:
                reject(self.stats, "Measurement.entity", msg.subject, f"entity {m.entity[:80]!r}")
                continue
            if not math.isfinite(m.value):
                detail = f"{m.entity}: {m.value}"
                reject(self.stats, "Measurement.value_not_finite", msg.subject, detail)
                continue
            if not low <= m.value <= high:
                detail = f"{m.entity}: {m.value} outside [{low}, {high}]"
                reject(self.stats, "Measurement.value_out_of_range", msg.subject, detail)
                continue
            self._measured[(field, index)] = m.value

    def _peer_handler(self, peer: str):
        message_type = STATE_TYPES[peer]

        async def handle(msg) -> None:
            state = decode_msg(message_type, msg, stats=self.stats)
            if state is None or state.run_id != self.run_id or self.model is None:
                return
            parts = self._peer_parts(peer, state, msg.subject)
            if parts is None:
                return
            async with self._arrived:
                self._peers[state.step][peer] = parts
                self._arrived.notify_all()

        return handle

    def _peer_parts(self, peer: str, state: StateMessage, subject: str):
        """The boundary values of a peer's state, or None (counted, logged) when it is out
        of range of this run's steps, not finite or not of the model's shapes."""
        model = self.model
        assert model is not None  # peers' states are read only once a run has started
        if state.step < model.step - 1:  # a re-sent step this node has used already
            return None
        problem = state_problem(state)
        if problem is None and state.step - model.step > HISTORY:
            problem = f"step {state.step} too far ahead of step {model.step}"
        if problem is None:
            parts = parts_of(peer, state)
            for name, value in parts.items():
                expected = np.shape(getattr(model.initial, name))
                if np.shape(value) != expected:
                    problem = f"{name}: shape {np.shape(value)}, expected {expected}"
            if problem is None:
                return parts
        reject(self.stats, f"{type(state).__name__}.invalid", subject, problem)
        return None

    # ------------------------------------------------------------------ stepping

    async def _start_run(self, clock: clock_pb2.Clock, publish: bool = True, site=None) -> None:
        site = site if site is not None else site_from_spec(clock.spec)
        dt = clock.spec.dt_s or 1.0
        loop = asyncio.get_running_loop()
        # Building params and compiling the step takes seconds: keep the loop responsive.
        model = await loop.run_in_executor(None, self._build, site, dt)
        async with self._arrived:
            self.model, self.run_id = model, clock.run_id
            self._peers.clear()
            self._pending.clear()
            self._history.clear()
            self._measured.clear()  # measurements were of the run before
        if publish:
            await self._publish(
                -1, model.initial_outputs(), model.initial_parts(), model.drivers(0)
            )
        log.info("run started", extra={"domain": self.domain, "run_id": self.run_id})

    def _build(self, site, dt: float) -> DomainModel:
        model = DomainModel(site, self.domain, dt=dt, dtype=self.dtype)
        model.warm_up()
        return model

    async def _tick(self, step: int) -> None:
        model = self.model
        if model is None:
            return
        if step < model.step:  # the clock re-sent a tick we did
            if step in self._history:
                await self.nc.publish(self._state_subject(), self._history[step])
            return
        # A restarted node may resume from a snapshot a step or two behind: catch up with
        # the peers' replayed states (the same values they published then).
        try:
            while model.step <= step:
                await self._advance_one(model)
        except TimeoutError as exc:  # a peer is away: the clock re-sends the tick
            log.warning(
                "peers did not answer; waiting for the tick again",
                extra={"domain": self.domain, "step": model.step, "reason": str(exc)},
            )

    async def _advance_one(self, model: DomainModel) -> None:
        step = model.step
        if step > 0:
            await self._await_peers(step - 1)
        for action in self._pending:
            action(model)
        self._pending.clear()
        outputs, parts = model.advance(self._peers.get(step - 1, {}))
        modelled = model.modelled(outputs)  # before readings replace anything
        if self._measured:
            parts = self._assimilate(model, parts)
        else:  # nothing replaced: the published rack power is the model's own
            modelled.pop("rack_ac_model_w", None)
        self._peers.pop(step - 2, None)
        await self._publish(step, outputs, parts, model.drivers(step), modelled)

    def _assimilate(self, model: DomainModel, parts: dict[str, np.ndarray]):
        """Replace modelled values by the measurements received since the last tick: in
        what peers read and, for state variables, in the model's state."""
        parts = {k: np.array(v) for k, v in parts.items()}
        for (field, index), value in self._measured.items():
            parts[field][index] = value
        if "tcs_supply_c" in parts:
            model.assimilate(tcs_supply_c=jnp.asarray(parts["tcs_supply_c"], model.dtype))
        self._measured.clear()
        return parts

    async def _await_peers(self, step: int) -> None:
        """Wait for the peers' states of ``step``; ask them again and again to replay what
        we missed (a restarted service never saw the messages sent while it was down).
        Raises TimeoutError after ``PEER_TIMEOUT_S``, naming what each missing peer did."""
        deadline = asyncio.get_running_loop().time() + PEER_TIMEOUT_S
        outcome: dict[str, str] = {}
        while True:
            async with self._arrived:
                try:
                    ready = self._arrived.wait_for(lambda: self._ready(step))
                    await asyncio.wait_for(ready, 1.0)
                    return
                except TimeoutError:
                    pass
            for peer in NEEDS[self.domain]:
                if peer not in self._peers.get(step, {}):
                    outcome[peer] = await self._replay(peer, step)
            if self._ready(step):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no state for step {step}: {outcome}")

    async def _replay(self, peer: str, step: int) -> str:
        """Ask ``peer`` for its state of ``step``; what came of it, in a word."""
        request = common_pb2.Tick(run_id=self.run_id, step=step).SerializeToString()
        try:
            reply = await self.nc.request(
                bus.replay_subject(self.site_id, peer), request, timeout=2.0
            )
        except NatsError as exc:  # no answer, no responder, connection closed
            return type(exc).__name__
        if not reply.data:
            return "not kept"
        state = decode_msg(STATE_TYPES[peer], reply, stats=self.stats)
        if state is None or state.run_id != self.run_id or state.step != step:
            return "other state"
        parts = self._peer_parts(peer, state, reply.subject)
        if parts is None:
            return "refused"
        async with self._arrived:
            self._peers[step][peer] = parts
        return "replayed"

    def _snapshot(self) -> bytes:
        """The model's snapshot and the state messages of the last ``SNAPSHOT_EVERY + 1``
        steps: a peer restored from an older snapshot of its own asks this node to replay
        them, after this node has restarted too."""
        assert self.model is not None  # snapshots are taken during a run
        kept = sorted(self._history)[-(SNAPSHOT_EVERY + 1) :]
        arrays: dict[str, np.ndarray] = {"model": np.frombuffer(self.model.snapshot(), np.uint8)}
        arrays["steps"] = np.array(kept, np.int64)
        arrays |= {f"step_{k}": np.frombuffer(self._history[k], np.uint8) for k in kept}
        buffer = io.BytesIO()
        # allow_pickle is savez's default, named so that no key of **arrays can bind it.
        np.savez(buffer, allow_pickle=True, **arrays)
        return buffer.getvalue()

    def _restore(self, data: bytes) -> None:
        assert self.model is not None  # called by _rejoin once the run is rebuilt
        with np.load(io.BytesIO(data)) as z:
            if "model" not in z:  # a snapshot of the model alone (before replays were kept)
                self.model.restore(data)
                return
            self.model.restore(z["model"].tobytes())
            self._history = {int(k): z[f"step_{k}"].tobytes() for k in z["steps"]}

    def _state_subject(self) -> str:
        return bus.state_subject(self.site_id, self.domain)

    def _ready(self, step: int) -> bool:
        return all(peer in self._peers.get(step, {}) for peer in NEEDS[self.domain])

    async def _publish(self, step: int, outputs, parts, drivers, modelled=None) -> None:
        time_s = (step + 1) * self.model.dt if self.model else 0.0
        sources = sources_of(outputs, parts, drivers) | (modelled or {})
        quantities = self.model.quantities(outputs, drivers) if self.model else {}
        message = state_message(self.domain, self.run_id, step, time_s, sources, quantities)
        self.latest = message
        data = message.SerializeToString(deterministic=True)
        self._history[step] = data
        self._history.pop(step - HISTORY, None)
        await self.nc.publish(self._state_subject(), data)
        due = step == -1 or step % SNAPSHOT_EVERY == 0  # -1: a node killed before step 0
        if self.js is not None and self.model is not None and due:
            # Snapshot for a restart, published without waiting for the KV's ack; a node
            # restarting from it catches up through its peers' replays (HISTORY steps).
            snapshot = self.run_id.encode() + b"\n" + self._snapshot()
            await self.nc.publish(f"$KV.{bus.run_bucket(self.site_id)}.{self.domain}", snapshot)
