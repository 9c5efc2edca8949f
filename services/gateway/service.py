"""``twin serve gateway``: field adapters -> point map -> quality -> MeasurementBatch.

Configuration: the usual TWIN_* variables plus ``TWIN_POINT_MAP`` (the map file).
On every ``TICK`` of the site's clock (``twin.<site>.clock``) the gateway publishes,
per source, one ``MeasurementBatch`` on ``telemetry.<site>.<source>`` with each mapped
entity's value for the tick (services/gateway/quality.py), which the domain nodes use
at their next interval. Between ticks, every ``TWIN_GATEWAY_AHEAD_S`` (0.25 s; 0: off)
it also sends the values that changed since, so that a value reaches the bus within
that time instead of waiting up to a tick, and a domain node applies it a tick sooner.

Statistics: gRPC ``twin.gateway.v1.GatewayService/GetStats`` (accepted, rejected per
reason, published, held, substituted, ticks, ahead, batches, adapter restarts); the same
numbers answer a NATS request on ``twin.<site>.gateway.stats`` (a
``google.protobuf.Struct``, for clients on the bus only), and are logged every minute and
at shutdown. ``twin gateway stats`` prints them; Prometheus reads the same counters
(``twin_gateway_*``, services/runtime/metrics.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any, cast

from google.protobuf import struct_pb2
from nats.aio.client import Client as NATS
from pydantic import Field, field_validator

from services.gateway.adapters import make_adapter
from services.gateway.grpc_api import GatewayServicer
from services.gateway.heap import FrozenHeap, relax
from services.gateway.pointmap import PointMap, PointMapError, Resolver, load_pointmap
from services.gateway.quality import Aligned, Aligner
from services.gateway.reading import Adapter
from services.runtime import bus, metrics, run
from services.runtime.codec import decode_msg
from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.service import Service
from twin.gateway.v1 import gateway_pb2_grpc
from twin.telemetry.v1 import telemetry_pb2
from twin.twin.v1 import clock_pb2

log = logging.getLogger(__name__)
STATS_LOG_S = 60.0
STOP_TIMEOUT_S = 5.0  # how long stop() waits for cancelled adapters


def stats_subject(site: str) -> str:
    return f"twin.{site}.gateway.stats"


class GatewayConfig(RuntimeConfig):
    point_map: Path = Field(description="the point map (YAML)")
    gateway_ahead_s: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description="send new values this often between ticks (0: only at ticks)",
    )

    @field_validator("point_map")
    @classmethod
    def _loads(cls, path: Path) -> Path:
        # Checked with the rest of the configuration: a bad map stops the start (exit 2,
        # one line with the map's line and field) before any connection is tried.
        try:
            _load(path)
        except PointMapError as exc:
            raise ValueError(str(exc)) from None
        return path


_loaded: dict[tuple[Path, int, int], PointMap] = {}


def _load(path: Path) -> PointMap:
    """The map at ``path``, loaded once for the configuration check and the set-up (a
    site's map takes seconds of CPU); loaded again only if the file changed between."""
    try:
        stat = path.stat()
    except OSError:
        return load_pointmap(path)  # which names the problem
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _loaded:
        pointmap = load_pointmap(path)
        _loaded.clear()  # only the latest: a process serves one map
        _loaded[key] = pointmap
    return _loaded[key]


class Gateway:
    """The part of the service that needs no gRPC: testable with a bare NATS client."""

    def __init__(
        self,
        nc: NATS,
        site: str,
        pointmap: PointMap,
        adapters: list[Adapter] | None = None,
        ahead_s: float = 0.0,
    ) -> None:
        """``adapters``: default, one per source of the map (``make_adapter``); given,
        these instead (their ``name`` is the source their readings belong to).
        ``ahead_s`` > 0: every ``ahead_s`` between ticks, the values that changed are sent
        too (``Aligner.ahead``): a value then waits at most that long for the bus, not a
        tick, and the domain nodes apply it at their next tick, not the one after."""
        self.nc, self.site, self.map = nc, site, pointmap
        self.ahead_s = ahead_s
        self.aligner = Aligner(Resolver(pointmap))
        self.heap = FrozenHeap()
        if adapters is None:
            adapters = [make_adapter(name, cfg, nc) for name, cfg in pointmap.sources.items()]
        self.adapters = adapters
        self.restarts = 0
        self.batches = 0
        self._tasks: list[asyncio.Task] = []
        self._thresholds: tuple[int, int, int] | None = None  # the collector's, before

    async def start(self) -> None:
        self._thresholds = relax()
        self.heap.settle(1)  # the point map and its host table
        await self.nc.subscribe(bus.clock_subject(self.site), cb=self._on_clock)
        await self.nc.subscribe(stats_subject(self.site), cb=self._on_stats)
        for adapter in self.adapters:
            self._tasks.append(asyncio.create_task(self._supervise(adapter), name=adapter.name))
        if self.ahead_s > 0:
            self._tasks.append(asyncio.create_task(self._send_ahead(), name="ahead"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Bounded: an adapter stuck in a protocol library must not hold the shutdown.
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            if stuck:
                log.warning("adapters did not stop in time", extra={"tasks": len(stuck)})
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        log.info("gateway stats", extra=self.stats())

    async def _supervise(self, adapter: Adapter) -> None:
        """An adapter that fails is restarted (after 1 s, doubling to 60 s): one broken
        protocol must not take the others, or the service, down."""
        backoff = 1.0
        while True:
            try:
                await adapter.run(self.aligner.emit)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts += 1
                log.error(
                    "adapter failed; restarting",
                    extra={"source": adapter.name, "error": repr(exc), "retry_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _on_clock(self, msg) -> None:
        clock = decode_msg(clock_pb2.Clock, msg)
        if clock is not None and clock.command == clock_pb2.CLOCK_COMMAND_TICK:
            await self.publish_tick()

    async def publish_tick(self) -> int:
        """Publish this tick's values; the number of measurements sent."""
        sent = await self._publish(self.aligner.flush())
        self.heap.settle(1 + self.aligner.known_points)  # while new points are being seen
        return sent

    async def _send_ahead(self) -> None:
        while True:
            await asyncio.sleep(self.ahead_s)
            await self._publish(self.aligner.ahead())

    async def _publish(self, aligned: list[Aligned]) -> int:
        """``aligned`` as one MeasurementBatch per source."""
        site, measurement = self.site, telemetry_pb2.Measurement
        by_source: dict[str, list[telemetry_pb2.Measurement]] = {}
        for source, entity, quantity, value, time_s in aligned:
            # quantity: a Quantity number, which the stubs type as the enum
            m = measurement(
                site_id=site, entity=entity, quantity=cast(Any, quantity), time_s=time_s,
                value=value,
            )  # fmt: skip
            if (ms := by_source.get(source)) is None:
                by_source[source] = [m]
            else:
                ms.append(m)
        for source, ms in by_source.items():
            batch = telemetry_pb2.MeasurementBatch(site_id=site, source=source, measurements=ms)
            await self.nc.publish(bus.telemetry_subject(site, source), batch.SerializeToString())
            self.batches += 1
        return len(aligned)

    def stats(self) -> dict:
        return {**self.aligner.stats.as_dict(), "batches": self.batches, "restarts": self.restarts}

    async def _on_stats(self, msg) -> None:
        if not msg.reply:
            return
        reply = struct_pb2.Struct()
        reply.update(self.stats())
        await msg.respond(reply.SerializeToString())

    async def log_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_LOG_S)
            log.info("gateway stats", extra=self.stats())


async def gateway_setup(svc: Service) -> None:
    config = svc.config
    assert isinstance(config, GatewayConfig)
    try:
        pointmap = _load(config.point_map)
    except PointMapError as exc:
        raise ConfigError("TWIN_POINT_MAP", str(exc)) from None
    gateway = Gateway(svc.nats, config.site, pointmap, ahead_s=config.gateway_ahead_s)
    svc.grpc.add_servicer(
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server, GatewayServicer(gateway)
    )
    await gateway.start()
    svc.create_task(gateway.log_stats(), name="gateway-stats")
    svc.add_metrics(lambda: metrics.gateway_samples(gateway.stats()))  # GetStats' counters
    svc.on_shutdown(gateway.stop)
    svc.gateway = gateway  # type: ignore[attr-defined]  # for tests


def main() -> int:
    return run("gateway", gateway_setup, config_type=GatewayConfig)
