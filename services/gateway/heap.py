"""Keep Python's cyclic garbage collector off the gateway's long-lived tables.

At a site's size the gateway holds ~6·10^5 long-lived objects (a record per point, the
DCGM line cache, the host table), created as each point is first seen. Every full
collection walks all of them: 0.5-1.6 s in which no page is read and no value sent, a few
times a minute, which was most of the field -> bus p99. ``gc.freeze`` moves every tracked
object into the permanent generation, which collections skip; the objects still die by
reference counting. Freezing also keeps any cyclic garbage alive, so it happens only
while the tables grow (start-up, a new device), not at every tick: the steady gateway
makes no cyclic garbage (its full collections found none) and the rare cycle made
later (an exception's traceback) is collected as usual.

The frozen tables no longer count as long-lived, so the collector's rule for a full
collection (a quarter more objects than survived the last one) fires every few seconds
on what a scrape leaves behind: at Fairwater size 68 full collections in two minutes,
71 ms each and up to 0.49 s, the event loop's longest stalls. ``relax`` raises the
thresholds: young collections every ``young`` allocations instead of 700 (a DCGM page
allocates a few thousand short-lived tuples, which then die by reference counting
before a collection walks them) and a full one only every ``full`` middle ones.
"""

from __future__ import annotations

import gc

YOUNG, MIDDLE, FULL = 20_000, 10, 100  # CPython's defaults: 700, 10, 10


def relax(young: int = YOUNG, middle: int = MIDDLE, full: int = FULL) -> tuple[int, int, int]:
    """Collect less often (the gateway's steady state makes almost no cyclic garbage,
    the only kind the collector is needed for); the thresholds it replaced."""
    before = gc.get_threshold()
    gc.set_threshold(young, middle, full)
    return before


class FrozenHeap:
    def __init__(self, growth: float = 0.05) -> None:
        self.growth = growth
        self.frozen_size = 0  # the table size at the last freeze
        self.freezes = 0

    def settle(self, size: int) -> bool:
        """Freeze when the tables (``size``: their entries) grew by more than ``growth``
        since the last freeze; True when it froze."""
        if size <= self.frozen_size * (1 + self.growth):
            return False
        gc.freeze()
        self.frozen_size, self.freezes = size, self.freezes + 1
        return True
