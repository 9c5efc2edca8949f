"""Behaviour of the coupled model: energy balance, chiller curves, training power waves and
smoothing, free cooling vs chillers, redundancy, supply limits and granularity."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F64, constant_weather, run64, small_site, steady_load
from hand import it_design, meter, rack_ac, rack_dc

from twin_core import build_params, load_drivers
from twin_core.cooling import chiller_power
from twin_core.coupling import init_state

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("physics")

# --------------------------------------------------------------------------- energy balance


@pytest.fixture(scope="module")
def busy_run():
    """Ten minutes at 1 s with everything moving: a training wave, GB300 smoothing, a
    peak-shaving battery, a diurnal ambient and an arbitrary mid-run pump failure."""
    site = small_site(
        {
            "halls.0.rack_type": "GB300_NVL72",
            "workload.training.0.iteration_s": 12,
            "energy.battery": {
                "capacity_mwh": 0.2,
                "power_mw": 0.3,
                "mode": "peak_shave",
                "peak_threshold_mw": 1.0,
            },
            "failures": [{"equipment": "pump", "index": 0, "at": "5m"}],
        }
    )
    return site, run64(site, 600, dt=1.0, record_s=1, merge_identical=False)


def test_every_subsystem_conserves_energy(busy_run):
    _, result = busy_run
    assert result.kpis["energy_balance_rel_error"] < 1e-9
    for name in ("compute", "cooling", "power", "energy"):
        residual = np.max(np.abs(result.means[f"residual_{name}_w"]))
        assert residual < 1e-6 * np.max(result.means["facility_w"]), name


def test_boundaries_carry_values_one_interval_later(busy_run):
    _, r = busy_run
    # power sees the IT power compute drew in the previous interval (summed in another order)
    np.testing.assert_allclose(r.means["it_w"][1:], r.means["rack_ac_w"][:-1], rtol=1e-14)
    # energy serves the meter demand power published in the previous interval
    served = r.means["grid_w"] + r.means["battery_w"] + r.means["generation_w"]
    np.testing.assert_allclose(served[1:], r.means["facility_w"][:-1], rtol=1e-12)


def test_heat_balance_over_the_run_from_states(busy_run):
    """Electric energy into the racks + cooling = heat rejected + energy stored in loops,
    dies' surroundings and rack storage, summed over the run (states at both ends)."""
    site, r = busy_run
    p = build_params(site, load_drivers(site), horizon_s=600, dt=1.0, dtype=F64)
    s0, s1 = init_state(p), r.final
    dt = 1.0
    # compute: AC in = heat out (liquid + air) + rack storage change
    heat_out = (r.means["heat_liquid_w"] + r.means["heat_air_w"]) * dt
    storage = float(jnp.sum(s1.compute.storage_j - s0.compute.storage_j))
    assert np.sum(r.means["rack_ac_w"]) * dt == pytest.approx(np.sum(heat_out) + storage, rel=1e-10)
    # cooling: heat in (one interval later) + electric = rejected + loop energy change
    k = p.cooling
    u0 = float(jnp.sum(s0.cooling.tcs_supply_c * k.tcs_heat_capacity * k.cdu_mask))
    u1 = float(jnp.sum(s1.cooling.tcs_supply_c * k.tcs_heat_capacity * k.cdu_mask))
    u0 += float(s0.cooling.fws_supply_c * k.fws_heat_capacity)
    u1 += float(s1.cooling.fws_supply_c * k.fws_heat_capacity)
    heat_in = (s0.boundary.heat_liquid_w.sum() + s0.boundary.heat_air_w) * dt + np.sum(
        heat_out[:-1]
    )
    electric = np.sum(r.means["cooling_w"]) * dt
    rejected = np.sum(r.means["heat_rejected_w"]) * dt
    assert float(heat_in) + electric == pytest.approx(rejected + (u1 - u0), rel=1e-10)


# --------------------------------------------------------------------------- chillers


