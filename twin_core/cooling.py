"""Cooling: CDU technology loops, the facility water loop, dry coolers and trim chillers.

Heat path: cold plates -> TCS loop of each CDU -> CDU plate heat exchanger (eps-NTU,
counterflow) -> facility water -> dry coolers (eps-NTU, crossflow, fan PI control) ->
trim chillers (DOE-2 EIR curves) when the dry coolers cannot reach the setpoint. The
chillers reject their condenser heat to the outdoor air (air-cooled) or to a condenser
water loop and cooling towers (water-cooled, tower.py).
The room's air heat reaches the facility water through air handlers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Float

from twin_core.constants import WATER_LATENT_J_PER_KG
from twin_core.curves import (
    biquadratic,
    eps_counterflow,
    eps_crossflow_unmixed,
    quadratic,
    wet_bulb_stull,
)
from twin_core.long_step import is_long, relax
from twin_core.pytree import Array, pytree
from twin_core.tower import make_up_water, tower


@pytree
class CoolingParams:
    cdu_mask: Float[Array, " C"]
    cdu_ua: Float[Array, " C"]  # W/K
    tcs_c: Float[Array, " C"]  # TCS capacity rate, W/K
    tcs_heat_capacity: Float[Array, " C"]  # loop fluid M*cp, J/K
    tcs_pump_w: Float[Array, " C"]  # CDU pump electrical power
    cdu_count: Float[Array, " #C"]  # CDUs each column stands for (compress.py)
    fws_c_per_pump: Float[Array, ""]  # facility water capacity rate per duty pump, W/K
    fws_heat_capacity: Float[Array, ""]  # J/K
    fws_pump_w: Float[Array, ""]  # electrical power per running pump
    pumps: Float[Array, ""]  # installed facility pumps
    duty_pumps: Float[Array, ""]  # pumps needed for design flow
    supply_c: Float[Array, ""]  # facility water supply setpoint
    dc_units: Float[Array, ""]
    dc_ua: Float[Array, ""]  # per unit at full fan speed
    dc_air_c: Float[Array, ""]  # air capacity rate per unit at full speed, W/K
    dc_fan_w: Float[Array, ""]  # per unit at full speed
    dc_min_speed: Float[Array, ""]
    dc_ua_exponent: Float[Array, ""]
    adiabatic: Float[Array, ""]  # 1 when adiabatic pre-cooling is fitted
    adiabatic_threshold_c: Float[Array, ""]
    pad_effectiveness: Float[Array, ""]
    ch_units: Float[Array, ""]
    ch_capacity_w: Float[Array, ""]  # reference capacity per unit
    ch_cop: Float[Array, ""]
    capft: Float[Array, " 6"]
    eirft: Float[Array, " 6"]
    eirfplr: Float[Array, " 3"]
    ch_min_plr: Float[Array, ""]
    curve_leaving_c: Float[Array, " 2"]  # fitted range of the curves' first variable
    curve_condenser_c: Float[Array, " 2"]  # and of the second
    curve_plr: Float[Array, " 2"]  # and of EIRFPLR's part-load ratio
    # Water-cooled chillers: condenser water loop and cooling towers (0/1 and per cell).
    water_cooled: Float[Array, ""]
    ct_cells: Float[Array, ""]
    ct_heat_w: Float[Array, ""]  # per cell at full speed and the design approach
    ct_approach_k: Float[Array, ""]
    ct_wet_bulb_c: Float[Array, ""]  # design wet bulb
    ct_fan_w: Float[Array, ""]  # per cell at full speed
    ct_min_speed: Float[Array, ""]
    ct_drift: Float[Array, ""]  # share of the circulating flow
    ct_cycles: Float[Array, ""]  # cycles of concentration
    cw_flow_m3s: Float[Array, ""]  # condenser water per running chiller
    cw_pump_w: Float[Array, ""]  # condenser pump per running chiller
    air_handling_w_per_w: Float[Array, ""]
    fan_kp: Float[Array, ""]
    fan_ki: Float[Array, ""]


@pytree
class CoolingState:
    tcs_supply_c: Float[Array, " C"]
    fws_supply_c: Float[Array, ""]
    fan_integral: Float[Array, ""]  # PI integrator, in fan-speed units
    dc_leaving_c: Float[Array, ""]  # measured water temperature after the dry coolers


@pytree
class CoolingInputs:
    heat_liquid_w: Float[Array, " C"]  # from compute
    heat_air_w: Float[Array, ""]  # from compute
    ambient_c: Float[Array, ""]  # drivers
    rh: Float[Array, ""]  # drivers, 0..1
    chillers_up: Float[Array, ""]  # units not failed
    pumps_up: Float[Array, ""]
    dry_coolers_up: Float[Array, ""]
    cdu_up: Float[Array, " C"]  # 1 for a working CDU heat exchanger
    # How the heat swings with the training jobs' phases (compute.HeatSwing), for long
    # steps only: high phase above low per CDU, the same for the room air, high share.
    swing_liquid_w: Float[Array, " C"]
    swing_air_w: Float[Array, ""]
    swing_share: Float[Array, ""]


@pytree
class CoolingOutputs:
    electrical_w: Float[Array, ""]  # all cooling loads
    pumps_w: Float[Array, ""]
    fans_w: Float[Array, ""]
    chillers_w: Float[Array, ""]
    air_handling_w: Float[Array, ""]
    heat_rejected_w: Float[Array, ""]  # to the outdoor air
    chillers_running: Float[Array, ""]
    chiller_load_w: Float[Array, ""]
    fan_speed: Float[Array, ""]
    fws_return_c: Float[Array, ""]
    fws_supply_c: Float[Array, ""]
    tcs_supply_mean_c: Float[Array, ""]
    tcs_supply_max_c: Float[Array, ""]
    water_m3_per_s: Float[Array, ""]
    tower_fans_w: Float[Array, ""]
    tower_heat_w: Float[Array, ""]  # heat the condenser water gives up in the towers
    condenser_c: Float[Array, ""]  # entering the condensers: outdoor air, or tower water
    residual_w: Float[Array, ""]  # heat in + electrical - rejected - d(stored)/dt
    stored_w: Float[Array, ""]  # d(heat stored in the TCS and facility loops)/dt


@pytree
class Plant:
    """The chiller plant over a step: chillers with, when water-cooled, their condenser
    pumps and cooling towers."""

    load_w: Float[Array, ""]  # heat the chillers take from the facility water
    running: Float[Array, ""]
    chillers_w: Float[Array, ""]
    pumps_w: Float[Array, ""]  # condenser water pumps
    tower_fans_w: Float[Array, ""]
    tower_heat_w: Float[Array, ""]
    water_m3_per_s: Float[Array, ""]  # tower make-up
    condenser_c: Float[Array, ""]


def chiller_power(p: CoolingParams, load_w, running, leaving_c, condenser_c):
    """Electric power of ``running`` identical chillers sharing ``load_w`` (EnergyPlus
    Chiller:Electric:EIR: P = Q_avail/COP_ref * EIRFT * EIRFPLR(PLR) * cycling ratio)."""
    available = chiller_capacity(p, leaving_c, condenser_c)
    leaving_c, condenser_c = curve_inputs(p, leaving_c, condenser_c)
    plr = load_w / jnp.maximum(running * available, 1.0)
    # Below the minimum part load the chiller cycles: it runs at the minimum for the
    # share of the time that delivers the load (EnergyPlus's cycling ratio).
    plr_eval = jnp.clip(jnp.maximum(plr, p.ch_min_plr), p.curve_plr[0], p.curve_plr[1])
    cycling = jnp.minimum(plr / jnp.maximum(p.ch_min_plr, 1e-9), 1.0)
    eir = biquadratic(p.eirft, leaving_c, condenser_c) * quadratic(p.eirfplr, plr_eval)
    return running * available / p.ch_cop * eir * cycling


def curve_inputs(p: CoolingParams, leaving_c, condenser_c):
    """Curve variables clamped to the range the curves were fitted over."""
    leaving = jnp.clip(leaving_c, p.curve_leaving_c[0], p.curve_leaving_c[1])
    return leaving, jnp.clip(condenser_c, p.curve_condenser_c[0], p.curve_condenser_c[1])


def chiller_capacity(p: CoolingParams, leaving_c, condenser_c):
    """Available capacity of one chiller (W): reference capacity x CAPFT."""
    leaving_c, condenser_c = curve_inputs(p, leaving_c, condenser_c)
    return p.ch_capacity_w * biquadratic(p.capft, leaving_c, condenser_c)


def init(p: CoolingParams, dtype) -> CoolingState:
    c = p.cdu_mask.shape[0]
    return CoolingState(
        tcs_supply_c=jnp.full((c,), p.supply_c, dtype),
        fws_supply_c=jnp.asarray(p.supply_c, dtype),
        fan_integral=jnp.asarray(0.5, dtype),
        dc_leaving_c=jnp.asarray(p.supply_c, dtype),
    )


def _cdu_loops(p: CoolingParams, s: CoolingState, x: CoolingInputs, fws_supply_c, fws_c_cdu, dt):
    """CDU technology loops, M cp dT/dt = Q + P_pump - Q_hx with Q_hx linear in T, over a
    step with the facility supply held at ``fws_supply_c``: (new TCS supply, Q_hx)."""
    q_in = x.heat_liquid_w + p.tcs_pump_w * p.cdu_mask
    g = _conductance(p, x, fws_c_cdu)
    rise = x.heat_liquid_w / p.tcs_c
    # dT/dt = (q_in - g (T + rise - T_fws)) / M  ->  rate g/M, target T_fws - rise + q_in/g
    rate = g / p.tcs_heat_capacity
    g_safe = jnp.maximum(g, 1e-6)
    target = jnp.where(g > 1e-6, fws_supply_c - rise + q_in / g_safe, s.tcs_supply_c)
    # With no exchange (failed CDU) the loop just heats up: integrate directly.
    tcs1, tcs_mean = relax(s.tcs_supply_c, rate, target, dt)
    heat_up = s.tcs_supply_c + q_in * dt / p.tcs_heat_capacity
    tcs1 = jnp.where(g > 1e-6, tcs1, heat_up)
    tcs_mean = jnp.where(g > 1e-6, tcs_mean, 0.5 * (s.tcs_supply_c + heat_up))
    q_hx = jnp.where(g > 1e-6, g * (tcs_mean + rise - fws_supply_c), 0.0) * p.cdu_mask
    tcs1 = jnp.where(p.cdu_mask > 0, tcs1, s.tcs_supply_c)
    return tcs1, q_hx


def _conductance(p: CoolingParams, x: CoolingInputs, fws_c_cdu):
    """Each CDU exchanger's conductance eps C_min (W/K)."""
    c_min = jnp.minimum(p.tcs_c, fws_c_cdu)
    c_max = jnp.maximum(jnp.maximum(p.tcs_c, fws_c_cdu), 1e-9)
    ntu = p.cdu_ua * x.cdu_up / jnp.maximum(c_min, 1e-9)
    return eps_counterflow(ntu, c_min / c_max, jnp) * c_min


