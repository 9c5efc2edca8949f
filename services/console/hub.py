"""One upstream ``Watch`` stream, fanned out to every live viewer as Server-Sent Events.

The reader keeps only the newest snapshot; the publisher turns it into one SSE frame (one
JSON encoding, whatever the number of viewers) at most every ``min_interval_s`` (a
browser shows no more than that) and puts the frame on every viewer's queue. A viewer
whose queue is full (a stalled browser) loses its oldest frame, never blocks the others.

``Watch`` says nothing while a run is paused, and ends with the run: the hub then asks
``GetSnapshot`` every ``poll_s`` (a pause, a new run) and opens the stream again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import grpc

from services.console.upstream import Upstream
from services.console.views import deviation_view, run_state, snapshot_view
from twin.twin.v1 import snapshot_pb2, twin_pb2

log = logging.getLogger("twin.console")

EVENTS_KEPT = 50


@dataclass
class HubStats:
    """What the hub did: for /api/stats and bench/console.py."""

    received: int = 0  # Watch messages read
    published: int = 0  # SSE frames made (each sent to every viewer)
    publish_s: float = 0.0  # wall time spent making and queueing frames
    dropped: int = 0  # frames a full viewer queue lost
    upstream_errors: int = 0


class Hub:
    def __init__(
        self,
        upstream: Upstream,
        *,
        min_interval_s: float = 0.1,
        poll_s: float = 1.0,
        queue_size: int = 32,
    ) -> None:
        self.upstream = upstream
        self.min_interval_s = min_interval_s
        self.poll_s = poll_s
        self.queue_size = queue_size
        self.stats = HubStats()
        self.connected = False  # the last upstream call succeeded
        self.latest: dict[str, Any] | None = None  # the last published view
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self._frame: bytes | None = None
        self._pending: snapshot_pb2.SiteSnapshot | None = None
        self._key: tuple | None = None  # what the last published snapshot was
        self._new = asyncio.Event()
        self._viewers: set[asyncio.Queue[bytes]] = set()
        self._tasks: list[asyncio.Task] = []
        self._last_message = 0.0

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    # -- lifetime ----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read(), name="console-watch"),
            asyncio.create_task(self._poll(), name="console-poll"),
            asyncio.create_task(self._publish(), name="console-publish"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- upstream ----------------------------------------------------------------------

    def offer(self, snapshot: snapshot_pb2.SiteSnapshot) -> None:
        """A snapshot from anywhere (Watch, a poll, a control call's reply): published
        when it differs from the last one."""
        key = (snapshot.run_id, snapshot.step, snapshot.state, len(snapshot.deviations))
        if key == self._key and self._pending is None:
            return
        self._pending = snapshot
        self._new.set()

    async def _read(self) -> None:
        while True:
            try:
                stream = self.upstream.twin.Watch(
                    twin_pb2.WatchRequest(), metadata=self.upstream.metadata
                )
                async for message in stream:
                    self.connected = True
                    self._last_message = time.monotonic()
                    self.stats.received += 1
                    self.offer(message.snapshot)
            except grpc.RpcError as exc:
                self._down(exc)
            await asyncio.sleep(self.poll_s)  # the run ended (or the twin is away)

    async def _poll(self) -> None:
        """GetSnapshot when Watch has been quiet for ``poll_s``: pauses and new runs."""
        while True:
            await asyncio.sleep(self.poll_s)
            if time.monotonic() - self._last_message < self.poll_s:
                continue
            try:
                reply = await self.upstream.twin.GetSnapshot(
                    twin_pb2.GetSnapshotRequest(), metadata=self.upstream.metadata, timeout=5
                )
            except grpc.RpcError as exc:
                self._down(exc)
                continue
            self.connected = True
            self.offer(reply.snapshot)

    def _down(self, exc: grpc.RpcError) -> None:
        if self.connected:
            log.warning("twin unreachable: %s", exc.details())  # type: ignore[attr-defined]
        self.connected = False
        self.stats.upstream_errors += 1

    # -- viewers -----------------------------------------------------------------------

    async def _publish(self) -> None:
        while True:
            await self._new.wait()
            self._new.clear()
            snapshot, self._pending = self._pending, None
            if snapshot is None:
                continue
            started = time.perf_counter()
            self._frame = self._make_frame(snapshot)
            for queue in self._viewers:
                if queue.full():
                    queue.get_nowait()
                    self.stats.dropped += 1
                queue.put_nowait(self._frame)
            self.stats.published += 1
            self.stats.publish_s += time.perf_counter() - started
            await asyncio.sleep(self.min_interval_s)

    def _make_frame(self, snapshot: snapshot_pb2.SiteSnapshot) -> bytes:
        self._note_events(snapshot)
        self._key = (snapshot.run_id, snapshot.step, snapshot.state, len(snapshot.deviations))
        view = snapshot_view(snapshot)
        view["seq"] = self.stats.published + 1  # viewers check that none is missing
        view["sent_at"] = time.time()  # wall clock: viewers measure their delay
        view["events"] = list(self.events)
        self.latest = view
        data = json.dumps(view, separators=(",", ":"), allow_nan=False)
        return f"event: snapshot\nid: {view['seq']}\ndata: {data}\n\n".encode()

    def _note_events(self, snapshot: snapshot_pb2.SiteSnapshot) -> None:
        """Run starts, state changes and deviations, as the viewers' event list."""
        before = self.latest
        state = run_state(snapshot.state)

        def add(text: str, **extra: Any) -> None:
            self.events.appendleft(
                {
                    "at": time.time(),
                    "run_id": snapshot.run_id,
                    "time_s": snapshot.time_s,
                    "text": text,
                    **extra,
                }
            )

        if before is None or before["run_id"] != snapshot.run_id:
            if snapshot.run_id:
                add(f"run {snapshot.run_id} on {snapshot.site_id}: {state}")
        elif before["state"] != state:
            why = f" ({snapshot.reason})" if snapshot.reason else ""
            add(f"run {snapshot.run_id}: {before['state']} -> {state}{why}")
        seen = {d["event_id"] for d in before["deviations"]} if before else set()
        for d in snapshot.deviations:
            if d.event_id not in seen:
                v = deviation_view(d)
                add(f"deviation raised: {v['entity']} {v['quantity']} ({v['cause']})")

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """The frames for one viewer: the latest at once, then each new one."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self._viewers.add(queue)
        try:
            if self._frame is not None:
                yield self._frame
            while True:
                yield await queue.get()
        finally:
            self._viewers.discard(queue)
