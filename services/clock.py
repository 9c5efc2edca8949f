"""The twin's clock: starts runs, ticks the four domain nodes in lockstep (as fast as
possible or paced to a real-time factor), stops at the horizon, and keeps the latest
site-level snapshot composed from the domains' published states."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from google.protobuf.message import Message
from nats.aio.client import Client as NATS

from services.domain import DOMAINS
from services.messages import STATE_TYPES
from services.runtime import bus
from services.runtime.codec import DecodeStats, decode_msg
from services.scenario import site_from_spec
from twin.twin.v1 import clock_pb2, snapshot_pb2

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 180.0  # domains build and compile their models on START
TICK_TIMEOUT_S = 30.0
RUNNING, PAUSED, STOPPED = (
    snapshot_pb2.RUN_STATE_RUNNING,
    snapshot_pb2.RUN_STATE_PAUSED,
    snapshot_pb2.RUN_STATE_STOPPED,
)


class Clock:
    def __init__(self, nc: NATS, site_id: str, kv=None) -> None:
        self.nc, self.site_id, self.kv = nc, site_id, kv
        self.run_id = ""
        self.state = STOPPED
        self.step = 0  # the next tick to send
        self.dt = 1.0
        self.horizon_steps: int | None = None
        self.real_time_factor: float | None = None  # None: as fast as possible
        self.latest: dict[str, Message] = {}
        self.cost_usd = self.emissions_t = self.market_emissions_t = 0.0
        self.stats = DecodeStats()
        self._changed = asyncio.Condition()
        self._runner: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one tick at a time
        self._measured_rate = 0.0

    async def start(self) -> None:
        for domain in DOMAINS:
            handler = self._state_handler(domain)
            await self.nc.subscribe(bus.state_subject(self.site_id, domain), cb=handler)

    def _state_handler(self, domain: str):
        message_type = STATE_TYPES[domain]

        async def handle(msg) -> None:
            state = decode_msg(message_type, msg, stats=self.stats)
            if state is None or state.run_id != self.run_id:
                return
            async with self._changed:
                self.latest[domain] = state
                self._changed.notify_all()

        return handle

    # ------------------------------------------------------------------ run control

    async def start_run(
        self, spec: clock_pb2.RunSpec, real_time_factor: float | None, paused: bool
    ) -> str:
        """Start a run (raises SiteError for a bad scenario); returns its id once every
        domain has built its model."""
        site_from_spec(spec)  # validate before anyone builds anything
        await self.stop()
        self.run_id = uuid.uuid4().hex[:12]
        self.step, self.dt = 0, spec.dt_s or 1.0
        self.horizon_steps = round(spec.horizon_s / self.dt) if spec.horizon_s > 0 else None
        self.real_time_factor = real_time_factor
        self.latest.clear()
        self.cost_usd = self.emissions_t = self.market_emissions_t = 0.0
        clock = clock_pb2.Clock(
            run_id=self.run_id, command=clock_pb2.CLOCK_COMMAND_START, spec=spec
        )
        if self.kv is not None:  # a restarted domain service finds the run here
            await self.kv.put("run", clock.SerializeToString())
        await bus.publish(self.nc, bus.clock_subject(self.site_id), clock)
        await self._wait_for_step(-1, READY_TIMEOUT_S)
        self.state = PAUSED
        log.info("run ready", extra={"run_id": self.run_id, "site": self.site_id})
        if not paused:
            await self.resume()
        return self.run_id

    async def resume(self) -> None:
        if self.state != PAUSED:
            return
        self.state = RUNNING
        self._runner = asyncio.create_task(self._run())

    async def pause(self) -> None:
        if self.state == RUNNING:
            self.state = PAUSED
            if self._runner:
                await self._runner

    async def step_ticks(self, ticks: int) -> None:
        """Advance ``ticks`` intervals while paused."""
        for _ in range(ticks):
            if self.state != PAUSED or self._at_horizon():
                break
            await self._tick()

    async def stop(self) -> None:
        if self.state == STOPPED:
            return
        self.state = STOPPED
        if self._runner:
            await self._runner
        stop = clock_pb2.Clock(
            run_id=self.run_id, step=self.step, command=clock_pb2.CLOCK_COMMAND_STOP
        )
        await bus.publish(self.nc, bus.clock_subject(self.site_id), stop)

    def _at_horizon(self) -> bool:
        return self.horizon_steps is not None and self.step >= self.horizon_steps

    async def _run(self) -> None:
        started, first = time.perf_counter(), self.step
        while self.state == RUNNING and not self._at_horizon():
            await self._tick()
            done = self.step - first
            elapsed = time.perf_counter() - started
            self._measured_rate = done * self.dt / max(elapsed, 1e-9)
            if self.real_time_factor:
                ahead = done * self.dt / self.real_time_factor - elapsed
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if self._at_horizon() and self.state == RUNNING:
            self.state = STOPPED
            async with self._changed:
                self._changed.notify_all()

    async def _tick(self) -> None:
        async with self._lock:
            k = self.step
            tick = clock_pb2.Clock(
                run_id=self.run_id,
                step=k,
                time_s=k * self.dt,
                command=clock_pb2.CLOCK_COMMAND_TICK,
            )
            await self._send_until_done(tick, k)
            energy = self.latest["energy"]
            self.cost_usd += energy.cost_usd_per_s * self.dt
            self.emissions_t += energy.emissions_t_per_s * self.dt
            self.market_emissions_t += energy.market_emissions_t_per_s * self.dt
            self.step = k + 1

    async def _send_until_done(self, tick: clock_pb2.Clock, k: int) -> None:
        """Send the tick, and again every second until every domain has answered: a
        domain service that restarted meanwhile picks the run up from the re-sent tick."""
        deadline = time.monotonic() + TICK_TIMEOUT_S
        while True:
            await bus.publish(self.nc, bus.clock_subject(self.site_id), tick)
            try:
                await self._wait_for_step(k, 1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    async def _wait_for_step(self, step: int, timeout_s: float) -> None:
        def arrived() -> bool:
            return all(d in self.latest and self.latest[d].step >= step for d in DOMAINS)

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(arrived), timeout_s)
            except TimeoutError:
                missing = [d for d in DOMAINS if d not in self.latest or self.latest[d].step < step]
                raise TimeoutError(f"no state for step {step} from {', '.join(missing)}") from None

    async def wait_changed(self, after_step: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.step > after_step or self.state == STOPPED)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> snapshot_pb2.SiteSnapshot:
        s = snapshot_pb2.SiteSnapshot(
            run_id=self.run_id, site_id=self.site_id, step=self.step, state=self.state
        )
        if any(d not in self.latest or self.latest[d].step < 0 for d in DOMAINS):
            return s
        c, k, p, e = (self.latest[d] for d in DOMAINS)
        s.time_s = p.time_s
        s.it_mw, s.facility_mw = p.it_w / 1e6, p.meter_w / 1e6
        s.pue = p.meter_w / p.it_w if p.it_w else 0.0
        s.cooling_mw, s.losses_mw = k.electrical_w / 1e6, p.losses_w / 1e6
        s.tcs_supply_mean_c, s.tcs_supply_max_c = k.tcs_supply_mean_c, k.tcs_supply_max_c
        s.facility_supply_c = k.fws_supply_c
        s.gpu_temp_max_c, s.gpu_temp_mean_c = c.gpu_temp_max_c, c.gpu_temp_mean_c
        s.throttled_gpus, s.delivered_pflops = c.throttled_gpus, c.delivered_pflops
        s.grid_mw, s.battery_mw = e.grid_w / 1e6, e.battery_w / 1e6
        s.ppa_mw, s.generation_mw = e.ppa_w / 1e6, e.generation_w / 1e6
        s.cost_usd, s.emissions_t = self.cost_usd, self.emissions_t
        s.market_emissions_t = self.market_emissions_t
        s.real_time_factor = self._measured_rate
        return s