def _air_inlet(p: CoolingParams, x: CoolingInputs):
    """Air entering the dry coolers (after adiabatic pre-cooling), and whether assisted."""
    wet_bulb = wet_bulb_stull(x.ambient_c, x.rh, jnp)
    assist = p.adiabatic * (x.ambient_c > p.adiabatic_threshold_c)
    return x.ambient_c - assist * p.pad_effectiveness * (x.ambient_c - wet_bulb), assist


def _dry_cooler_heat(p: CoolingParams, x: CoolingInputs, speed, fws_return, air_in, fws_c_safe):
    """Heat the running dry coolers pick up at fan ``speed`` (bypassed, none, when the air
    is warmer than the water), and their air capacity rate."""
    units = x.dry_coolers_up
    air_c = units * speed * p.dc_air_c
    ua = units * p.dc_ua * speed**p.dc_ua_exponent
    c_min_dc = jnp.minimum(air_c, fws_c_safe)
    c_max_dc = jnp.maximum(jnp.maximum(air_c, fws_c_safe), 1e-9)
    eps_dc = eps_crossflow_unmixed(ua / jnp.maximum(c_min_dc, 1e-9), c_min_dc / c_max_dc, jnp)
    return jnp.maximum(eps_dc * c_min_dc * (fws_return - air_in), 0.0), air_c