def test_chiller_power_follows_doe2_eir_curves(small):
    """Three operating points evaluated by hand from the curve coefficients in small.yaml:
    capft [0.258, 0.0389, -0.000217, 0.0469, -0.000943, -0.000343],
    eirft [0.934, -0.0582, 0.00450, 0.00243, 0.000486, -0.00122],
    eirfplr [0.222, 0.314, 0.464], 500 kW, COP 5.5, min PLR 0.15."""

    def hand(load_w, running, t_lvg, t_cond):
        capft = (
            0.258
            + 0.0389 * t_lvg
            - 0.000217 * t_lvg**2
            + 0.0469 * t_cond
            - 0.000943 * t_cond**2
            - 0.000343 * t_lvg * t_cond
        )
        eirft = (
            0.934
            - 0.0582 * t_lvg
            + 0.00450 * t_lvg**2
            + 0.00243 * t_cond
            + 0.000486 * t_cond**2
            - 0.00122 * t_lvg * t_cond
        )
        cap = 500e3 * capft
        plr = load_w / (running * cap)
        eirfplr = 0.222 + 0.314 * max(plr, 0.15) + 0.464 * max(plr, 0.15) ** 2
        cycling = min(plr / 0.15, 1.0)
        return running * cap / 5.5 * eirft * eirfplr * cycling

    p = build_params(small, load_drivers(small), horizon_s=3600, dt=1.0, dtype=F64).cooling
    points = [  # (load, running units, leaving C, condenser C): full, part and cycling load
        (900e3, 2, 12.0, 35.0),
        (300e3, 1, 7.0, 30.0),
        (40e3, 1, 10.0, 25.0),
    ]
    for load, running, t_lvg, t_cond in points:
        got = float(chiller_power(p, load, running, t_lvg, t_cond))
        assert got == pytest.approx(hand(load, running, t_lvg, t_cond), rel=1e-12)


def test_curve_inputs_are_clamped_to_their_fitted_range(small):
    p = build_params(small, load_drivers(small), horizon_s=3600, dt=1.0, dtype=F64).cooling
    # small.yaml fits leaving 5..20 C: a 30 C leaving temperature evaluates at 20 C
    assert float(chiller_power(p, 300e3, 1, 30.0, 35.0)) == float(
        chiller_power(p, 300e3, 1, 20.0, 35.0)
    )


def test_hot_ambient_brings_trim_chillers_in_and_raises_pue():
    mild = run64(small_site(constant_weather(15.0), steady_load(0.9)), 4 * 3600, 10.0, 600)
    hot = run64(small_site(constant_weather(38.0), steady_load(0.9)), 4 * 3600, 10.0, 600)
    assert mild.kpis["chiller_hours"] == 0.0
    assert hot.kpis["chiller_hours"] > 4.0  # at least one unit all the time
    assert hot.kpis["pue"] > mild.kpis["pue"] + 0.05
    # the plant still holds the setpoint: trim chillers close the gap
    assert hot.means["facility_supply_c"][-1] == pytest.approx(30.0, abs=0.01)
    assert np.all(hot.means["fan_speed"][-6:] == pytest.approx(1.0))


def _heat_wave_with_chiller_failure(units: int):
    return run64(
        small_site(
            constant_weather(46.0),
            steady_load(1.0),
            {
                "cooling.chillers.units": units,
                "cooling.chillers.capacity_kw": 900,
                "failures": [{"equipment": "chiller", "index": 0, "at": "1h"}],
            },
        ),
        4 * 3600,
        10.0,
        600,
    )


def test_chiller_failure_with_n_plus_1_holds_supply():
    r = _heat_wave_with_chiller_failure(units=3)  # two needed at 46 C, one spare
    assert r.kpis["max_supply_c"] < 31.0
    assert r.means["facility_supply_c"][-1] == pytest.approx(30.0, abs=0.01)
    assert r.kpis["throttled_gpu_hours"] == 0.0


def test_chiller_failure_without_redundancy_throttles_gpus():
    r = _heat_wave_with_chiller_failure(units=2)
    healthy = _heat_wave_with_chiller_failure(units=3)
    assert r.means["facility_supply_c"][-1] > 40.0
    assert r.kpis["max_gpu_temp_c"] > 85.0  # past the throttle start
    assert r.kpis["throttled_gpu_hours"] > 100.0
    assert r.kpis["delivered_eflop"] < 0.99 * healthy.kpis["delivered_eflop"]


