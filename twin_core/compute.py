"""Compute: GPUs, Grace CPUs, switch trays and power shelves of every rack.

Arrays are laid out (R, C) per rack (rack slot, CDU) and (R, C, G) per GPU, padded with
``mask``; at rack granularity G = 1 and that GPU stands for the rack's mean GPU. Per-rack
properties shared by every rack are stored once, (1, 1) (``#R #C``), and broadcast.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jaxtyping import Float, Int

from twin_core import long_step, phases, smoothing
from twin_core.curves import loss, output_for_input
from twin_core.fusion import computed_once
from twin_core.pytree import Array, pytree


@pytree
class ComputeParams:
    mask: Float[Array, "R C"]  # 1 for a real rack
    gpus: Float[Array, "R C"]  # GPUs in the rack
    gpu_idle_w: Float[Array, "#R #C"]
    gpu_span_w: Float[Array, "#R #C"]  # TDP - idle
    fixed_dc_w: Float[Array, "#R #C"]  # switches, other, CPU idle
    cpu_span_w: Float[Array, "#R #C"]  # all CPUs max - idle (CPU load follows GPU load)
    liquid_fraction: Float[Array, "#R #C"]
    peak_pflops: Float[Array, "#R #C"]  # per GPU
    psu_loss: Float[Array, "#R #C 3"]  # loss = l0 + l1 P + l2 P^2
    rack_max_ac_w: Float[Array, "R C"]  # AC input at full load, the 100 % power-cap point
    coolant_c_w_per_k: Float[Array, "#R #C"]  # rack coolant capacity rate, m_dot * cp
    r_die: Float[Array, "#R #C G"]  # K/W
    die_decay: Float[Array, "#R #C G"]  # exp(-dt / (R C))
    die_tau_s: Float[Array, "#R #C G"]  # R C, for long steps
    coolant_position: Float[Array, "#R #C G"]  # share of the rack's coolant rise before the GPU
    throttle_start_c: Float[Array, "#R #C"]
    throttle_span_c: Float[Array, "#R #C"]
    min_clock: Float[Array, "#R #C"]
    floor_w: Float[Array, "#R #C"]  # smoothing power floor, 0 where off
    ramp_w: Float[Array, "#R #C"]  # smoothing ramp limit per step (W), huge where off
    storage_j: Float[Array, "#R #C"]  # smoothing energy storage, 0 where off
    storage_power_w: Float[Array, "#R #C"]  # the store's charge/discharge power limit
    target_soc: Float[Array, "#R #C"]  # the state of charge steered to between swings
    recentre_alpha: Float[Array, "#R #C"]  # 1 - exp(-dt / recentring time constant)
    workload_of_rack: Int[Array, "R C"]  # index into the workload vector; last = idle
    job_period_s: Float[Array, " J"]
    job_compute_s: Float[Array, " J"]  # compute part of an iteration
    job_compute_util: Float[Array, " J"]
    job_comm_util: Float[Array, " J"]
    job_ckpt_every_s: Float[Array, " J"]
    job_ckpt_s: Float[Array, " J"]
    job_ckpt_util: Float[Array, " J"]
    job_start_s: Float[Array, " J"]
    # The phases of each job's iteration (phases.py), (J * MAX_PHASES,) flat.
    job_phase_high: Float[Array, " JK"]
    job_phase_share: Float[Array, " JK"]
    job_phase_weight: Float[Array, " JK"]
    gpu_weight: Float[Array, "R C G"]  # GPUs each element stands for (rack level: all; 0 = pad)
    operator_cap_w: Float[Array, "#R #C"]  # per-rack caps set by an operator; (1, 1): "none"
    # Racks of one CDU each element stands for, and CDUs each column stands for: 1 and 1
    # for the full layout; more once identical racks and CDUs are merged (compress.py).
    rack_count: Float[Array, "#R #C"]
    cdu_count: Float[Array, " #C"]


@pytree
class ComputeState:
    die_c: Float[Array, "R C G"]
    dc_out_w: Float[Array, "R C"]  # power drawn from the power shelves after smoothing
    storage_j: Float[Array, "R C"]  # smoothing storage energy
    mean_w: Float[Array, "R C"]  # the smoothing controller's running mean of the burnt power
    peak_w: Float[Array, "R C"]  # and its running peak (smoothing.py)
    job_clock_s: Float[Array, " J"]  # time since job start, wrapped at the iteration period
    ckpt_clock_s: Float[Array, " J"]  # time since the last checkpoint began


@pytree
class ComputeInputs:
    tcs_supply_c: Float[Array, " C"]  # from cooling
    rack_cap_w: Float[Array, "R C"]  # from power
    inference_util: Float[Array, " P"]  # from the drivers
    it_scale: Float[Array, ""]  # from the drivers: scales every workload's utilization


@pytree
class ComputeOutputs:
    rack_ac_w: Float[Array, "R C"]  # IT power at the rack inputs
    ac_total_w: Float[Array, ""]  # their sum
    heat_liquid_w: Float[Array, " C"]  # heat into each CDU's technology cooling loop
    heat_air_w: Float[Array, ""]  # heat into the room air
    rack_outlet_mean_c: Float[Array, ""]
    gpu_temp_max_c: Float[Array, ""]
    gpu_temp_mean_c: Float[Array, ""]
    throttled_gpus: Float[Array, ""]  # GPUs running below 99 % of their clock
    above_throttle: Float[Array, ""]  # 1 while any GPU die is above its throttle start
    delivered_pflops: Float[Array, ""]
    gpu_power_w: Float[Array, ""]  # all GPUs
    residual_w: Float[Array, ""]  # AC in - heat - d(storage)/dt
    storage_w: Float[Array, ""]  # d(rack storage)/dt, site total
    ramp_unheld: Float[Array, ""]  # share of the smoothed racks whose ramp limit broke


FOLD_ROWS = 64  # rack slots per CDU up to which a per-CDU reduction is unrolled


def fold_racks(x: Float[Array, "R C"], op=jnp.add) -> Float[Array, " C"]:
    """``x`` reduced over its rack slots (axis 0) with ``op``, one slot after another.

    The same additions in the same order as XLA's reduction, but written as whole-row
    elementwise operations they are vectorised across the CDUs; XLA's CPU reduction over
    a leading axis adds element by element (17 of ~100 µs of a Fairwater step)."""
    if x.shape[0] > FOLD_ROWS:
        return jnp.sum(x, axis=0) if op is jnp.add else jnp.max(x, axis=0)
    acc = x[0]
    for i in range(1, x.shape[0]):
        acc = op(acc, x[i])
    return acc


def workload_utilization(
    p: ComputeParams, s: ComputeState, inference_util: Float[Array, " P"], dt: float
) -> Float[Array, " W"]:
    """Utilization of each workload over the step: W = J training jobs (their phases
    integrated over [t, t + dt]), then P inference pools, then idle."""
    in_ckpt = s.ckpt_clock_s >= p.job_ckpt_every_s - p.job_ckpt_s  # last part of each interval
    train = phases.mean_utilization(
        p.job_period_s,
        p.job_compute_s,
        p.job_compute_util,
        p.job_comm_util,
        p.job_phase_high,
        p.job_phase_share,
        p.job_phase_weight,
        s.job_clock_s,
        dt,
    )
    train = jnp.where(in_ckpt & (s.job_clock_s >= 0.0), p.job_ckpt_util, train)
    idle = jnp.zeros((1,), train.dtype)
    return jnp.concatenate([train, inference_util.astype(train.dtype), idle])


@pytree
class StepUtilization:
    """A long step's view of each workload (W): the mean utilization over the step, and
    the two phases of its periodic cycle (``high`` held for ``high_s``, ``low`` for
    ``low_s``; equal for a workload without one) and a checkpoint level (0 if none in the
    step) from which the hottest die temperature follows."""

    mean: Float[Array, " W"]
    high: Float[Array, " W"]
    low: Float[Array, " W"]
    high_s: Float[Array, " W"]
    low_s: Float[Array, " W"]
    ckpt: Float[Array, " W"]
    high_share: Float[Array, " W"]  # share of the step's active time in the high phase


def step_utilization(
    p: ComputeParams, s: ComputeState, inference_util: Float[Array, " P"], dt: float
) -> StepUtilization:
    """Utilization of each workload averaged over a long step [t, t + dt]: the time in
    each phase of a training job (compute, communication, checkpoint) integrated exactly,
    a checkpoint overriding whichever phase it falls in."""
    start, end = jnp.maximum(s.job_clock_s, 0.0), jnp.maximum(s.job_clock_s + dt, 0.0)
    active = end - start
    window = long_step.time_in_window
    compute = window(end, p.job_period_s, 0.0, p.job_compute_s) - window(
        start, p.job_period_s, 0.0, p.job_compute_s
    )
    every, ck = p.job_ckpt_every_s, p.job_ckpt_s
    c0 = jnp.maximum(s.ckpt_clock_s, 0.0)
    c1 = jnp.maximum(s.ckpt_clock_s + dt, 0.0)
    in_ckpt = window(c1, every, every - ck, ck) - window(c0, every, every - ck, ck)
    share = compute / jnp.maximum(active, 1e-9)  # of the active time, in compute
    rest = active - in_ckpt
    train = (
        p.job_ckpt_util * in_ckpt
        + rest * (share * p.job_compute_util + (1.0 - share) * p.job_comm_util)
    ) / dt
    on = active > 0.0
    hot_compute = p.job_compute_util >= p.job_comm_util
    high = jnp.where(on, jnp.maximum(p.job_compute_util, p.job_comm_util), 0.0)
    low = jnp.where(on, jnp.minimum(p.job_compute_util, p.job_comm_util), 0.0)
    high_s = jnp.where(hot_compute, p.job_compute_s, p.job_period_s - p.job_compute_s)
    ckpt = jnp.where(in_ckpt > 0.0, p.job_ckpt_util, 0.0)
    high_share = jnp.where(hot_compute, share, 1.0 - share) * (rest / jnp.maximum(active, 1e-9))
    rest_w = jnp.concatenate([inference_util.astype(train.dtype), jnp.zeros((1,), train.dtype)])
    ones = jnp.ones_like(rest_w)
    return StepUtilization(
        mean=jnp.concatenate([train, rest_w]),
        high=jnp.concatenate([high, rest_w]),
        low=jnp.concatenate([low, rest_w]),
        high_s=jnp.concatenate([high_s, ones]),
        low_s=jnp.concatenate([p.job_period_s - high_s, ones]),
        ckpt=jnp.concatenate([ckpt, 0.0 * ones]),
        high_share=jnp.concatenate([high_share, 0.0 * ones]),
    )


def scaled(su: StepUtilization, it_scale) -> StepUtilization:
    """``su`` with every utilization level multiplied by ``it_scale``."""
    return StepUtilization(
        mean=su.mean * it_scale,
        high=su.high * it_scale,
        low=su.low * it_scale,
        high_s=su.high_s,
        low_s=su.low_s,
        ckpt=su.ckpt * it_scale,
        high_share=su.high_share,
    )


def of_racks(
    workload_of_rack: Int[Array, "R C"], per_workload: Float[Array, " W"]
) -> Float[Array, "R C"]:
    """Each rack's entry of a per-workload vector. A one-hot contraction, not a gather: XLA
    on a CPU fuses the vector's few-element computation into a gather and recomputes it
    for every rack (measured: 45 of 115 µs of Fairwater's every-rack step); a dot keeps
    it computed once. Exact: every rack sums one product by 1 and zeros. A rack whose index
    is past the vector (an idle rack, for a vector of the jobs only) gets 0."""
    hot = workload_of_rack[..., None] == jnp.arange(per_workload.shape[-1])
    return jnp.einsum("rcw,w->rc", hot.astype(per_workload.dtype), per_workload)


def peak_utilization(p: ComputeParams, su: StepUtilization) -> Float[Array, "R C G"]:
    """The utilization whose steady die temperature is the peak of each die's periodic
    cycle: a first-order node driven high for a, low for b peaks at
    low + (high - low) (1 - e^(-a/tau)) / (1 - e^(-(a+b)/tau))."""
    w = p.workload_of_rack
    tau = p.die_tau_s
    xa = jnp.exp(-of_racks(w, su.high_s)[..., None] / tau)
    xb = jnp.exp(-of_racks(w, su.low_s)[..., None] / tau)
    k = (1.0 - xa) / jnp.maximum(1.0 - xa * xb, 1e-12)
    low = of_racks(w, su.low)[..., None]
    periodic = low + (of_racks(w, su.high)[..., None] - low) * k
    return jnp.maximum(periodic, of_racks(w, su.ckpt)[..., None])


@pytree
class HeatSwing:
    """How the heat into the cooling swings with the training jobs' compute/communication
    cycle, for a long step's cooling (cooling.py) and power (power.py): per CDU column the
    liquid heat of the high phase above the low one, the same for the room air and the
    rack AC input (site totals), and the share of time in the high phase (swing-weighted
    over the jobs). At full clock and no cap."""

    liquid_w: Float[Array, " C"]
    air_w: Float[Array, ""]
    share: Float[Array, ""]
    ac_w: Float[Array, ""]  # the site's rack AC input (the IT power), PSU losses included


def heat_swing(p: ComputeParams, t, it_scale) -> HeatSwing:
    """The swing of the jobs running at time ``t`` (site seconds), their utilization
    scaled by ``it_scale``; the burnt power is held at the smoothing floor where there is
    one, as ``step`` holds it."""
    running = t >= p.job_start_s
    high = jnp.where(running, jnp.maximum(p.job_compute_util, p.job_comm_util), 0.0) * it_scale
    low = jnp.where(running, jnp.minimum(p.job_compute_util, p.job_comm_util), 0.0) * it_scale
    high_s = jnp.where(
        p.job_compute_util >= p.job_comm_util, p.job_compute_s, p.job_period_s - p.job_compute_s
    )
    w = p.workload_of_rack
    gpus = jnp.sum(p.gpu_weight, axis=-1)

    def burnt(u):
        dc = p.fixed_dc_w + p.cpu_span_w * u + p.gpus * p.gpu_idle_w + p.gpu_span_w * u * gpus
        return jnp.maximum(dc, p.floor_w)

    # Vectors of the jobs only: inference pools and idle racks (past J) get 0, no swing.
    high_dc, low_dc = burnt(of_racks(w, high)), burnt(of_racks(w, low))
    swing = (high_dc - low_dc) * p.mask * p.rack_count  # (R, C)
    ac = high_dc + loss(p.psu_loss, high_dc) - low_dc - loss(p.psu_loss, low_dc)
    liquid = jnp.sum(p.liquid_fraction * swing, axis=0)
    air = jnp.sum((1.0 - p.liquid_fraction) * swing * p.cdu_count[None, :])
    share_r = of_racks(w, high_s / p.job_period_s)
    total = jnp.sum(swing * p.cdu_count[None, :])
    share = jnp.sum(swing * share_r * p.cdu_count[None, :]) / jnp.maximum(total, 1e-9)
    ac_w = jnp.sum(ac * p.mask * p.rack_count * p.cdu_count[None, :])
    return HeatSwing(liquid_w=liquid, air_w=air, share=share, ac_w=ac_w)


def thermal_clock(p: ComputeParams, die_c: Float[Array, "R C G"]) -> Float[Array, "R C G"]:
    """Clock fraction from die temperature: linear derating to ``min_clock`` over the band."""
    over = (die_c - p.throttle_start_c[..., None]) / p.throttle_span_c[..., None]
    theta = 1.0 - over * (1.0 - p.min_clock[..., None])
    return jnp.clip(theta, p.min_clock[..., None], 1.0)


def init(p: ComputeParams, tcs_supply_c: Float[Array, " C"], dtype) -> ComputeState:
    """Racks idle at t=0 with dies at coolant temperature plus their idle rise."""
    idle_gpu = p.gpu_idle_w[..., None]
    die = jnp.broadcast_to(tcs_supply_c[None, :, None] + p.r_die * idle_gpu, p.gpu_weight.shape)
    dc = jnp.maximum(p.fixed_dc_w + p.gpus * p.gpu_idle_w, p.floor_w) * p.mask
    clock = -p.job_start_s  # negative until the job starts
    return ComputeState(
        die_c=die.astype(dtype),
        dc_out_w=dc.astype(dtype),
        storage_j=(p.target_soc * p.storage_j * p.mask).astype(dtype),
        mean_w=dc.astype(dtype),
        peak_w=dc.astype(dtype),
        job_clock_s=clock.astype(dtype),
        ckpt_clock_s=clock.astype(dtype),
    )


def step(
    p: ComputeParams, s: ComputeState, x: ComputeInputs, dt: float
) -> tuple[ComputeState, ComputeOutputs]:
    long = long_step.is_averaged(dt)
    if long:  # phases averaged over the step (long_step.py)
        su = scaled(step_utilization(p, s, x.inference_util, dt), x.it_scale)
        util_w = su.mean
    else:
        util_w = workload_utilization(p, s, x.inference_util, dt) * x.it_scale
    u = of_racks(p.workload_of_rack, util_w)  # (R, C)
    theta_t = thermal_clock(p, s.die_c)  # (R, C, G)

    # Power cap: the dynamic GPU part scales by theta_c so that the rack's AC input stays
    # at or below its cap (PSU loss inverted exactly).
    base_dc = p.fixed_dc_w + p.cpu_span_w * u + p.gpus * p.gpu_idle_w
    dyn_dc = p.gpu_span_w * u * jnp.sum(p.gpu_weight * theta_t, axis=-1)
    cap = jnp.minimum(x.rack_cap_w, p.operator_cap_w)
    allowed_dc = output_for_input(p.psu_loss, cap, jnp)
    theta_c = jnp.clip((allowed_dc - base_dc) / jnp.maximum(dyn_dc, 1e-3), 0.0, 1.0)
    demand_dc = base_dc + dyn_dc * theta_c

    # Power smoothing (smoothing.py): floor and ramp-down surplus burnt in the GPUs (heat),
    # the swings ridden by the rack energy storage, its charge steered back between them.
    # Stored once: six kernels read its results, and fused into each it is a large share of
    # a step on a CPU (fusion.py).
    dc_out, burnt_dc, storage, mean_w, peak_w, unheld = computed_once(
        functools.partial(smoothing.smooth, dt=dt),
        p.floor_w, p.ramp_w, p.storage_j, p.storage_power_w, p.target_soc, p.recentre_alpha,
        demand_dc, s.dc_out_w, s.storage_j, s.mean_w, s.peak_w,
    )  # fmt: skip
    dc_out = dc_out * p.mask
    burnt_dc = burnt_dc * p.mask
    storage = storage * p.mask

    psu_loss = loss(p.psu_loss, dc_out)
    if long:  # a quadratic loss over a cycling load: the mean of P^2 exceeds the mean^2
        high_w = of_racks(p.workload_of_rack, su.high_share)
        per_util = (dyn_dc / jnp.maximum(u, 1e-9) * theta_c + p.cpu_span_w) * (u > 0.0)
        swing_dc = per_util * of_racks(p.workload_of_rack, su.high - su.low)
        psu_loss = psu_loss + p.psu_loss[..., 2] * swing_dc**2 * high_w * (1.0 - high_w)
    psu_loss = psu_loss * p.mask
    rack_ac = dc_out + psu_loss
    heat_liquid_rack = p.liquid_fraction * burnt_dc

    # Die temperatures: exact exponential step of C dT/dt = P - (T - T_coolant)/R.
    clock = theta_t * theta_c[..., None]
    floor_extra = (burnt_dc - demand_dc) / jnp.maximum(p.gpus, 1.0)
    gpu_w = p.gpu_idle_w[..., None] + p.gpu_span_w[..., None] * u[..., None] * clock
    gpu_w = gpu_w + floor_extra[..., None]
    rise = heat_liquid_rack / p.coolant_c_w_per_k
    coolant = x.tcs_supply_c[None, :, None] + p.coolant_position * rise[..., None]
    equilibrium = coolant + p.r_die * gpu_w
    decay = jnp.exp(-dt / p.die_tau_s) if long else p.die_decay
    die = equilibrium + (s.die_c - equilibrium) * decay
    hottest = die
    if long:  # the peak of each die's cycle over the step, above its mean-power level
        # equilibrium per unit of utilization: the die's own power and the coolant rise
        per_util_rise = p.liquid_fraction * per_util / p.coolant_c_w_per_k
        per_util_eq = p.r_die * p.gpu_span_w[..., None] * clock
        per_util_eq = per_util_eq + p.coolant_position * per_util_rise[..., None]
        # (the die itself where a step is short enough for it to follow the phases)
        peak_eq = equilibrium + per_util_eq * (peak_utilization(p, su) - u[..., None])
        hottest = jnp.maximum(die, peak_eq)

    weights = p.gpu_weight
    racks = p.rack_count * p.cdu_count[None, :]  # site racks each element stands for
    n_gpu = jnp.sum(p.gpus * racks)
    # One stacked reduction for every site total (fewer kernels per step on CPU).
    per_gpu = (
        jnp.stack(
            [
                weights * (clock < 0.99) * (u[..., None] > 0.0),
                weights * p.peak_pflops[..., None] * u[..., None] * clock,
                weights * gpu_w,
                weights * die,
            ]
        ).sum(axis=-1)
        * racks
    )
    outlet = (x.tcs_supply_c[None, :] + rise) * p.mask
    totals = jnp.sum(
        jnp.concatenate(
            [
                per_gpu,
                jnp.stack(
                    [
                        rack_ac,
                        heat_liquid_rack,
                        (1.0 - p.liquid_fraction) * burnt_dc + psu_loss,
                        storage - s.storage_j,
                        outlet,
                        unheld * p.mask,
                        (p.ramp_w < smoothing.NO_RAMP_LIMIT) * p.mask,
                    ]
                )
                * racks,
            ]
        ),
        axis=(1, 2),
    )
    throttled, pflops, gpu_power, die_sum, ac, liquid, heat_air, stored, outlet_sum = totals[:9]
    unheld_racks, smoothed_racks = totals[9:]
    residual = ac - liquid - heat_air - stored / dt

    if long:
        job_clock = long_step.wrap(s.job_clock_s, dt, p.job_period_s)
        ckpt_clock = long_step.wrap(s.ckpt_clock_s, dt, p.job_ckpt_every_s)
    else:
        job_clock = long_step.wrap(s.job_clock_s, dt, p.job_period_s)  # any iteration < dt
        ckpt_clock = s.ckpt_clock_s + dt
        ckpt_clock = jnp.where(
            ckpt_clock >= p.job_ckpt_every_s, ckpt_clock - p.job_ckpt_every_s, ckpt_clock
        )

    state = ComputeState(
        die_c=die,
        dc_out_w=dc_out,
        storage_j=storage,
        mean_w=mean_w,
        peak_w=peak_w,
        job_clock_s=job_clock,
        ckpt_clock_s=ckpt_clock,
    )
    masked_hottest = jnp.where(weights > 0, hottest, -jnp.inf)
    over_start = jnp.max(masked_hottest - p.throttle_start_c[..., None])
    out = ComputeOutputs(
        rack_ac_w=rack_ac,
        ac_total_w=ac,
        heat_liquid_w=fold_racks(heat_liquid_rack * p.rack_count),
        heat_air_w=heat_air,
        rack_outlet_mean_c=outlet_sum / jnp.sum(p.mask * racks),
        gpu_temp_max_c=jnp.max(fold_racks(jnp.max(masked_hottest, axis=-1), jnp.maximum)),
        gpu_temp_mean_c=die_sum / n_gpu,
        throttled_gpus=throttled,
        above_throttle=(over_start > 0.0).astype(ac.dtype),
        delivered_pflops=pflops,
        gpu_power_w=gpu_power,
        residual_w=residual,
        storage_w=stored / dt,
        ramp_unheld=unheld_racks / jnp.maximum(smoothed_racks, 1.0),
    )
    return state, out
