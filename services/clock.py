"""The twin's clock: starts runs, ticks the four domain nodes in lockstep (as fast as
possible or paced to a real-time factor), stops at the horizon, and keeps the latest
site-level snapshot composed from the domains' published states.

No outage stalls a run: a tick is re-sent with backoff (a restarted or resumed domain, or
one whose NATS connection came back, answers a re-sent tick) while the clock logs whom it
waits for; after ``stall_timeout_s`` (``TWIN_RUN_STALL_TIMEOUT_S``, default 300 s) without
progress the run is FAILED with a reason. Every end of a run (stop, horizon, failure) is
published as STOP on the clock subject (``end``, ``reason``, ``wall_time_s``) and, as the
same message, on ``twin.<site>.events``; the run key of the KV bucket is deleted then, so a
restarted service does not rebuild a finished run. A clock that restarts finds the key of
the run it was driving and ends that run as FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from services.messages import STATE_TYPES, StateMessage, state_problem
from services.runtime import bus, metrics
from services.runtime.codec import DecodeStats, decode_msg, reject
from services.scenario import site_from_spec
from twin.twin.v1 import clock_pb2, deviation_pb2, snapshot_pb2
from twin_core import contract
from twin_core.contract import DOMAINS

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 180.0  # domains build and compile their models on START
STALL_TIMEOUT_ENV = "TWIN_RUN_STALL_TIMEOUT_S"
STALL_TIMEOUT_S = 300.0  # default: a run that makes no progress this long has failed
RESEND_FIRST_S, RESEND_MAX_S = 1.0, 4.0  # tick re-sending backoff
CONTROL_WAIT_S = 2.0  # Pause/Stop wait this long for the ticks in flight, then abandon them
# Ticks in flight at once when running as fast as possible or stepping: a node starts
# interval k + 1 as soon as the peers it reads have published k, without waiting for the
# clock's round trip in between (the Jacobi scheme needs nothing more). Each tick is still
# completed in order; a few suffice to keep every node busy. At most node.HISTORY.
PIPELINE = 4
RUNNING, PAUSED, STOPPED, FAILED = (
    snapshot_pb2.RUN_STATE_RUNNING,
    snapshot_pb2.RUN_STATE_PAUSED,
    snapshot_pb2.RUN_STATE_STOPPED,
    snapshot_pb2.RUN_STATE_FAILED,
)
ENDED = (STOPPED, FAILED)
# The rates each domain publishes that the run's totals integrate.
RATES = {
    d: tuple(r for r in contract.TOTALS.values() if contract.QUANTITY[r].domain == d)
    for d in DOMAINS
}


class RunStalled(TimeoutError):
    """No progress within the stall limit: the run is failed with this message."""


class Clock:
    def __init__(
        self, nc: NATS, site_id: str, kv=None, stall_timeout_s: float | None = None
    ) -> None:
        self.nc, self.site_id, self.kv = nc, site_id, kv
        # TWIN_RUN_STALL_TIMEOUT_S, read by RuntimeConfig and passed in by the service.
        self.stall_timeout_s = stall_timeout_s or STALL_TIMEOUT_S
        self.run_id = ""
        self.state = STOPPED
        self.reason = ""  # why the run is in its state (a failure, a wait)
        self.step = 0  # the next tick to complete
        self._sent = -1  # the latest tick sent in this run
        self._sent_at: dict[int, float] = {}  # when each tick in flight was sent
        # The rates of the contract's totals by step, as the owning domains publish them,
        # until that step is complete and they are added to ``totals``.
        self._rates: dict[int, dict[str, float]] = {}
        self.dt = 1.0
        self.horizon_steps: int | None = None
        self.real_time_factor: float | None = None  # None: as fast as possible
        self.latest: dict[str, StateMessage] = {}
        self.halls: list[tuple[str, int]] = []  # (name, CDUs) of the run's site, in order
        # Run totals (cost_usd, ...): the rates of the contract integrated over the steps.
        self.totals = dict.fromkeys(contract.TOTALS, 0.0)
        self.limits: metrics.Limits | None = None  # the run's site's, for the alerts
        self.stats = DecodeStats()
        self._changed = asyncio.Condition()
        self._runner: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one driver of ticks at a time
        self._measured_rate = 0.0
        # True from the moment a run is told to end until its end is published and its run
        # key deleted: waiters see the end only once a client can rely on all of it.
        self._ending = False
        # The residual monitor's open deviations, shown in every snapshot (twin_setup).
        self.deviations: Callable[[], Iterable[deviation_pb2.Deviation]] | None = None

    async def start(self) -> None:
        for domain in DOMAINS:
            handler = self._state_handler(domain)

            async def guarded(msg, handler=handler) -> None:
                try:
                    await handler(msg)
                except Exception as exc:  # counted and logged; never the subscription's end
                    reject(self.stats, "handler.failed", msg.subject, repr(exc)[:200])

            await self.nc.subscribe(bus.state_subject(self.site_id, domain), cb=guarded)
        await self._end_interrupted_run()

    async def _end_interrupted_run(self) -> None:
        """A run key left by a previous clock process: that run lost its clock mid-way
        (its step and totals are gone with it), so it ends as FAILED, said once."""
        if self.kv is None:
            return
        try:
            entry = await self.kv.get("run")
            previous = clock_pb2.Clock.FromString(entry.value)
        except (NotFoundError, DecodeError):  # no key (no run was in progress), or not a Clock
            return
        self.run_id = previous.run_id
        await self._end(FAILED, "the twin service restarted during the run")

    def _state_handler(self, domain: str):
        message_type = STATE_TYPES[domain]

        async def handle(msg) -> None:
            state = decode_msg(message_type, msg, stats=self.stats)
            if state is None or state.run_id != self.run_id:
                return
            problem = state_problem(state)
            if problem is None and state.step > max(self._sent, self.step):
                problem = f"step {state.step} ahead of the clock's tick {self._sent}"
            if problem is not None:  # a forged state must not advance the clock
                reject(self.stats, f"{type(state).__name__}.invalid", msg.subject, problem)
                return
            if state.step >= self.step:  # a step not complete yet: keep its rates
                rates = self._rates.setdefault(state.step, {})
                for rate in RATES[domain]:
                    rates[rate] = state.quantities.get(rate, 0.0)
            async with self._changed:
                previous = self.latest.get(domain)
                # Forward only: a state re-sent for an older tick must not hide a newer one.
                if previous is None or state.step >= previous.step:
                    self.latest[domain] = state
                self._changed.notify_all()

        return handle

    # ------------------------------------------------------------------ run control

    async def start_run(
        self, spec: clock_pb2.RunSpec, real_time_factor: float | None, paused: bool
    ) -> str:
        """Start a run (raises SiteError for a bad scenario); returns its id once every
        domain has built its model."""
        site = site_from_spec(spec)  # validate before anyone builds anything
        await self.stop()
        self.limits = metrics.Limits.of(site)
        self.run_id = uuid.uuid4().hex[:12]
        self.halls = [(hall.name, hall.cdus) for hall in site.halls]
        self.reason = ""
        self.step, self.dt = 0, spec.dt_s or 1.0
        self._sent = -1
        self._sent_at.clear()
        self._rates.clear()
        self.horizon_steps = round(spec.horizon_s / self.dt) if spec.horizon_s > 0 else None
        self.real_time_factor = real_time_factor
        self.latest.clear()
        self.totals = dict.fromkeys(contract.TOTALS, 0.0)
        clock = clock_pb2.Clock(
            run_id=self.run_id,
            command=clock_pb2.CLOCK_COMMAND_START,
            spec=spec,
            real_time_factor=real_time_factor or 0.0,
            wall_time_s=time.time(),
        )
        if self.kv is not None:  # a restarted domain service finds the run here
            await self.kv.put("run", clock.SerializeToString())
        # The event first: the historian records the run before any of its states.
        await bus.publish(self.nc, bus.events_subject(self.site_id), clock)
        await bus.publish(self.nc, bus.clock_subject(self.site_id), clock)
        try:
            await self._wait_for_step(-1, READY_TIMEOUT_S)
        except TimeoutError as exc:
            await self._end(FAILED, f"domains not ready: {exc}")
            raise
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
            await self._settle_runner()

    async def _settle_runner(self) -> None:
        """Let the runner finish its tick, or abandon a tick that waits on an absent domain
        (the step stays where it is; the tick is sent again on Resume or Step)."""
        runner = self._runner
        if runner is None or runner.done():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(runner), CONTROL_WAIT_S)
            return
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    async def step_ticks(self, ticks: int) -> None:
        """Advance ``ticks`` intervals while paused; a stalled tick fails the run (raises
        RunStalled, a TimeoutError, naming the domains that did not answer)."""
        try:
            await self._drive(self.step + ticks, PIPELINE, lambda: self.state == PAUSED)
        except RunStalled as exc:
            await self._end(FAILED, str(exc))
            raise
        if self.state == PAUSED and self._at_horizon():
            await self._end(STOPPED, "")

    async def stop(self) -> None:
        if self.state in ENDED:
            return
        self.state, self._ending = STOPPED, True
        await self._settle_runner()
        await self._end(STOPPED, "")

    async def _end(self, state: snapshot_pb2.RunState, reason: str) -> None:
        """End the run: say how on the clock subject and as an event, delete the run key."""
        self.state, self.reason, self._ending = state, reason, True
        try:
            await self._publish_end(state, reason)
        finally:
            self._ending = False
            async with self._changed:
                self._changed.notify_all()

    async def _publish_end(self, state: snapshot_pb2.RunState, reason: str) -> None:
        end = {
            STOPPED: clock_pb2.RUN_END_STOPPED,
            FAILED: clock_pb2.RUN_END_FAILED,
        }.get(state, clock_pb2.RUN_END_COMPLETED)
        if state == STOPPED and self._at_horizon():
            end = clock_pb2.RUN_END_COMPLETED
        message = clock_pb2.Clock(
            run_id=self.run_id,
            step=self.step - 1,
            time_s=self.step * self.dt,
            command=clock_pb2.CLOCK_COMMAND_STOP,
            wall_time_s=time.time(),
            end=end,
            reason=reason,
        )
        if state == FAILED:
            log.error("run failed", extra={"run_id": self.run_id, "reason": reason})
        else:
            log.info("run ended", extra={"run_id": self.run_id, "end": end, "step": self.step})
        for subject in (bus.clock_subject(self.site_id), bus.events_subject(self.site_id)):
            try:
                await bus.publish(self.nc, subject, message)
            except Exception as exc:  # NATS away: the end is still in force here
                log.warning("run end not published", extra={"error": repr(exc)})
        if self.kv is not None:
            try:
                await self.kv.delete("run")
            except Exception as exc:
                log.warning("run key not deleted", extra={"error": repr(exc)})

    def _at_horizon(self) -> bool:
        return self.horizon_steps is not None and self.step >= self.horizon_steps

    async def _run(self) -> None:
        try:
            await self._paced()
        except RunStalled as exc:
            await self._end(FAILED, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave the run RUNNING forever
            log.exception("clock runner failed")
            await self._end(FAILED, f"clock error: {exc!r}")

    async def _paced(self) -> None:
        started, first = time.perf_counter(), self.step

        def going() -> bool:
            done = self.step - first
            elapsed = time.perf_counter() - started
            self._measured_rate = done * self.dt / max(elapsed, 1e-9)
            return self.state == RUNNING

        # The speed is read again at every tick: SetSpeed changes it under a running run.
        while going() and not self._at_horizon():
            factor = self.real_time_factor
            if not factor:  # as fast as possible, ticks in flight, while the speed stays so
                await self._drive(None, PIPELINE, lambda: going() and not self.real_time_factor)
                continue
            await self._drive(self.step + 1, 1, going)  # one tick at its wall-clock time
            ahead = (self.step - first) * self.dt / factor - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if self._at_horizon() and self.state == RUNNING:
            await self._end(STOPPED, "")

    async def _drive(self, end: int | None, window: int, going: Callable[[], bool]) -> None:
        """Complete ticks up to ``end`` (exclusive; None: none but the horizon) while
        ``going()`` holds, with up to ``window`` ticks sent ahead of the one awaited.
        Ticks already sent when ``going()`` turns false are completed too, so that the
        clock's step is again where every domain is (ticks in flight when a runner was
        abandoned are sent again here: a domain that did one publishes its state again)."""
        async with self._lock:
            if self.horizon_steps is not None:
                end = self.horizon_steps if end is None else min(end, self.horizon_steps)
            sent = self.step - 1
            while (end is None or self.step < end) and going():
                last = self.step + window - 1
                if end is not None:
                    last = min(last, end - 1)
                while sent < last and going():
                    sent += 1
                    await self._send(sent)
                if sent >= self.step:
                    await self._complete(self.step)
            while self.step <= sent:
                await self._complete(self.step)

    async def _send(self, k: int) -> None:
        self._sent = max(self._sent, k)
        self._sent_at[k] = time.perf_counter()
        try:
            await bus.publish(self.nc, bus.clock_subject(self.site_id), self._tick_message(k))
        except Exception as exc:  # NATS away: sent again when the answers do not come
            log.warning("tick not sent", extra={"step": k, "error": repr(exc)})

    def _tick_message(self, k: int) -> clock_pb2.Clock:
        return clock_pb2.Clock(
            run_id=self.run_id, step=k, time_s=k * self.dt, command=clock_pb2.CLOCK_COMMAND_TICK
        )

    async def _complete(self, k: int) -> None:
        """Wait for every domain's state of tick ``k`` (sent already), add its rates to the
        totals and move the step on."""
        await self._send_until_done(k)
        started = self._sent_at.pop(k, None)
        if started is not None:
            metrics.clock_tick_seconds.labels(self.site_id).observe(time.perf_counter() - started)
        metrics.clock_ticks.labels(self.site_id).inc()
        # The model holds each rate over its interval: the integral is exact.
        rates = self._rates.pop(k, {})
        for total, rate in contract.TOTALS.items():
            self.totals[total] += rates.get(rate, 0.0) * self.dt
        self.step = k + 1

    async def _send_until_done(self, k: int) -> None:
        """Wait for every domain's answer to tick ``k``, sending it again (backing off to
        ``RESEND_MAX_S``) until they have all answered: a domain service that restarted,
        resumed or reconnected meanwhile picks the run up from the re-sent tick. Raises
        RunStalled after the stall limit."""
        started = time.monotonic()
        wait = RESEND_FIRST_S
        while True:
            try:
                await self._wait_for_step(k, wait)
                if self.reason:
                    log.info("run going again", extra={"run_id": self.run_id, "step": k})
                    self.reason = ""
                return
            except TimeoutError as exc:
                waited = time.monotonic() - started
                self.reason = f"{exc} (waiting {waited:.0f} s)"
                if waited >= self.stall_timeout_s:
                    raise RunStalled(
                        f"{exc}: no answer within {self.stall_timeout_s:g} s ({STALL_TIMEOUT_ENV})"
                    ) from None
                log.warning(
                    "waiting for domains", extra={"run_id": self.run_id, "reason": str(exc)}
                )
                wait = min(2 * wait, RESEND_MAX_S)
                try:
                    tick = self._tick_message(k)
                    await bus.publish(self.nc, bus.clock_subject(self.site_id), tick)
                except Exception as exc:  # NATS away: try again at the next re-send
                    log.warning("tick not sent", extra={"step": k, "error": repr(exc)})

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
        """Until the run passes ``after_step`` or has ended (stopped, completed or failed:
        the end published and the run key deleted)."""

        def changed() -> bool:
            return self.step > after_step or (self.state in ENDED and not self._ending)

        async with self._changed:
            await self._changed.wait_for(changed)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> snapshot_pb2.SiteSnapshot:
        s = snapshot_pb2.SiteSnapshot(
            run_id=self.run_id,
            site_id=self.site_id,
            step=self.step,
            state=self.state,
            reason=self.reason,
        )
        if self.deviations is not None:
            s.deviations.extend(self.deviations())
        if any(d not in self.latest or self.latest[d].step < 0 for d in DOMAINS):
            return s
        s.time_s = self.latest["power"].time_s
        for domain in DOMAINS:
            s.quantities.update(self.latest[domain].quantities)
        s.totals.update(self.totals)
        s.real_time_factor = self._measured_rate
        supply = list(self.latest["cooling"].tcs_supply_c)  # type: ignore[attr-defined]
        first = 0
        for name, cdus in self.halls:  # CDU rows are in hall order (twin_core/params.py)
            s.halls.add(name=name, tcs_supply_c=supply[first : first + cdus])
            first += cdus
        return s
