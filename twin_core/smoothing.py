"""GB300-style rack power smoothing: a power floor, a ramp limit and a managed store.

As NVIDIA describes it ("How New GB300 NVL72 Features Provide Steady Power for AI",
NVIDIA technical blog, 2025; the NVML power-smoothing profile: a floor as a percentage
of the GPUs' power, ramp-up and ramp-down rates in W/s), a rack holds its draw from the
grid steady through a training job's compute/communication swings three ways:

- the **power floor**: the GPUs never burn less than the floor (they burn the
  difference as heat);
- the **energy store** in the power shelves charges in the low phases and discharges in
  the high ones, so the grid sees the job's mean rather than its phases;
- the **ramp limit**: the draw from the grid moves by at most the ramp rate; where the
  store is full and the load falls, the GPUs burn the surplus (the blog's end-of-job
  ramp-down) so the down ramp holds too.

The store's controller steers its state of charge back to a target between swings:
the draw aims at a running mean of the burnt power (time constant ``recentre_s``) plus
the state-of-charge error returned over that same time, ramp-limited. It keeps a reserve:
when the store holds just enough to ride the gap between the draw and the recent peak
load while the draw ramps there at the limit (gap^2 / 2 ramp, the triangle under a
ramp), the draw moves towards it now (never past it), so a held limit never leaves the
store short at the next high phase; likewise towards the load when the store is nearly
full.

It cannot hold the up ramp when the store runs empty (or at its power limit) before the
draw has caught up: a swing S held for half a period T/2 needs about S T/4 (a 50 % duty
square wave; S D (1 - D) T at duty D) of store, plus the reserve S^2 / 2 ramp, plus a
job's start-up step. Those steps count as ``unheld``; the draw then follows the load.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Float

from twin_core.pytree import Array

NO_RAMP_LIMIT = 1e11  # W per step: a ramp limit at or above this is "none" (smoothing off)
RAMP_SLACK = 1e-9  # relative: a draw step within this of the limit still holds it


def smooth(
    floor_w: Float[Array, "#R #C"],
    ramp_w: Float[Array, "#R #C"],  # per step
    storage_max_j: Float[Array, "#R #C"],
    storage_power_w: Float[Array, "#R #C"],
    target_soc: Float[Array, "#R #C"],
    recentre_alpha: Float[Array, "#R #C"],
    demand_w: Float[Array, "R C"],
    draw_w: Float[Array, "R C"],
    stored_j: Float[Array, "R C"],
    mean_w: Float[Array, "R C"],
    peak_w: Float[Array, "R C"],
    dt: float,
):
    """One step of every rack's smoothing: (new draw, burnt power, stored energy, running
    mean, running peak, True where the up ramp could not be held). ``demand_w`` is what
    the rack's parts ask for; the others are the previous step's values (DC, W and J)."""
    burnt = jnp.maximum(demand_w, floor_w)
    mean = mean_w + recentre_alpha * (burnt - mean_w)
    # the recent peak load, decaying to the mean: what the next high phase will ask for
    peak = jnp.maximum(burnt, peak_w + recentre_alpha * (mean - peak_w))
    managed = storage_max_j > 0.0
    # Aim: the running mean, plus the state-of-charge error returned over the recentring
    # time (a share alpha of it this step, so a long step cannot overshoot).
    recentre = (target_soc * storage_max_j - stored_j) * recentre_alpha / dt
    aim = jnp.where(managed, mean + recentre, burnt)
    lo, hi = draw_w - ramp_w, draw_w + ramp_w
    draw = jnp.clip(aim, lo, hi)

    # Reserve: with the draw ramping to the (peak) load at the limit from here, the store
    # rides the gap's triangle, gap^2 / (2 ramp rate); ramp now while it still can.
    rate = ramp_w / dt
    after = stored_j + (draw - burnt) * dt
    short = jnp.maximum(peak - draw, 0.0)
    over = jnp.maximum(draw - burnt, 0.0)
    need_up = short * short / (2.0 * rate)
    need_down = over * over / (2.0 * rate)
    # (towards the load as fast as the limit allows, never past it)
    draw = jnp.where(managed & (after < need_up), jnp.maximum(draw, jnp.minimum(hi, peak)), draw)
    full = managed & (storage_max_j - after < need_down)
    draw = jnp.where(full, jnp.minimum(draw, jnp.maximum(lo, burnt)), draw)

    # The store's limits: empty (or at its power) the draw must rise to the load; full,
    # the GPUs burn what it cannot take.
    give = jnp.minimum(stored_j / dt, storage_power_w)
    take = jnp.minimum((storage_max_j - stored_j) / dt, storage_power_w)
    draw = jnp.maximum(draw, burnt - give)
    burnt = burnt + jnp.maximum(draw - burnt - take, 0.0)
    stored = stored_j + (draw - burnt) * dt
    unheld = draw - draw_w > ramp_w * (1.0 + RAMP_SLACK)
    return draw, burnt, stored, mean, peak, unheld
