"""Turns: heavy work waits for its own event-loop iteration."""

from __future__ import annotations

import asyncio
import itertools

from services.gateway.turns import Turns


def test_one_waiter_a_loop_iteration_and_the_loop_runs_between():
    async def main() -> tuple[list[int], list[str]]:
        turns = Turns()
        iterations = 0
        seen: list[int] = []
        order: list[str] = []

        async def count() -> None:  # one step a loop iteration
            nonlocal iterations
            while True:
                iterations += 1
                await asyncio.sleep(0)

        async def page(name: str) -> None:
            await turns.wait()
            seen.append(iterations)
            order.append(name)

        counter = asyncio.create_task(count())
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(page(n)) for n in "abcd"]
        waiters[2].cancel()  # a cancelled waiter gives up its turn
        await asyncio.gather(*waiters, return_exceptions=True)
        counter.cancel()
        return seen, order

    seen, order = asyncio.run(main())
    assert order == ["a", "b", "d"]  # in the order they came
    # each in its own iteration: the loop ran (the counter stepped) between any two
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
