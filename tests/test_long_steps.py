"""Planning-sized steps (twin_core/long_step.py): exact exponential updates checked by
hand, a steady state checked against the hand calculation at dt = 15 min, and a design
day at dt = 60, 300 and 900 s checked against the same day at dt = 1 s (float64)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F64, constant_weather, run64, small_site, steady_load
from test_steady_state import AMBIENT_C, UTIL, hand_calculation

from twin_core import build_params, load_drivers
from twin_core.compute import step_utilization
from twin_core.cooling import CoolingInputs, CoolingState
from twin_core.cooling import step as cooling_step
from twin_core.coupling import init_state
from twin_core.long_step import relax, wrap
from twin_core.pytree import replace
from twin_core.site import SiteError

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("long-steps")

DAY_S = 86400.0


def test_single_node_exponential_update_by_hand():
    # A node 10 K above its equilibrium, time constant 263 s (Fairwater's facility loop
    # turnover), advanced 900 s: 30 + 10 e^(-900/263); mean 30 + 10 (1 - e^-k) / k.
    k = 900.0 / 263.0
    x1, mean = relax(jnp.asarray(40.0, F64), 1.0 / 263.0, 30.0, 900.0)
    assert float(x1) == pytest.approx(30.0 + 10.0 * 0.032_645_34, abs=1e-6)
    assert float(x1) == pytest.approx(30.0 + 10.0 * math.exp(-k), rel=1e-14)
    assert float(mean) == pytest.approx(30.0 + 10.0 * (1.0 - math.exp(-k)) / k, rel=1e-14)
    # In the limit of a short step it is the explicit (Euler) step 40 - 10 dt / 263, to
    # second order: the difference is 10 (dt / 263)^2 / 2.
    dt = 1e-3
    x1, _ = relax(jnp.asarray(40.0, F64), 1.0 / 263.0, 30.0, dt)
    euler = 40.0 - 10.0 * dt / 263.0
    assert float(x1) - euler == pytest.approx(10.0 * (dt / 263.0) ** 2 / 2, rel=1e-3)


def cooling_inputs(p, heat_liquid_w: float) -> CoolingInputs:
    cdus = p.cooling.cdu_mask.shape[0]
    f = lambda v: jnp.asarray(v, F64)  # noqa: E731
    return CoolingInputs(
        heat_liquid_w=f(np.full(cdus, heat_liquid_w)),
        heat_air_w=f(80e3),
        ambient_c=f(15.0),
        rh=f(0.5),
        chillers_up=f(2.0),
        pumps_up=f(2.0),
        dry_coolers_up=f(4.0),
        cdu_up=f(np.ones(cdus)),
        swing_liquid_w=f(np.zeros(cdus)),  # a steady load
        swing_air_w=f(0.0),
        swing_share=f(0.0),
    )


def test_facility_loop_relaxes_exactly_at_fifteen_minutes():
    # With the fans settled the dry coolers take fws_c (T_return - setpoint), so the
    # facility node obeys C dT/dt = -fws_c (T - 30) whatever the CDUs bring:
    # fws_c = 40 L/s x 995 x 4180 = 166,364 W/K, C = 20 m3 x 995 x 4180 J/K, tau = 500 s.
    site = small_site()
    p = build_params(site, load_drivers(site), horizon_s=3600, dt=900.0, dtype=F64)
    s = init_state(p).cooling
    s = CoolingState(s.tcs_supply_c, jnp.asarray(32.0, F64), s.fan_integral, s.dc_leaving_c)
    s1, out = cooling_step(p.cooling, s, cooling_inputs(p, 450e3), 900.0)
    assert float(s1.fws_supply_c) == pytest.approx(30.0 + 2.0 * math.exp(-1.8), rel=1e-12)
    assert 0.2 < float(out.fan_speed) < 1.0  # settled between its limits
    assert float(out.chiller_load_w) == 0.0
    assert float(s1.dc_leaving_c) == pytest.approx(30.0, abs=1e-9)
    heat_in = 2 * 450e3 + 80e3
    assert abs(float(out.residual_w)) < 1e-6 * heat_in
    # The same step as explicit Euler would overshoot past the setpoint: 32 - 2 x 1.8.
    assert 32.0 - 2.0 * 1.8 < 30.0 < float(s1.fws_supply_c)


def test_training_phases_are_averaged_over_a_long_step():
    # The small site's job: 20 s iterations, 14 s at 0.95 then 6 s at 0.3.
    site = small_site()
    p = build_params(site, load_drivers(site), horizon_s=3600, dt=15.0, dtype=F64)
    s = init_state(p).compute
    s = replace(s, job_clock_s=s.job_clock_s + 10.0, ckpt_clock_s=s.ckpt_clock_s + 10.0)
    su = step_utilization(p.compute, s, jnp.zeros((0,), F64), 15.0)
    # [10, 25] s of the cycle: compute 10-14 and 20-25 (9 s), communication 14-20 (6 s).
    assert float(su.mean[0]) == pytest.approx((9 * 0.95 + 6 * 0.3) / 15, rel=1e-14)
    assert float(su.high_share[0]) == pytest.approx(9 / 15, rel=1e-14)
    assert float(wrap(jnp.asarray(10.0, F64), 15.0, 20.0)) == 5.0
    assert float(wrap(jnp.asarray(-100.0, F64), 900.0, 20.0)) == 0.0  # 800 s = 40 cycles
    assert float(wrap(jnp.asarray(-100.0, F64), 60.0, 20.0)) == -40.0  # not started


@pytest.fixture(scope="module")
def steady_900():
    site = small_site(constant_weather(AMBIENT_C), steady_load(UTIL))
    return run64(site, 8 * 3600, dt=900.0, record_s=1800)


@pytest.mark.parametrize(
    "name",
    ["it_w", "rack_outlet_c", "tcs_supply_mean_c", "gpu_temp_mean_c", "fan_speed", "facility_w"],
)
def test_steady_state_at_fifteen_minutes_matches_hand_calculation(steady_900, name):
    assert steady_900.means[name][-1] == pytest.approx(hand_calculation()[name], rel=1e-6)


@pytest.fixture(scope="module")
def design_day():
    """A July day on the small site (diurnal weather, the training job cycling) at
    dt = 1 s and at planning-sized steps."""
    site = small_site()
    return {dt: run64(site, DAY_S, dt=dt, record_s=3600.0) for dt in (1.0, 60.0, 300.0, 900.0)}


@pytest.mark.parametrize("dt", [60.0, 300.0, 900.0])
def test_long_steps_match_one_second_over_a_design_day(design_day, dt):
    ref, run = design_day[1.0].kpis, design_day[dt].kpis
    energy = run["facility_energy_mwh"] / ref["facility_energy_mwh"] - 1.0
    assert abs(energy) < 0.005, f"facility energy off by {energy:.3%}"
    assert run["max_gpu_temp_c"] == pytest.approx(ref["max_gpu_temp_c"], abs=0.5)
    assert run["max_supply_c"] == pytest.approx(ref["max_supply_c"], abs=0.5)
    assert run["energy_balance_rel_error"] < 1e-9
    assert run["throttled_gpu_hours"] == ref["throttled_gpu_hours"] == 0.0


def test_dt_above_fifteen_minutes_is_refused(small):
    with pytest.raises(SiteError) as info:
        build_params(small, load_drivers(small), horizon_s=3600, dt=1800.0)
    assert str(info.value) == (
        "dt: 1800 s is longer than the model integrates accurately (at most 900 s)"
    )


def test_loop_turnover_still_checked_for_explicit_steps():
    # The explicit facility step (dt <= 10 s) still needs a turnover of 5 dt: 0.5 m3 at
    # 40 L/s turns over in 12.5 s.
    site = small_site({"cooling.facility_water.loop_volume_m3": 0.5})
    with pytest.raises(SiteError) as info:
        build_params(site, load_drivers(site), horizon_s=3600, dt=10.0)
    assert str(info.value) == (
        "cooling.facility_water.loop_volume_m3: loop turnover 12.5 s is too short for "
        "dt = 10 s (needs at least 50 s)"
    )
    build_params(site, load_drivers(site), horizon_s=3600, dt=60.0)  # a long step: exact