def stage(load_w, capacity_w, units_up):
    """Chillers running for ``load_w`` (lead/lag): the lead unit takes the load first and
    each lag unit starts only once those running are fully loaded; the running units
    share the load equally. The rest, the standby (N+1) units among them, stay off and
    draw nothing; a lead unit below its minimum part load cycles (chiller_power)."""
    running = jnp.maximum(jnp.ceil(load_w / jnp.maximum(capacity_w, 1.0) - 1e-6), 1.0)
    return jnp.where(load_w > 0.0, jnp.minimum(running, units_up), 0.0)


def _staged(p: CoolingParams, x: CoolingInputs, needed, condenser_c):
    """(load, running, W) of the chillers bringing ``needed`` within their capacity."""
    capacity_unit = chiller_capacity(p, p.supply_c, condenser_c)
    q_ch = jnp.minimum(needed, x.chillers_up * capacity_unit)
    running = stage(q_ch, capacity_unit, x.chillers_up)
    return q_ch, running, chiller_power(p, q_ch, running, p.supply_c, condenser_c)


def _towers(p: CoolingParams, heat_w, wet_bulb):
    """(approach K, fan W) of the cooling towers rejecting ``heat_w``."""
    approach, _, fans_w = tower(
        heat_w, wet_bulb, p.ct_cells, p.ct_heat_w, p.ct_approach_k, p.ct_wet_bulb_c,
        p.ct_fan_w, p.ct_min_speed, jnp,
    )  # fmt: skip
    return approach, fans_w


