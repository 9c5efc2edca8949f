"""How many threads XLA's CPU client gives a process's compiled steps.

XLA splits a large elementwise kernel over its CPU thread pool (up to one task per core,
by its cost estimate) and runs independent kernels side by side. For steps over a few
thousand elements (a domain service's tick, a rollout at rack granularity) the hand-offs
between threads cost more than they save, and on a machine shared with other work they
make a run's speed depend on whether the other core is free. Measured on the 2-core
machine, median of five 1 h every-rack Fairwater rollouts, nine processes each: one
thread 32-46 µs a step (median 34), the default pool 33-68 µs (median 40); a cooling
service's step call 52-91 µs against 85-124 µs. Per-GPU arrays (207,360 elements) and
what-if batches are the other way round (a per-GPU step 219-251 µs with the pool, 371-385
µs without), so those keep the default.

``PJRT_NPROC`` sizes that pool when JAX's CPU client starts (and XLA's cost model takes it
as the number of cores), so this is called before any array exists; an operator's own
setting stands.
"""

from __future__ import annotations

import os

VARIABLE = "PJRT_NPROC"


def use_one_thread() -> None:
    """This process's XLA CPU kernels on one thread, unless ``PJRT_NPROC`` is set."""
    os.environ.setdefault(VARIABLE, "1")