# --------------------------------------------------------------------------- power waves


def _wave(parts: dict, seconds: int = 400):
    base = {
        "workload.training.0.iteration_s": 20,
        "workload.training.0.compute_fraction": 0.5,
        "workload.training.0.compute_util": 1.0,
        "workload.training.0.comm_util": 0.2,
    }
    return run64(small_site(constant_weather(15.0), base, parts), seconds, 1.0, 1)


def _chain(rack: str, dc_per_rack: float, cooling_w: float) -> float:
    """Meter power (W) for 8 racks at ``dc_per_rack``, by hand."""
    return meter(8 * rack_ac(rack, dc_per_rack), cooling_w, it_design(rack))


def test_training_job_gives_a_square_wave_of_meter_power():
    r = _wave({})
    meter_mw = r.means["facility_w"][100:] * 1e-6
    rises = np.flatnonzero(np.diff(meter_mw) > 0.2)
    assert np.all(np.diff(rises) == 20)  # one rise per 20 s iteration
    assert np.all(np.diff(np.flatnonzero(np.diff(meter_mw) < -0.2)) == 20)
    high = np.median(meter_mw[meter_mw > meter_mw.mean()])
    low = np.median(meter_mw[meter_mw < meter_mw.mean()])
    cooling = float(np.mean(r.means["cooling_w"][100:]))
    hand = _chain("GB200_NVL72", rack_dc("GB200_NVL72", 1.0), cooling) - _chain(
        "GB200_NVL72", rack_dc("GB200_NVL72", 0.2), cooling
    )
    # the fans' PI loop follows the heat wave a little: within 1 %
    assert (high - low) * 1e6 == pytest.approx(hand, rel=0.01)
    assert r.kpis["max_ramp_mw_per_s"] == pytest.approx(high - low, rel=0.02)


GB300_NO_FLOOR = {
    "halls.0.rack_type": "GB300_NVL72",
    "rack_types.GB300_NVL72.smoothing.power_floor_fraction": 0.0,
}


def test_rack_power_smoothing_holds_the_ramp_and_cuts_the_swing():
    raw = _wave({**GB300_NO_FLOOR, "controls.smoothing_enabled": False}, 800)
    smooth = _wave(GB300_NO_FLOOR, 800)
    ramp = 20000.0  # W/s per rack, GB300 catalog
    low, high = rack_dc("GB300_NVL72", 0.2), rack_dc("GB300_NVL72", 1.0)
    cooling = float(np.mean(raw.means["cooling_w"][100:]))
    # by hand: the steepest the meter can move is every rack's DC draw climbing by the
    # ramp limit in one second, where the PSU and chain losses rise fastest
    levels = np.minimum(low + ramp * np.arange(0, 10), high)
    steps = np.diff([_chain("GB300_NVL72", dc, cooling) for dc in levels])
    full_step = _chain("GB300_NVL72", high, cooling) - _chain("GB300_NVL72", low, cooling)
    assert raw.kpis["max_ramp_mw_per_s"] * 1e6 == pytest.approx(full_step, rel=0.01)
    # cooling follows the heat one interval later and adds ~8 % to the steepest second
    assert smooth.kpis["max_ramp_mw_per_s"] * 1e6 < 1.1 * steps.max()
    assert smooth.kpis["smoothing_unheld_fraction"] == 0.0
    # once the store's controller has found the job's mean (a few recentring times of
    # 120 s), the meter no longer follows the 20 s wave: its swing is cut tenfold and more
    settled = slice(600, None)
    raw_swing = np.ptp(raw.means["facility_w"][settled])
    assert np.ptp(smooth.means["facility_w"][settled]) < 0.1 * raw_swing
    # smoothing moves energy in time through rack storage; it does not throttle
    assert smooth.kpis["delivered_eflop"] == pytest.approx(raw.kpis["delivered_eflop"], rel=1e-12)