def _chillers(p: CoolingParams, x: CoolingInputs, enabled, fws_c, dc_leaving) -> Plant:
    """Trim chillers in series, staged on only once the dry-cooler fans are at full speed;
    they bring the water down to the setpoint within their capacity.

    A water-cooled chiller's condenser sees the towers' water, which depends on the heat
    the towers reject, which depends on the chillers' power: one pass at an estimate of
    that heat (the load at the reference COP), a second at the heat of the first pass.
    The towers then reject exactly the second pass's load + power + condenser pumps."""
    needed = enabled * fws_c * jnp.maximum(dc_leaving - p.supply_c, 0.0)
    wet = p.water_cooled
    wet_bulb = wet_bulb_stull(x.ambient_c, x.rh, jnp)

    def condenser_c(tower_heat_w):
        approach, _ = _towers(p, wet * tower_heat_w, wet_bulb)
        return jnp.where(wet > 0.0, wet_bulb + approach, x.ambient_c)

    guess = jnp.minimum(needed, x.chillers_up * p.ch_capacity_w) * (1.0 + 1.0 / p.ch_cop)
    q0, running0, ch_w0 = _staged(p, x, needed, condenser_c(guess))
    heat0 = q0 + ch_w0 + running0 * p.cw_pump_w
    q_ch, running, ch_w = _staged(p, x, needed, condenser_c(heat0))
    pumps_w = wet * running * p.cw_pump_w
    tower_heat = wet * (q_ch + ch_w + pumps_w)
    approach, tower_fans_w = _towers(p, tower_heat, wet_bulb)
    water, _, _, _ = make_up_water(
        tower_heat, wet * running * p.cw_flow_m3s, p.ct_drift, p.ct_cycles, jnp
    )
    return Plant(
        load_w=q_ch,
        running=running,
        chillers_w=ch_w,
        pumps_w=pumps_w,
        tower_fans_w=tower_fans_w,
        tower_heat_w=tower_heat,
        water_m3_per_s=water,
        condenser_c=jnp.where(wet > 0.0, wet_bulb + approach, x.ambient_c),
    )


