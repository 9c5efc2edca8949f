"""Site-level energy closure over a run, from the recorded series.

Each domain's own residual closes its balance within one coupling interval, so their sum
cannot see energy lost or double-counted between domains (a boundary value read one
interval too late or too early, a term one domain publishes and no other counts). The
site closure can: over the run, what came in at the meter left the site as heat or was
stored,

    meter = heat rejected by the cooling plant (dry coolers, chillers and their power,
            fans) + distribution, UPS and transformer losses + miscellaneous load
            + d/dt (heat in the TCS and facility loops) + d/dt (rack smoothing storage).

The Jacobi coupling delays each boundary value by one interval, which shifts energy by
at most one interval's change of the flows at the two ends of the run: the residual of a
correct run is that end term, tiny beside the run's energy; a lag that loses or repeats
an interval's energy shows in it (tests/test_closure.py shifts a series to show it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IN = ("facility_w",)
OUT = ("heat_rejected_w", "losses_w", "misc_w", "heat_stored_w", "rack_storage_w")


def site_closure_j(means: Mapping[str, Any], record_s: float) -> Any:
    """Energy in at the meter minus heat out and stored, over the run (J, signed);
    ``means`` the recorded interval means (JAX or NumPy arrays alike)."""

    def energy(names):
        return sum(means[n].sum() for n in names) * record_s

    return energy(IN) - energy(OUT)
