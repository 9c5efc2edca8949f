"""One upstream ``Watch`` stream, fanned out to every live viewer as Server-Sent Events.

The reader keeps only the newest snapshot; the publisher turns it into one SSE frame (one
JSON encoding, whatever the number of viewers) at most every ``min_interval_s`` (4 a
second: what a person reads off a page; each frame costs the server per viewer) and puts
the frame on every viewer's queue. A viewer whose queue is full (a stalled browser) loses
its oldest frame, never blocks the others.

``Watch`` says nothing while a run is paused, and ends with the run: the hub then asks
``GetSnapshot`` every ``poll_s`` (a pause, a new run) and opens the stream again once a
run is running or paused.
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
EVENTS_SHOWN = 15  # in each frame: what the overview lists
RATE_WINDOW_S = 2.0  # the run's pace is measured over this long
KEEPALIVE_S = 15.0  # a comment line to every viewer when nothing else was sent
KEEPALIVE = b": keepalive\n\n"
LIVE = (snapshot_pb2.RUN_STATE_RUNNING, snapshot_pb2.RUN_STATE_PAUSED)


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
        min_interval_s: float = 0.25,
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
        self._live = asyncio.Event()  # a run is running or paused (a stream to open)
        self._live.set()  # until the first snapshot says otherwise
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
        if snapshot.state in LIVE:
            self._live.set()
        else:
            self._live.clear()
        key = (snapshot.run_id, snapshot.step, snapshot.state, len(snapshot.deviations))
        if key == self._key and self._pending is None:
            return
        self._pending = snapshot
        self._new.set()

    async def _read(self) -> None:
        every = 1
        while True:
            stream = self.upstream.twin.Watch(
                twin_pb2.WatchRequest(every_steps=every), metadata=self.upstream.metadata
            )
            try:
                paced = await self._follow(stream, every)
            except grpc.RpcError as exc:
                self._down(exc)
                paced = None
            finally:
                stream.cancel()
            if paced is None:  # the run ended (or the twin is away)
                every = 1
                await asyncio.sleep(self.poll_s)
                await self._live.wait()  # a run to watch, as the polls see it
            else:
                every = paced

    async def _follow(self, stream: Any, every: int) -> int | None:
        """Offer each snapshot of the stream until it ends (None), or until the run's
        pace calls for another ``every_steps`` (returned): the twin builds and sends, and
        this process reads, about one snapshot per published frame, however fast the run."""
        mark: tuple[float, int] | None = None  # (when, step) the rate is measured from
        async for message in stream:
            self.connected = True
            now, step = time.monotonic(), message.snapshot.step
            self._last_message = now
            self.stats.received += 1
            self.offer(message.snapshot)
            if mark is None or step < mark[1]:
                mark = (now, step)
            elif now - mark[0] >= RATE_WINDOW_S:
                rate = (step - mark[1]) / (now - mark[0])
                wanted = max(1, int(rate * self.min_interval_s))
                if wanted >= 2 * every or wanted <= every // 2:
                    return wanted
                mark = (now, step)
        return None

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

    def _fan_out(self, frame: bytes) -> None:
        for queue in self._viewers:
            if queue.full():
                queue.get_nowait()
                self.stats.dropped += 1
            queue.put_nowait(frame)

    async def _publish(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._new.wait(), KEEPALIVE_S)
            except TimeoutError:  # proxies close a stream that stays silent
                self._fan_out(KEEPALIVE)
                continue
            self._new.clear()
            snapshot, self._pending = self._pending, None
            if snapshot is None:
                continue
            started = time.perf_counter()
            self._frame = self._make_frame(snapshot)
            self._fan_out(self._frame)
            self.stats.published += 1
            self.stats.publish_s += time.perf_counter() - started
            await asyncio.sleep(self.min_interval_s)

    def _make_frame(self, snapshot: snapshot_pb2.SiteSnapshot) -> bytes:
        self._note_events(snapshot)
        self._key = (snapshot.run_id, snapshot.step, snapshot.state, len(snapshot.deviations))
        view = snapshot_view(snapshot)
        view["seq"] = self.stats.published + 1  # viewers check that none is missing
        view["sent_at"] = time.time()  # wall clock: viewers measure their delay
        view["events"] = list(self.events)[:EVENTS_SHOWN]
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
        """The SSE body for one viewer: the reconnection delay, the latest frame at once,
        then each new one (and keep-alive comments)."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self._viewers.add(queue)
        try:
            yield b"retry: 2000\n\n"
            if self._frame is not None:
                yield self._frame
            while True:
                yield await queue.get()
        finally:
            self._viewers.discard(queue)