def _facility(p: CoolingParams, x: CoolingInputs):
    """Facility pumps running, their capacity rate, and per CDU."""
    running_pumps = jnp.minimum(x.pumps_up, p.duty_pumps)
    fws_c = running_pumps * p.fws_c_per_pump
    n = p.cdu_mask * p.cdu_count  # site CDUs each column stands for
    cdus = jnp.maximum(jnp.sum(n), 1.0)
    return running_pumps, fws_c, n, cdus


def step(
    p: CoolingParams, s: CoolingState, x: CoolingInputs, dt: float
) -> tuple[CoolingState, CoolingOutputs]:
    if is_long(dt):
        return _long_step(p, s, x, dt)
    running_pumps, fws_c, _, cdus = _facility(p, x)
    tcs1, q_hx = _cdu_loops(p, s, x, s.fws_supply_c, fws_c / cdus, dt)

    # --- Air handlers move the room heat into facility water.
    ah_w = p.air_handling_w_per_w * x.heat_air_w
    fws_pump_w = running_pumps * p.fws_pump_w
    fws_in = jnp.sum(q_hx * p.cdu_count) + x.heat_air_w + ah_w + fws_pump_w
    fws_c_safe = jnp.maximum(fws_c, 1e-6)
    fws_return = s.fws_supply_c + fws_in / fws_c_safe

    # --- Dry coolers: fan speed from a PI loop on the water leaving them (anti-windup by
    # clamping the integrator to the output range).
    error = s.dc_leaving_c - p.supply_c
    integral = jnp.clip(s.fan_integral + p.fan_ki * error * dt, p.dc_min_speed, 1.0)
    speed = jnp.clip(p.fan_kp * error + integral, p.dc_min_speed, 1.0)
    air_in, assist = _air_inlet(p, x)
    q_dc, air_c = _dry_cooler_heat(p, x, speed, fws_return, air_in, fws_c_safe)
    # At minimum fan speed in cold weather a three-way valve bypasses enough water to
    # hold the setpoint.
    at_min = speed <= p.dc_min_speed + 1e-9
    q_hold = fws_c_safe * jnp.maximum(fws_return - p.supply_c, 0.0)
    q_dc = jnp.where(at_min, jnp.minimum(q_dc, q_hold), q_dc)
    dc_leaving = fws_return - q_dc / fws_c_safe
    plant = _chillers(p, x, speed >= 0.999, fws_c, dc_leaving)

    # --- Facility loop node (explicit; the loop turnover is validated to be >> dt).
    fws1 = s.fws_supply_c + (fws_in - q_dc - plant.load_w) * dt / p.fws_heat_capacity
    state = CoolingState(
        tcs_supply_c=tcs1, fws_supply_c=fws1, fan_integral=integral, dc_leaving_c=dc_leaving
    )
    return state, _outputs(
        p, s, x, state, dt, speed, air_c, air_in, assist, q_dc, plant, fws_return, ah_w,
        fws_pump_w,
    )  # fmt: skip


