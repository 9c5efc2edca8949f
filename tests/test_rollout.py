"""Rollouts: recording, batched what-if (vmap) against a loop, and gradients."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F64, constant_weather, run64, small_site, steady_load

from twin_core.batch import simulate_batch
from twin_core.rollout import kpi_value_and_grad, plan, simulate

VARIANTS = [
    {},
    {"cooling.supply_c": 33.0},
    {
        "energy.battery": {
            "capacity_mwh": 0.5,
            "power_mw": 0.3,
            "mode": "peak_shave",
            "peak_threshold_mw": 1.0,
        }
    },
    # fewer racks per CDU: padded to the common layout inside the batch
    {"halls.0.racks_per_cdu": 3, "workload.training.0.racks": 6},
    {"failures": [{"equipment": "chiller", "index": 0, "at": "10m"}], "weather.offset_c": 20.0},
]


def test_simulate_batch_equals_a_loop_of_simulate(small):
    batch = simulate_batch(small, VARIANTS, 1800, dt=1.0, record_s=60, dtype=F64)
    for variant, got in zip(VARIANTS, batch, strict=True):
        from twin_core.site import with_overrides

        alone = simulate(with_overrides(small, variant), 1800, 1.0, 60, dtype=F64)
        for key, value in alone.kpis.items():
            assert got.kpis[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (variant, key)
        for name in ("facility_w", "tcs_supply_mean_c", "gpu_temp_max_c", "soc"):
            np.testing.assert_allclose(got.means[name], alone.means[name], rtol=1e-9, atol=1e-12)
    # and the variants really differ
    assert batch[1].kpis["max_supply_c"] > batch[0].kpis["max_supply_c"] + 2.5
    assert batch[3].kpis["it_energy_mwh"] == pytest.approx(
        0.75 * batch[0].kpis["it_energy_mwh"], rel=0.02
    )


def test_kpis_do_not_depend_on_the_recording_interval():
    site = small_site({"workload.training.0.iteration_s": 7})
    fine = run64(site, 1200, 1.0, 1)
    coarse = run64(site, 1200, 1.0, 600)
    for key in (
        "it_energy_mwh",
        "facility_energy_mwh",
        "peak_facility_mw",
        "max_gpu_temp_c",
        "cost_usd",
        "delivered_eflop",
        "max_ramp_mw_per_s",
        "cfe_score",
    ):
        assert coarse.kpis[key] == pytest.approx(fine.kpis[key], rel=1e-12), key
    assert len(coarse.means["facility_w"]) == 2
    assert coarse.maxes["facility_w"][0] == pytest.approx(fine.means["facility_w"][:600].max())


def test_gradient_matches_finite_difference():
    site = small_site(constant_weather(18.0), steady_load(0.85))
    horizon, dt = 2 * 3600, 10.0
    value, grad = kpi_value_and_grad(
        site,
        "facility_energy_mwh",
        wrt=["cooling.supply_c", "power.misc_fixed_mw"],
        horizon_s=horizon,
        dt=dt,
        record_s=600,
        dtype=F64,
    )

    def kpi(**overrides):
        from twin_core.site import with_overrides

        return simulate(with_overrides(site, overrides), horizon, dt, 600, dtype=F64).kpis[
            "facility_energy_mwh"
        ]

    h = 0.01
    fd_supply = (kpi(**{"cooling.supply_c": 30 + h}) - kpi(**{"cooling.supply_c": 30 - h})) / (
        2 * h
    )
    assert value == pytest.approx(kpi(), rel=1e-12)
    assert grad["cooling.supply_c"] == pytest.approx(fd_supply, rel=1e-4)
    assert grad["cooling.supply_c"] < 0  # warmer water: less fan energy
    # misc load passes through the transformer (slightly > 1 MWh per MW per hour)
    assert 2.0 < grad["power.misc_fixed_mw"] < 2.05


def test_gradient_with_respect_to_battery_size():
    site = small_site(
        constant_weather(18.0),
        steady_load(0.85),
        {
            "energy.battery": {
                "capacity_mwh": 0.2,
                "power_mw": 0.5,
                "mode": "peak_shave",
                "peak_threshold_mw": 0.9,
            }
        },
    )
    _, grad = kpi_value_and_grad(
        site,
        "cost_usd",
        wrt=["energy.battery.capacity_mwh"],
        horizon_s=3600,
        dt=10.0,
        record_s=600,
        dtype=F64,
    )

    def cost(capacity):
        from twin_core.site import with_overrides

        s = with_overrides(site, {"energy.battery.capacity_mwh": capacity})
        return simulate(s, 3600, 10.0, 600, dtype=F64).kpis["cost_usd"]

    fd = (cost(0.21) - cost(0.19)) / 0.02
    assert grad["energy.battery.capacity_mwh"] == pytest.approx(fd, rel=1e-3)
    assert grad["energy.battery.capacity_mwh"] < 0  # more stored energy shaves more peak


def test_gradient_rejects_discrete_fields(small):
    with pytest.raises(ValueError, match=r"^wrt: 'halls.0.cdus' is not differentiable"):
        kpi_value_and_grad(small, "pue", wrt=["halls.0.cdus"], horizon_s=600)


def test_plan_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"^record_every: 7 s does not divide the duration 600 s$"):
        plan(600, 1.0, 7)
    with pytest.raises(ValueError, match=r"^duration: 10\.5 s is not a whole number"):
        plan(10.5, 1.0, None)


def test_float32_default_tracks_float64(small):
    f32 = simulate(small, 1800, 1.0, 60)
    f64 = simulate(small, 1800, 1.0, 60, dtype=jnp.float64)
    assert f32.means["facility_w"].dtype == np.float32
    for key in ("pue", "it_energy_mwh", "max_gpu_temp_c", "cost_usd"):
        assert f32.kpis[key] == pytest.approx(f64.kpis[key], rel=1e-4), key


def test_battery_gradient_is_not_cut_off_at_zero_capacity():
    """A site with no battery yet: how much would the first MWh of peak shaving save?"""
    site = small_site(
        constant_weather(18.0),
        {
            "energy.battery": {
                "capacity_mwh": 0.0,
                "power_mw": 0.5,
                "mode": "peak_shave",
                "peak_threshold_mw": 0.9,
                "initial_soc": 1.0,
            }
        },
    )
    wrt = ["energy.battery.capacity_mwh"]
    run = {"horizon_s": 1800, "dt": 10.0, "record_s": 600, "dtype": F64}
    _, grad = kpi_value_and_grad(site, "peak_facility_mw", wrt=wrt, **run)
    assert grad["energy.battery.capacity_mwh"] == 0.0  # the meter is upstream of the battery
    _, grad = kpi_value_and_grad(site, "cost_usd", wrt=wrt, **run)
    assert grad["energy.battery.capacity_mwh"] < 0  # a first MWh already shaves grid cost
