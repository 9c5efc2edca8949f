"""The ``TwinService`` gRPC API over the clock: run control, snapshots and ``Watch``."""

from __future__ import annotations

import asyncio

import grpc

from services.clock import ENDED, PAUSED, Clock
from services.scenario import validate_run_spec
from twin.twin.v1 import twin_pb2, twin_pb2_grpc
from twin_core.inputs import clip
from twin_core.site import SiteError

MAX_TICKS = 100_000  # per Step call
MAX_SPEED = 1e6  # a real-time factor: a simulated year in ~30 s of wall time


class TwinServicer(twin_pb2_grpc.TwinServiceServicer):
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def _check_run(self, run_id: str, context) -> None:
        if run_id and run_id != self.clock.run_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"run_id: unknown run {clip(run_id)!r}")

    async def Start(self, request, context):
        spec = request.spec
        factor = await self._speed(request.speed, "speed", context)
        try:
            # The whole spec (files, dt, horizon, the model's parameters) before the
            # current run is stopped: a bad Start leaves the running run alone.
            await asyncio.to_thread(validate_run_spec, spec)
        except SiteError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            run_id = await self.clock.start_run(spec, factor, request.paused)
        except SiteError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TimeoutError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return twin_pb2.StartResponse(
            run_id=run_id, site_id=self.clock.site_id, snapshot=self.clock.snapshot()
        )

    async def _speed(self, speed, field: str, context) -> float | None:
        pace = speed.WhichOneof("pace")
        if pace == "real_time_factor":
            if not 0 < speed.real_time_factor <= MAX_SPEED:  # NaN and infinity too
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{field}.real_time_factor: must be positive and at most {MAX_SPEED:g}",
                )
            return speed.real_time_factor
        return None  # as fast as possible (also when unset)

    async def Pause(self, request, context):
        await self._check_run(request.run_id, context)
        await self.clock.pause()
        return twin_pb2.PauseResponse(snapshot=self.clock.snapshot())

    async def Resume(self, request, context):
        await self._check_run(request.run_id, context)
        await self.clock.resume()
        return twin_pb2.ResumeResponse(snapshot=self.clock.snapshot())

    async def Step(self, request, context):
        await self._check_run(request.run_id, context)
        if self.clock.state != PAUSED:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "state: Step needs a paused run"
            )
        if not 1 <= request.ticks <= MAX_TICKS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"ticks: must be 1..{MAX_TICKS}")
        try:
            await self.clock.step_ticks(request.ticks)
        except TimeoutError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return twin_pb2.StepResponse(snapshot=self.clock.snapshot())

    async def SetSpeed(self, request, context):
        await self._check_run(request.run_id, context)
        self.clock.real_time_factor = await self._speed(request.speed, "speed", context)
        return twin_pb2.SetSpeedResponse(speed=request.speed)

    async def Stop(self, request, context):
        await self._check_run(request.run_id, context)
        await self.clock.stop()
        return twin_pb2.StopResponse(snapshot=self.clock.snapshot())

    async def GetSnapshot(self, request, context):
        await self._check_run(request.run_id, context)
        return twin_pb2.GetSnapshotResponse(snapshot=self.clock.snapshot())

    async def Watch(self, request, context):
        await self._check_run(request.run_id, context)
        every = max(1, request.every_steps)
        sent = -1
        while True:
            await self.clock.wait_changed(sent + every - 1)
            snapshot = self.clock.snapshot()
            sent = snapshot.step
            yield twin_pb2.WatchResponse(snapshot=snapshot)
            if self.clock.state in ENDED:  # stopped, completed or failed: the last snapshot
                return