def _long_step(
    p: CoolingParams, s: CoolingState, x: CoolingInputs, dt: float
) -> tuple[CoolingState, CoolingOutputs]:
    """A step long beside the fan loop and the facility loop turnover (long_step.py).

    The fan loop has settled: the dry coolers take what brings the water leaving them to
    the setpoint, between what they take at minimum speed (a bypass valve holds the
    setpoint below it) and at full speed (the chillers take the rest). The facility
    node's net heat N(T) is linearised at the start of the step, dT/dt = (N0 + N' (T -
    T0)) / C, which relaxes exactly; every flow is then evaluated at the step's mean
    temperature under that relaxation and the node advanced by their sum, so the step
    conserves energy and is exact for a linear loop (stable at any dt)."""
    running_pumps, fws_c, _, cdus = _facility(p, x)
    fws_c_safe = jnp.maximum(fws_c, 1e-6)
    ah_w = p.air_handling_w_per_w * x.heat_air_w
    fws_pump_w = running_pumps * p.fws_pump_w
    air_in, assist = _air_inlet(p, x)

    # The training jobs' compute/communication cycle (seconds) reaches the facility water
    # through the CDU exchangers at once (the share g / C_tcs of a change in the loop's
    # rise; the loop's mass smooths the rest). The fan loop's integrator does not follow
    # it (its integral time is longer than a phase, and the proportional swing small), so
    # the fans hold the speed that settles the mean; the chillers do follow it: staged on
    # in each phase in which the fans' proportional kick reaches full speed, they take
    # that phase's excess. At the mean alone a chiller that runs only in the compute
    # phases would run all the time at a lower part load, where its curve costs more.
    g = _conductance(p, x, fws_c / cdus)
    swing_w = jnp.sum(g / jnp.maximum(p.tcs_c, 1e-9) * x.swing_liquid_w * p.cdu_count)
    swing_k = (swing_w + (1.0 + p.air_handling_w_per_w) * x.swing_air_w) / fws_c_safe
    share = x.swing_share

    def flows(fws_supply_c):
        tcs1, q_hx = _cdu_loops(p, s, x, fws_supply_c, fws_c / cdus, dt)
        fws_in = jnp.sum(q_hx * p.cdu_count) + x.heat_air_w + ah_w + fws_pump_w
        fws_return = fws_supply_c + fws_in / fws_c_safe
        q_full, _ = _dry_cooler_heat(p, x, 1.0, fws_return, air_in, fws_c_safe)
        q_want = fws_c_safe * jnp.maximum(fws_return - p.supply_c, 0.0)
        settled = jnp.minimum(q_want, q_full)
        speed = _settled_speed(p, x, settled, fws_return, air_in, fws_c_safe)
        at_min = speed <= p.dc_min_speed + 1e-9  # a bypass valve holds the setpoint
        # (the settled heat itself at the mean, whatever the speed's last digits)
        q_at_mean, _ = _dry_cooler_heat(p, x, speed, fws_return, air_in, fws_c_safe)

        def phase(ret):
            q_dc, _ = _dry_cooler_heat(p, x, speed, ret, air_in, fws_c_safe)
            q_dc = q_dc - q_at_mean + settled
            want = fws_c_safe * jnp.maximum(ret - p.supply_c, 0.0)
            q_dc = jnp.where(at_min, jnp.minimum(q_dc, want), q_dc)
            dc_leaving = ret - q_dc / fws_c_safe
            kick = speed + p.fan_kp * (dc_leaving - p.supply_c)
            return q_dc, dc_leaving, _chillers(p, x, kick >= 0.999, fws_c, dc_leaving)

        high = phase(fws_return + (1.0 - share) * swing_k)
        low = phase(fws_return - share * swing_k)
        q_dc, dc_leaving, plant = jax.tree.map(
            lambda h, lo: share * h + (1.0 - share) * lo, high, low
        )
        net = fws_in - q_dc - plant.load_w
        return net, (tcs1, fws_return, q_dc, dc_leaving, plant, speed)

    t0 = s.fws_supply_c
    net0, slope = jax.jvp(lambda t: flows(t)[0], (t0,), (jnp.ones_like(t0),))
    rate = jnp.maximum(-slope, 0.0) / p.fws_heat_capacity
    shift = jnp.where(
        rate > 0.0, net0 / (jnp.where(rate > 0.0, rate, 1.0) * p.fws_heat_capacity), 0.0
    )
    _, t_mean = relax(t0, rate, t0 + shift, dt)
    t_mean = jnp.where(rate > 0.0, t_mean, t0)
    net, (tcs1, fws_return, q_dc, dc_leaving, plant, speed) = flows(t_mean)
    fws1 = t0 + net * dt / p.fws_heat_capacity
    _, air_c = _dry_cooler_heat(p, x, speed, fws_return, air_in, fws_c_safe)
    state = CoolingState(
        tcs_supply_c=tcs1, fws_supply_c=fws1, fan_integral=speed, dc_leaving_c=dc_leaving
    )
    return state, _outputs(
        p, s, x, state, dt, speed, air_c, air_in, assist, q_dc, plant, fws_return, ah_w,
        fws_pump_w,
    )  # fmt: skip


