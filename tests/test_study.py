"""What-if studies: expansion and validation, batched results against one-by-one runs,
the physics each kind of variant must show, sharding over devices, sensitivities and the
constrained optimizer against a brute-force grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import F64, ROOT, constant_weather, small_site, steady_load

from twin_core import (
    Constraints,
    StudyError,
    kpi_value_and_grad,
    optimize,
    parse_spec,
    run_study,
    sensitivities,
    simulate,
    simulate_batch,
    with_overrides,
)
from twin_core import study as study_module
from twin_core.batch import simulate_sites
from twin_core.study import expand, grid_values, parse_variant_option, variant_sites

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("study")

CHILLER_OUT = {"failures+": {"equipment": "chiller", "index": 0, "at": "10m"}}


def study(**fields) -> dict:
    return {"duration": "2h", "dt": "10s", "precision": "float64", **fields}


# ----------------------------------------------------------------------------- expansion


def test_grid_values():
    assert grid_values("cooling.supply_c", "28:40:7") == [28, 30, 32, 34, 36, 38, 40]
    assert grid_values("x", "5:9:1") == [5.0]
    assert grid_values("halls.0.rack_type", "GB200_NVL72,GB300_NVL72") == [
        "GB200_NVL72",
        "GB300_NVL72",
    ]
    assert grid_values("x", [1, 2]) == [1, 2]


def test_variant_option_keeps_flow_values_whole():
    v = parse_variant_option("hot:weather.offset_c=3,weather.heat_waves+={start_h: 1, delta_c: 5}")
    assert v.name == "hot"
    assert v.set == {"weather.offset_c": 3, "weather.heat_waves+": {"start_h": 1, "delta_c": 5}}


def test_expand_orders_base_variants_then_grid():
    spec = parse_spec(
        study(
            variants=[{"name": "a", "set": {"cooling.supply_c": 31}}],
            vary={"cooling.supply_c": "30:32:2", "weather.offset_c": [0, 5]},
        )
    )
    names = [name for name, _ in expand(spec)]
    assert names == [
        "base",
        "a",
        "cooling.supply_c=30,weather.offset_c=0",
        "cooling.supply_c=30,weather.offset_c=5",
        "cooling.supply_c=32,weather.offset_c=0",
        "cooling.supply_c=32,weather.offset_c=5",
    ]


def test_append_adds_to_the_base_list(small):
    spec = parse_spec(
        study(
            base={"failures+": {"equipment": "pump", "at": "1h"}},
            variants=[
                {"name": "two", "set": {"failures+": [{"equipment": "chiller", "at": "2h"}]}}
            ],
        )
    )
    sites = {name: site for name, _, site in variant_sites(small, spec)}
    assert [f.equipment for f in sites["base"].failures] == ["pump"]
    assert [f.equipment for f in sites["two"].failures] == ["pump", "chiller"]


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            {"variants": [{"name": "a", "sett": {}}]},
            "variants.0.sett: unknown field",
        ),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "variants: duplicate variant name 'a'"),
        ({"variants": [{"name": "base"}]}, "variants: duplicate variant name 'base'"),
        ({"dt": "7s"}, None),
        (
            {"vary": {"cooling.supply_c": "a:b:c"}},
            "vary.cooling.supply_c: 'a:b:c' is not lo:hi:count (e.g. 28:40:7)",
        ),
        (
            {"vary": {"cooling.supply_c": "28:40:0"}},
            "vary.cooling.supply_c: count must be a whole number >= 1, got '28:40:0'",
        ),
        (
            {"series": ["nope"]},
            "series.0: unknown series 'nope' (e.g. facility_w, it_w)",
        ),
        (
            {"constraints": {"max_gpu_temp_c": -1}},
            "constraints.max_gpu_temp_c: Input should be greater than 0",
        ),
        (
            {"variants": [{"name": "x", "set": {"cooling.suply_c": 30}}]},
            "variants.x: cooling.suply_c: unknown field",
        ),
        (
            {"variants": [{"name": "x", "set": {"cooling.supply_c": -300}}]},
            "variants.x: cooling.supply_c: Input should be greater than or equal to -60",
        ),
        (
            {"variants": [{"name": "x", "set": {"halls.5.cdus": 3}}]},
            "variants.x: halls.5: no list item '5' (list has 1 items)",
        ),
        ({"duration": "soon"}, None),
        (
            {"vary": {"cooling.supply_c": "28:40:nan"}},
            "vary.cooling.supply_c: '28:40:nan' must be finite numbers",
        ),
        ({"base": {"name+": "x"}}, "base: name: is a str, not a list: use = to set it"),
        ({"base": {"halls.x.name+": 1}}, "base: halls.x.name: no list item 'x' (list has 1 items)"),
        (
            {"vary": {"cooling.supply_c": [30, 30]}},
            "vary: variant 'cooling.supply_c=30' twice (a repeated value, or a name)",
        ),
    ],
)
def test_malformed_studies_name_the_field(small, doc, message):
    with pytest.raises(StudyError) as err:
        run_study(small, parse_spec(study(**doc)))
    if message is None:  # duration/dt problems: the field comes first
        assert str(err.value).split(":")[0] in ("duration", "dt", "record_every")
    else:
        assert str(err.value) == message


def test_spec_must_be_a_mapping():
    with pytest.raises(StudyError, match=r"^study: must be a mapping of study fields$"):
        parse_spec(["a"])


# ----------------------------------------------------------------------------- batched


def test_batched_study_equals_one_by_one_runs(small):
    spec = parse_spec(
        study(
            variants=[
                {"name": "more-racks", "set": {"halls.0.cdus": 3}},  # padded layout: masks
                {"name": "gb300", "set": {"halls.0.rack_type": "GB300_NVL72"}},
                {
                    "name": "job",
                    "set": {"workload.training.0.racks": 4, "workload.training.0.iteration_s": 20},
                },
            ],
            vary={"cooling.supply_c": [28, 34]},
        )
    )
    result = run_study(small, spec)
    sites = variant_sites(small, spec)
    assert [v.name for v in result.variants] == [name for name, _, _ in sites]
    for row, (_, _, site) in zip(result.variants, sites, strict=True):
        alone = simulate(site, 7200, 10.0, dtype=F64)
        for key, value in alone.kpis.items():
            assert row.kpis[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (row.name, key)
    base = result.base.kpis
    more = result.variants[1]
    assert more.racks == 12
    # four more racks, idle (the workload is unchanged): more IT energy, far less than half
    assert 0.1 * base["it_energy_mwh"] < more.deltas["it_energy_mwh"] < 0.5 * base["it_energy_mwh"]


@pytest.fixture(scope="module")
def hot_site():
    # 40 °C outside: the dry coolers alone cannot hold the supply; one chiller, no spare.
    return small_site(constant_weather(40.0), steady_load(0.9), {"cooling.chillers.units": 1})


def test_chiller_failure_without_redundancy_heats_the_water_and_throttles(hot_site):
    spec = parse_spec(study(variants=[{"name": "chiller-out", "set": CHILLER_OUT}]))
    base, out = run_study(hot_site, spec).variants
    assert base.kpis["throttled_gpu_hours"] == 0
    assert out.deltas["max_supply_c"] > 4.0
    assert out.kpis["throttled_gpu_hours"] > 1.0
    assert out.constraints["max_gpu_temp_c"].passed is False
    assert base.passed and not out.passed


def test_heat_wave_raises_chiller_hours_and_pue():
    site = small_site(constant_weather(20.0), steady_load(0.9))
    wave = {"weather.heat_waves+": {"start_h": 0, "duration_h": 3, "delta_c": 18}}
    spec = parse_spec(study(variants=[{"name": "wave", "set": wave}]))
    base, hot = run_study(site, spec).variants
    assert base.kpis["chiller_hours"] == 0
    assert hot.kpis["chiller_hours"] > 1.0
    assert hot.deltas["pue"] > 0.02


def test_bigger_battery_lowers_the_grid_ramp():
    # a 120 s training iteration: its compute/communication swing shows at dt = 10 s
    site = small_site(constant_weather(20.0), {"workload.training.0.iteration_s": 120})
    battery = {"mode": "swing_firming", "ramp_limit_mw_per_s": 0.001}
    small_b = {"energy.battery": {**battery, "capacity_mwh": 0.05, "power_mw": 0.05}}
    big_b = {"energy.battery": {**battery, "capacity_mwh": 0.5, "power_mw": 0.5}}
    spec = parse_spec(
        study(
            variants=[{"name": "small", "set": small_b}, {"name": "big", "set": big_b}],
            constraints={"max_ramp_mw_per_s": 0.002},
        )
    )
    base, small_r, big_r = run_study(site, spec).variants
    ramp = [r.kpis["max_grid_ramp_mw_per_s"] for r in (base, small_r, big_r)]
    assert ramp[0] > ramp[1] > ramp[2]
    assert ramp[2] == pytest.approx(0.001, rel=0.25)  # held near the firming limit
    # the facility itself swings as before: only what the utility sees changes
    assert big_r.kpis["max_ramp_mw_per_s"] == pytest.approx(base.kpis["max_ramp_mw_per_s"])
    assert [r.passed for r in (base, small_r, big_r)] == [False, False, True]


def test_series_are_downsampled_means(small):
    spec = parse_spec(study(series=["facility_w"], series_every="30m"))
    (row,) = run_study(small, spec).variants
    alone = simulate(small, 7200, 10.0, dtype=F64)
    expected = alone.means["facility_w"].reshape(4, 30).mean(axis=1)
    np.testing.assert_allclose(row.series["facility_w"], expected, rtol=1e-12)


SHARDED = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, "tests")
from conftest import small_site
from twin_core import batch, parse_spec, run_study
seen = []
original = batch._shard
def spy(tree, size):
    out = original(tree, size)
    seen.append(len(out.hourly.sharding.device_set))
    return out
batch._shard = spy
spec = parse_spec(json.loads(sys.argv[1]))
result = run_study(small_site(), spec)
print(json.dumps({"devices": len(jax.devices()), "placed_on": seen,
                  "kpis": [v.kpis for v in result.variants]}))
"""


