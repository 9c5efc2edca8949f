"""One waiter a loop iteration: fairness between heavy work and the rest of the loop.

When the gateway falls behind (a starved CPU, the first scan of a site's ~10^5 points),
every DCGM poller's timer has expired at once, and asyncio runs all their ready
callbacks in one loop iteration before it looks at its sockets again: parsing 240
pages back to back held a tick, or a stats request, for a minute. Through ``Turns``,
each page waits for its own iteration, and the loop reads its sockets (ticks, stats,
BMS messages) between two pages.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    def __init__(self) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    async def wait(self) -> None:
        """Return in a later loop iteration than any earlier waiter's."""
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._next, loop)
        await turn

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        # The waiter resumes in the next iteration; so does the following call, which
        # lets the next one through the iteration after.
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():  # a cancelled waiter gives up its turn
                turn.set_result(None)
                break
        if self._waiters:
            loop.call_soon(self._next, loop)
        else:
            self._scheduled = False