SPEED_BISECTIONS = 24  # fan speed to ~5e-8 of its range


def _settled_speed(p: CoolingParams, x: CoolingInputs, q_dc, fws_return, air_in, fws_c_safe):
    """The fan speed at which the dry coolers pick up ``q_dc`` (heat rises with speed),
    clamped to [min_speed, 1]; found by bisection, then one Newton step, which leaves the
    value where it is but gives the speed its derivative (the implicit function theorem:
    ds = (dq_dc - dq) / (dq/ds)), so that the fans' power responds to the dry coolers' UA
    and the heat in a gradient, as it does in the step-by-step loop."""

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        q, _ = _dry_cooler_heat(p, x, mid, fws_return, air_in, fws_c_safe)
        return jnp.where(q < q_dc, mid, lo), jnp.where(q < q_dc, hi, mid)

    bounds = (jnp.asarray(p.dc_min_speed, q_dc.dtype), jnp.ones_like(q_dc))
    lo, hi = jax.lax.stop_gradient(jax.lax.fori_loop(0, SPEED_BISECTIONS, halve, bounds))
    s0 = 0.5 * (lo + hi)

    def heat(speed):
        return _dry_cooler_heat(p, x, speed, fws_return, air_in, fws_c_safe)[0]

    q, dq_ds = jax.jvp(heat, (s0,), (jnp.ones_like(s0),))
    span = 1.0 - p.dc_min_speed
    inside = (s0 > p.dc_min_speed + 1e-6 * span) & (s0 < 1.0 - 1e-6 * span) & (dq_ds > 0.0)
    return jnp.where(inside, s0 - (q - q_dc) / jnp.where(inside, dq_ds, 1.0), s0)


def _outputs(
    p: CoolingParams, s: CoolingState, x: CoolingInputs, s1: CoolingState, dt: float,
    speed, air_c, air_in, assist, q_dc, plant: Plant, fws_return, ah_w, fws_pump_w,
) -> CoolingOutputs:  # fmt: skip
    _, _, n, cdus = _facility(p, x)
    fans_w = x.dry_coolers_up * p.dc_fan_w * speed**3
    pads = assist * (air_c * (x.ambient_c - air_in)) / WATER_LATENT_J_PER_KG / 1000.0
    pumps_w = jnp.sum(p.tcs_pump_w * n) + fws_pump_w + plant.pumps_w
    ch_w = plant.chillers_w
    electrical = pumps_w + fans_w + ch_w + ah_w + plant.tower_fans_w
    # Condenser heat goes to the outdoor air directly or through the towers (whose fans'
    # power ends up in their exhaust air).
    rejected = q_dc + plant.load_w + ch_w + fans_w + plant.pumps_w + plant.tower_fans_w
    stored = (
        jnp.sum((s1.tcs_supply_c - s.tcs_supply_c) * p.tcs_heat_capacity * n)
        + (s1.fws_supply_c - s.fws_supply_c) * p.fws_heat_capacity
    ) / dt
    heat_in = jnp.sum(x.heat_liquid_w * p.cdu_count) + x.heat_air_w
    tcs1 = s1.tcs_supply_c
    return CoolingOutputs(
        electrical_w=electrical,
        pumps_w=pumps_w,
        fans_w=fans_w,
        chillers_w=ch_w,
        air_handling_w=ah_w,
        heat_rejected_w=rejected,
        chillers_running=plant.running,
        chiller_load_w=plant.load_w,
        fan_speed=speed,
        fws_return_c=fws_return,
        fws_supply_c=s1.fws_supply_c,
        tcs_supply_mean_c=jnp.sum(tcs1 * n) / cdus,
        tcs_supply_max_c=jnp.max(jnp.where(p.cdu_mask > 0, tcs1, -jnp.inf)),
        water_m3_per_s=pads + plant.water_m3_per_s,
        tower_fans_w=plant.tower_fans_w,
        tower_heat_w=plant.tower_heat_w,
        condenser_c=plant.condenser_c,
        residual_w=heat_in + electrical - rejected - stored,
        stored_w=stored,
    )
