"""Power: the electrical chain from the grid meter to the rack inputs, and power capping.

Meter = IT + distribution (busway/PDU, I^2R) + UPS loss (three-term curve) + cooling +
miscellaneous + transformer loss (no-load + load^2). When the meter would exceed the
interconnect limit (less failed feeders), the supply limit from energy, or an operator IT
cap, an integral controller lowers a site-wide cap fraction that compute applies to every
rack's maximum AC input.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Float

from twin_core.curves import loss
from twin_core.long_step import is_long
from twin_core.pytree import Array, pytree


@pytree
class PowerParams:
    rack_max_ac_w: Float[Array, "R C"]
    rack_weight: Float[Array, "#R #C"]  # site racks each element stands for
    it_design_w: Float[Array, ""]  # sum of rack_max_ac_w
    dist_loss_coeff: Float[Array, ""]  # per W^2: loss = coeff * P^2
    ups_loss: Float[Array, " 3"]
    xfmr_rating_va: Float[Array, ""]
    xfmr_no_load_w: Float[Array, ""]
    xfmr_load_loss_w: Float[Array, ""]  # at rated load
    power_factor: Float[Array, ""]
    misc_fixed_w: Float[Array, ""]
    misc_fraction: Float[Array, ""]
    interconnect_w: Float[Array, ""]
    feeders: Float[Array, ""]
    it_cap_w: Float[Array, ""]  # operator IT cap (huge when none)
    cap_gain: Float[Array, ""]
    cap_min: Float[Array, ""]
    hp_alpha: Float[Array, ""]  # high-pass (0.1 Hz) coefficient for the meter band filter
    lp_alpha: Float[Array, ""]  # low-pass (2 Hz) coefficient


@pytree
class PowerState:
    cap_fraction: Float[Array, ""]
    meter_w: Float[Array, ""]  # last meter reading, for the ramp rate
    hp_in: Float[Array, ""]  # band filter states
    hp_out: Float[Array, ""]
    lp_out: Float[Array, ""]


@pytree
class PowerInputs:
    rack_ac_w: Float[Array, "R C"]  # from compute
    cooling_w: Float[Array, ""]  # from cooling
    supply_limit_w: Float[Array, ""]  # from energy
    feeders_up: Float[Array, ""]  # failures
    # long steps only: the IT power's swing with the jobs' phases (compute.HeatSwing)
    it_swing_w: Float[Array, ""]
    swing_share: Float[Array, ""]


@pytree
class PowerOutputs:
    meter_w: Float[Array, ""]
    it_w: Float[Array, ""]
    losses_w: Float[Array, ""]  # distribution + UPS + transformers
    misc_w: Float[Array, ""]
    rack_cap_w: Float[Array, "R C"]
    cap_fraction: Float[Array, ""]
    limit_w: Float[Array, ""]
    ramp_w_per_s: Float[Array, ""]  # |d meter / dt|
    band_w: Float[Array, ""]  # meter power in the 0.1-2 Hz band (resolvable part)
    residual_w: Float[Array, ""]


def meter_power(p: PowerParams, it_w, cooling_w):
    """Meter demand and its parts for an IT load and a cooling load (W)."""
    dist = p.dist_loss_coeff * it_w**2
    ups_out = it_w + dist
    ups = loss(p.ups_loss, ups_out)
    misc = p.misc_fixed_w + p.misc_fraction * it_w
    through = ups_out + ups + cooling_w + misc
    load = through / p.power_factor / p.xfmr_rating_va
    xfmr = p.xfmr_no_load_w + p.xfmr_load_loss_w * load**2
    return through + xfmr, dist + ups + xfmr, misc


def init(p: PowerParams, meter_w, dtype) -> PowerState:
    zero = jnp.asarray(0.0, dtype)
    return PowerState(
        cap_fraction=jnp.asarray(1.0, dtype),
        meter_w=jnp.asarray(meter_w, dtype),
        hp_in=jnp.asarray(meter_w, dtype),
        hp_out=zero,
        lp_out=zero,
    )


def step(
    p: PowerParams, s: PowerState, x: PowerInputs, dt: float
) -> tuple[PowerState, PowerOutputs]:
    it_w = jnp.sum(x.rack_ac_w * p.rack_weight)
    if is_long(dt):
        # The losses grow with the square of the load: over a step in which the IT power
        # swings with the jobs' phases, their mean is the phases' mean, not the mean's.
        w, swing = x.swing_share, x.it_swing_w
        high = meter_power(p, it_w + (1.0 - w) * swing, x.cooling_w)
        low = meter_power(p, it_w - w * swing, x.cooling_w)
        meter, losses, misc = (w * h + (1.0 - w) * lo for h, lo in zip(high, low, strict=True))
    else:
        meter, losses, misc = meter_power(p, it_w, x.cooling_w)
    grid_limit = p.interconnect_w * x.feeders_up / p.feeders
    limit = jnp.minimum(grid_limit, x.supply_limit_w)
    # Integral cap control, normalised by the design IT load; clipping is the anti-windup.
    error = jnp.minimum((limit - meter) / p.it_design_w, (p.it_cap_w - it_w) / p.it_design_w)
    cap = jnp.clip(s.cap_fraction + p.cap_gain * error, p.cap_min, 1.0)
    ramp = jnp.abs(meter - s.meter_w) / dt
    hp = p.hp_alpha * (s.hp_out + meter - s.hp_in)
    lp = s.lp_out + p.lp_alpha * (hp - s.lp_out)
    state = PowerState(cap_fraction=cap, meter_w=meter, hp_in=meter, hp_out=hp, lp_out=lp)
    out = PowerOutputs(
        meter_w=meter,
        it_w=it_w,
        losses_w=losses,
        misc_w=misc,
        rack_cap_w=cap * p.rack_max_ac_w,
        cap_fraction=cap,
        limit_w=limit,
        ramp_w_per_s=ramp,
        band_w=lp,
        residual_w=meter - (it_w + x.cooling_w + misc + losses),
    )
    return state, out