def test_sharding_over_two_devices_gives_the_same_results(small):
    doc = study(vary={"cooling.supply_c": [28, 30, 32, 34]}, duration="1h")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED, json.dumps(doc)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    sharded = json.loads(out.stdout.strip().splitlines()[-1])
    assert sharded["devices"] == 2
    assert sharded["placed_on"] == [2]  # the variant axis really was split
    one = run_study(small, parse_spec(doc))
    for got, want in zip(sharded["kpis"], one.variants, strict=True):
        for key, value in want.kpis.items():
            assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


# ----------------------------------------------------------------------------- gradients


def test_sensitivities_equal_the_single_kpi_gradients(small):
    run = {"horizon_s": 3600, "dt": 10.0, "dtype": F64}
    out = sensitivities(
        small, kpis=["facility_energy_mwh", "max_gpu_temp_c"], wrt=["cooling.supply_c"], **run
    )
    value, grad = kpi_value_and_grad(small, "facility_energy_mwh", wrt=["cooling.supply_c"], **run)
    assert out.at == {"cooling.supply_c": 30.0}
    assert out.values["facility_energy_mwh"] == pytest.approx(value, rel=1e-12)
    assert out.gradients["facility_energy_mwh"]["cooling.supply_c"] == pytest.approx(
        grad["cooling.supply_c"], rel=1e-9
    )
    # the die follows the water one for one in steady state
    assert out.gradients["max_gpu_temp_c"]["cooling.supply_c"] == pytest.approx(1.0, rel=0.01)


