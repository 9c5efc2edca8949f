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
"""

from __future__ import annotations

import gc


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
