"""The clock's window of ticks in flight (services/clock.py ``_drive``), without a bus: at
most ``window`` ticks are sent ahead of the one awaited, each tick is sent once and
completed in order, a step stops exactly at its end, and ticks already sent when the run
stops going are completed before the driver returns."""

from __future__ import annotations

import asyncio

from services.clock import PIPELINE, Clock


class RecordingClock(Clock):
    """Sends nothing; answers each tick at once, recording how many were in flight."""

    def __init__(self) -> None:
        super().__init__(None, "small")  # type: ignore[arg-type]  # no bus: _send is replaced
        self.sent: list[int] = []
        self.completed: list[int] = []
        self.in_flight: list[int] = []

    async def _send(self, k: int) -> None:
        self._sent = max(self._sent, k)
        self.sent.append(k)

    async def _send_until_done(self, k: int) -> None:
        self.in_flight.append(self.sent[-1] - k + 1)
        self.completed.append(k)
        await asyncio.sleep(0)


def drive(end: int | None, window: int, stop_after: int | None = None, horizon=None):
    clock = RecordingClock()
    clock.horizon_steps = horizon

    def going() -> bool:
        return stop_after is None or len(clock.completed) < stop_after

    asyncio.run(clock._drive(end, window, going))
    return clock


def test_a_step_of_ten_ticks_keeps_the_window_full_and_ends_on_ten():
    clock = drive(10, PIPELINE)
    assert clock.sent == clock.completed == list(range(10))
    assert clock.step == 10
    # 4 in flight while there are 4 left to send, then the tail drains: 4, 4, ..., 3, 2, 1.
    assert clock.in_flight == [4] * 7 + [3, 2, 1]


def test_a_window_of_one_sends_each_tick_after_the_last_is_complete():
    clock = drive(5, 1)
    assert clock.sent == clock.completed == list(range(5)) and clock.in_flight == [1] * 5


def test_ticks_sent_before_the_run_stops_going_are_completed_and_no_more_sent():
    clock = drive(None, PIPELINE, stop_after=3, horizon=100)
    # Three completed while going, with ticks 3..5 already sent: those are completed too,
    # so the clock's step is where every domain is.
    assert clock.sent == clock.completed == list(range(6))
    assert clock.step == 6


def test_the_horizon_bounds_the_window():
    clock = drive(None, PIPELINE, horizon=3)
    assert clock.sent == clock.completed == [0, 1, 2] and clock.in_flight == [3, 2, 1]