def test_sensitivity_arguments_are_checked(small):
    with pytest.raises(ValueError, match=r"^kpis: unknown KPI 'nope'"):
        sensitivities(small, kpis=["nope"], wrt=["cooling.supply_c"], horizon_s=600)
    with pytest.raises(ValueError, match=r"^wrt: 'halls.0.cdus' is not differentiable"):
        sensitivities(small, kpis=["pue"], wrt=["halls.0.cdus"], horizon_s=600)


def test_optimize_beats_a_brute_force_grid_and_keeps_the_constraint():
    # A constant load at the compute level: the landscape this case was chosen on (a
    # dt = 10 s step once sampled the 14 s compute phase at both of its steps).
    small = small_site(steady_load(0.95))
    limit = 78.0  # °C: reached near a 34 °C supply; warmer water saves fan energy
    constraints = Constraints(max_gpu_temp_c=limit)
    out = optimize(
        small,
        "facility_energy_mwh",
        bounds={"cooling.supply_c": (24.0, 40.0)},
        constraints=constraints,
        horizon_s=7200,
        dt=10.0,
        dtype=F64,
    )
    best = out.best
    assert best.feasible and out.improvement > 0
    assert best.constraints["max_gpu_temp_c"].value <= limit
    grid = np.arange(24.0, 40.01, 0.5)
    runs = simulate_batch(
        small, [{"cooling.supply_c": float(g)} for g in grid], 7200, 10.0, dtype=F64
    )
    feasible = [r.kpis["facility_energy_mwh"] for r in runs if r.kpis["max_gpu_temp_c"] <= limit]
    assert best.objective <= min(feasible) * (1 + 1e-6)
    # and the optimum it reports is what a plain run of that setpoint gives
    check = simulate(with_overrides(small, best.x), 7200, 10.0, dtype=F64)
    assert check.kpis["facility_energy_mwh"] == pytest.approx(best.objective, rel=1e-9)