def test_power_floor_holds_rack_power_above_the_floor():
    floor = _wave(
        {
            "halls.0.rack_type": "GB300_NVL72",
            "rack_types.GB300_NVL72.smoothing.power_floor_fraction": 0.7,
        }
    )
    none = _wave(GB300_NO_FLOOR)
    floor_dc = 0.7 * rack_dc("GB300_NVL72", 1.0)
    assert rack_dc("GB300_NVL72", 0.2) < floor_dc  # the comm phase sits below the floor
    # the store holds the draw near the job's mean, so it never dips to the floor; the
    # GPUs burn at least the floor in the communication phases (heat: burnt + PSU loss)
    heat = floor.means["heat_liquid_w"] + floor.means["heat_air_w"]
    assert np.min(floor.means["rack_ac_w"][100:]) > 8 * rack_ac("GB300_NVL72", floor_dc)
    assert np.min(heat[100:]) > 8 * floor_dc
    assert floor.kpis["it_energy_mwh"] > none.kpis["it_energy_mwh"]  # the floor is burnt
    assert floor.kpis["delivered_eflop"] == pytest.approx(none.kpis["delivered_eflop"], rel=1e-12)


# --------------------------------------------------------------------------- limits


def test_supply_limit_from_energy_caps_racks_and_lowers_flops():
    free = run64(small_site(constant_weather(15.0), steady_load(1.0)), 3600, 1.0, 60)
    limited = run64(
        small_site(constant_weather(15.0), steady_load(1.0), {"energy.grid.import_limit_mw": 0.9}),
        3600,
        1.0,
        60,
    )
    assert free.kpis["min_cap_fraction"] == 1.0
    assert limited.kpis["min_cap_fraction"] < 0.9
    assert limited.means["facility_w"][-1] * 1e-6 == pytest.approx(0.9, rel=1e-3)
    assert limited.kpis["delivered_eflop"] < 0.9 * free.kpis["delivered_eflop"]
    assert limited.kpis["throttled_gpu_hours"] > 0.0


def test_failed_feeder_lowers_the_interconnect_limit():
    r = run64(
        small_site(
            steady_load(1.0),
            {
                "power.interconnect_limit_mw": 2.0,
                "power.feeders": 2,
                "failures": [{"equipment": "feeder", "index": 1, "at": "10m"}],
            },
        ),
        3600,
        1.0,
        60,
    )
    assert r.means["supply_limit_w"][-1] * 1e-6 == pytest.approx(1.0)
    assert r.means["facility_w"][-1] * 1e-6 == pytest.approx(1.0, rel=1e-3)


def test_failed_cdu_heats_its_racks_until_they_throttle():
    r = run64(
        small_site(steady_load(1.0), {"failures": [{"equipment": "cdu", "index": 1, "at": "1m"}]}),
        1800,
        1.0,
        60,
    )
    assert r.kpis["max_supply_c"] > 60.0
    # half the GPUs (one CDU) throttle by the end
    assert r.means["throttled_gpus"][-1] == pytest.approx(288, abs=1)


# --------------------------------------------------------------------------- granularity


def test_per_gpu_granularity_agrees_with_rack_level_power():
    site = small_site(steady_load(0.9), constant_weather(20.0))
    rack = run64(site, 1800, 1.0, 60)
    gpu = run64(site, 1800, 1.0, 60, granularity="gpu")
    assert gpu.kpis["it_energy_mwh"] == pytest.approx(rack.kpis["it_energy_mwh"], rel=1e-12)
    # hottest of 576 GPUs (spread in thermal resistance, position on the loop) runs hotter
    assert gpu.kpis["max_gpu_temp_c"] > rack.kpis["max_gpu_temp_c"] + 2.0
    assert gpu.means["gpu_temp_mean_c"][-1] == pytest.approx(
        rack.means["gpu_temp_mean_c"][-1], abs=0.5
    )


def test_cold_weather_bypass_holds_the_setpoint_at_minimum_fan_speed():
    r = run64(small_site(constant_weather(-20.0), steady_load(0.5)), 4 * 3600, 10.0, 600)
    assert r.means["fan_speed"][-1] == pytest.approx(0.2)  # minimum speed
    assert r.means["facility_supply_c"][-1] == pytest.approx(30.0, abs=1e-6)
    assert r.kpis["energy_balance_rel_error"] < 1e-9
