"""Where a capacity search should look first: the continuous relaxation of the planned
count.

After compression (compress.py) the planned racks' full CDUs are one representative
weighted by ``cdu_count``, a float in every site total. Treating that weight as a
continuous variable ``k`` (racks = ``k * racks_per_cdu``), one forward-mode pass
(``jax.jvp``) through the whole rollout gives every KPI and its derivative in ``k``;
a Newton step from there predicts the count at which each constraint reaches its limit.
The prediction only places the search's first batched round; the answer always comes
from simulated whole counts.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twin_core import kpis as kpi_mod
from twin_core.capacity_sites import split_count, variant_site
from twin_core.compress import compress
from twin_core.coupling import init_state
from twin_core.drivers import load_drivers
from twin_core.params import Params, build_params
from twin_core.pytree import replace
from twin_core.rollout import _run, _unpack, plan
from twin_core.site import Site

# Constraint -> (KPI, +1 when the limit is an upper bound, -1 a lower one).
KPIS = {
    "gpu_temp": ("max_gpu_temp_c", 1.0),
    "interconnect": ("peak_facility_mw", 1.0),
    "grid_ramp": ("max_grid_ramp_mw_per_s", 1.0),
    "cap_depth": ("min_cap_fraction", -1.0),
}


def _params(site: Site, horizon_s: float, dt: float, dtype) -> Params:
    p = build_params(site, load_drivers(site), horizon_s=horizon_s, dt=dt, dtype=dtype, host=True)
    return compress(p)


def _with_cdus(p: Params, j: int, k) -> Params:
    """``p`` with column ``j`` standing for ``k`` CDUs in every total that counts it."""
    column = jnp.arange(jnp.shape(p.cooling.cdu_count)[0]) == j
    cdu = jnp.where(column, k, jnp.asarray(p.compute.cdu_count))
    cooling_cdu = jnp.where(column, k, jnp.asarray(p.cooling.cdu_count))
    racks = jnp.asarray(p.compute.rack_count)
    weight = jnp.where(column[None, :], racks * k, jnp.asarray(p.power.rack_weight))
    return replace(
        p,
        compute=replace(p.compute, cdu_count=cdu),
        cooling=replace(p.cooling, cdu_count=cooling_cdu),
        power=replace(p.power, rack_weight=weight),
    )


@partial(jax.jit, static_argnames=("j", "n_records", "every", "record_s"))
def _values_and_slopes(p: Params, k0, j: int, n_records: int, every: int, record_s: float):
    """The constraint KPIs at ``k0`` planned CDUs (column ``j``) and their derivatives in
    the CDU count, by one forward-mode pass through the rollout."""

    def kpis(k):
        q = _with_cdus(p, j, k)
        final, (means, maxes) = _run(q, init_state(q), n_records, every)
        m, mx = _unpack(means, maxes)
        table = kpi_mod.kpi_table(m, mx, final, record_s)
        return {name: table[kpi] for name, (kpi, _) in KPIS.items()}

    return jax.jvp(kpis, (k0,), (jnp.ones_like(k0),))


def predicted_count(
    site: Site,
    mix: dict[str, float],
    racks_per_cdu: int,
    overrides: dict[str, Any],
    limits: dict[str, float],
    *,
    horizon_s: float,
    dt: float,
    record_s: float | None,
    dtype,
) -> float | None:
    """The planned count (racks) where the first constraint of ``limits`` (constraint
    -> limit) is predicted to cross, from the KPIs and their slopes at one CDU of planned
    racks; None when the relaxation does not apply (a mix of types) or no constraint
    moves towards its limit."""
    if len(mix) != 1:
        return None
    one, two = racks_per_cdu, 2 * racks_per_cdu
    a = _params(
        variant_site(site, split_count(one, mix), racks_per_cdu, overrides), horizon_s, dt, dtype
    )
    b = _params(
        variant_site(site, split_count(two, mix), racks_per_cdu, overrides), horizon_s, dt, dtype
    )
    ca, cb = np.asarray(a.cooling.cdu_count), np.asarray(b.cooling.cdu_count)
    if ca.shape != cb.shape:
        return None
    moved = np.flatnonzero(ca != cb)
    if len(moved) != 1 or cb[moved[0]] - ca[moved[0]] != 1.0:
        return None
    j = int(moved[0])
    n_records, every = plan(horizon_s, dt, record_s)
    k0 = jnp.asarray(float(ca[j]), jnp.asarray(a.cooling.cdu_count).dtype)
    values, slopes = _values_and_slopes(jax.device_put(a), k0, j, n_records, every, every * dt)
    crossings = []
    for name, limit in limits.items():
        sense = KPIS[name][1]
        gap = sense * (limit - float(values[name]))  # room left, in the KPI's unit
        slope = sense * float(slopes[name])  # how fast a CDU of racks uses it
        if slope > 0 and np.isfinite(gap):
            crossings.append(float(ca[j]) + gap / slope)
    if not crossings:
        return None
    return max(0.0, min(crossings) * racks_per_cdu)