def test_optimize_arguments_are_checked(small):
    run = {"constraints": Constraints(), "horizon_s": 600}
    with pytest.raises(ValueError, match=r"^objective: 'pue' is not one of"):
        optimize(small, "pue", bounds={"cooling.supply_c": (24, 40)}, **run)
    with pytest.raises(
        ValueError, match=r"^bounds.cooling.supply_c: lower bound 40 must be below upper 24$"
    ):
        optimize(small, "cost_usd", bounds={"cooling.supply_c": (40, 24)}, **run)
    with pytest.raises(ValueError, match=r"^wrt: 'halls.0.cdus' is not differentiable"):
        optimize(small, "cost_usd", bounds={"halls.0.cdus": (1, 2)}, **run)


def test_float32_study_tracks_float64(small, monkeypatch):
    # The dtype each rollout really ran in: the JSON result only repeats the spec's word.
    ran_in: list[set[np.dtype]] = []

    def recording(*args, **kwargs):
        results = simulate_sites(*args, **kwargs)
        ran_in.append({np.asarray(v).dtype for r in results for v in r.means.values()})
        return results

    monkeypatch.setattr(study_module, "simulate_sites", recording)
    doc = study(vary={"cooling.supply_c": [28, 32]})
    f64 = run_study(small, parse_spec(doc))
    f32 = run_study(small, parse_spec({**doc, "precision": "float32"}))
    assert ran_in == [{np.dtype(np.float64)}, {np.dtype(np.float32)}]
    assert parse_spec({k: v for k, v in doc.items() if k != "precision"}).precision == "float32"
    for a, b in zip(f32.variants, f64.variants, strict=True):
        energy32, energy64 = a.kpis["facility_energy_mwh"], b.kpis["facility_energy_mwh"]
        assert energy32 == pytest.approx(energy64, rel=1e-4)
        assert energy32 != energy64  # rounding only float32 explains: the runs differ


def test_per_gpu_spread_does_not_depend_on_the_other_variants(small):
    from twin_core import build_params, layout_of, load_drivers

    run = {"horizon_s": 600, "dt": 1.0, "granularity": "gpu", "dtype": F64}
    alone = build_params(small, load_drivers(small), **run)
    bigger = layout_of(small, "gpu").union(layout_of(with_overrides(small, {
        "halls.0.racks_per_cdu": 6}), "gpu"))  # fmt: skip
    padded = build_params(small, load_drivers(small), pad_to=bigger, **run)
    r, c = np.shape(alone.compute.mask)
    np.testing.assert_array_equal(
        np.asarray(padded.compute.r_die)[:r, :c], np.asarray(alone.compute.r_die)
    )
