"""The chiller plant: lead/lag staging with standby units idle, curves held to their fitted
range, and the water-cooled option (condenser water loop, cooling towers, make-up water)
conserving energy and counting its water."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from conftest import F64, constant_weather, run64, steady_load

from twin_core import build_params, load_drivers
from twin_core.cooling import (
    CoolingInputs,
    CoolingState,
    chiller_capacity,
    chiller_power,
    stage,
)
from twin_core.cooling import step as cooling_step
from twin_core.coupling import init_state
from twin_core.curves import wet_bulb_stull
from twin_core.site import SiteError, load_site
from twin_core.tower import make_up_water, saturated_enthalpy, tower

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "tests/sites/small.yaml"
TOWER = ROOT / "tests/sites/small_tower.yaml"
SEEDED = sorted((ROOT / "scenarios").glob("*.yaml"))


def _params(site, dt: float = 1.0):
    return build_params(site, load_drivers(site), horizon_s=3600, dt=dt, dtype=F64).cooling


def _hot_step(path: Path, chillers_up: float, dt: float = 1.0):
    """One cooling step at 33 C with the dry-cooler fans already at full speed and the
    water leaving them 1 K above the 30 C setpoint: the trim chillers are needed."""
    site = load_site(path)
    p = build_params(site, load_drivers(site), horizon_s=3600, dt=dt, dtype=F64)
    s = init_state(p).cooling
    f = lambda v: jnp.asarray(v, F64)  # noqa: E731
    s = CoolingState(s.tcs_supply_c, f(30.0), f(1.0), f(31.0))
    c = p.cooling.cdu_mask.shape[0]
    x = CoolingInputs(
        heat_liquid_w=f(np.full(c, 450e3)),
        heat_air_w=f(80e3),
        ambient_c=f(33.0),
        rh=f(0.4),
        chillers_up=f(chillers_up),
        pumps_up=f(2.0),
        dry_coolers_up=f(4.0),
        cdu_up=f(np.ones(c)),
        swing_liquid_w=f(np.zeros(c)),
        swing_air_w=f(0.0),
        swing_share=f(0.0),
    )
    return p.cooling, _step(p.cooling, s, x, dt)[1]


_step = jax.jit(cooling_step, static_argnums=3)


# --------------------------------------------------------------------------- staging


def test_lead_lag_starts_a_lag_unit_only_when_those_running_are_full():
    cap = 500e3
    cases = [  # (load W, units up) -> running
        ((0.0, 3.0), 0.0),
        ((1.0, 3.0), 1.0),
        ((cap, 3.0), 1.0),  # the lead unit at full load
        ((cap + 1e3, 3.0), 2.0),  # a lag unit starts
        ((2.5 * cap, 3.0), 3.0),
        ((5.0 * cap, 3.0), 3.0),  # no more than are up
        ((cap, 0.0), 0.0),  # none up
    ]
    for (load, up), running in cases:
        assert float(stage(jnp.asarray(load), cap, jnp.asarray(up))) == running, (load, up)


def test_standby_chillers_draw_nothing():
    """A 697 kW trim load needs ceil(697 / 622) = 2 units (CAPFT at 30 C / 33 C gives
    622 kW each); with 2 or 6 units up the plant is the same: 4 standby units draw 0 W."""
    p, two = _hot_step(SMALL, chillers_up=2.0)
    _, six = _hot_step(SMALL, chillers_up=6.0)
    load = float(two.chiller_load_w)
    capacity = float(chiller_capacity(p, 30.0, 33.0))
    assert capacity == pytest.approx(621_796.5, rel=1e-9)
    assert load == pytest.approx(696_721.09, rel=1e-6)
    assert float(six.chillers_running) == float(two.chillers_running) == 2.0
    assert float(six.chillers_w) == float(two.chillers_w)
    assert float(six.electrical_w) == float(two.electrical_w)
    assert float(two.chillers_w) == pytest.approx(
        float(chiller_power(p, load, 2.0, 30.0, 33.0)), rel=1e-12
    )


def test_below_its_minimum_part_load_the_lead_chiller_cycles(small):
    """Below min PLR (0.15) the chiller runs at 0.15 for a share of the time: its power
    is proportional to the load, as EnergyPlus's cycling ratio makes it."""
    p = _params(small)
    cap = float(chiller_capacity(p, 30.0, 35.0))
    at_min = float(chiller_power(p, 0.15 * cap, 1.0, 30.0, 35.0))
    for share in (0.02, 0.05, 0.1):
        got = float(chiller_power(p, share * cap, 1.0, 30.0, 35.0))
        assert got == pytest.approx(at_min * share / 0.15, rel=1e-12)


# --------------------------------------------------------------------------- curve range


@pytest.mark.parametrize("path", SEEDED, ids=lambda p: p.stem)
def test_seeded_curves_evaluate_at_the_edge_of_their_fitted_range(path):
    """Every seeded chiller set carries its curves' fitted range (openstudio-standards:
    outdoor dry bulb 12.7-51.67 C, PLR 0-1); outside it a curve gives its edge value."""
    chillers = yaml.safe_load(path.read_text())["cooling"]["chillers"]
    assert chillers["curve_condenser_c"] == [12.7, 51.67]
    assert chillers["curve_plr"] == [0.0, 1.0]
    low, high = chillers["curve_leaving_c"]
    assert high - low == pytest.approx(5.0)  # the published 5-10 C, shifted
    site = load_site(SMALL, {"cooling.chillers": chillers, "cooling.supply_c": low + 2.0})
    p = _params(site)
    # hotter than the fit: the value at 51.67 C; colder leaving water: the value at the edge
    assert float(chiller_capacity(p, low + 2.0, 60.0)) == float(
        chiller_capacity(p, low + 2.0, 51.67)
    )
    assert float(chiller_power(p, 1e6, 1.0, low - 4.0, 60.0)) == float(
        chiller_power(p, 1e6, 1.0, low, 51.67)
    )
    assert float(chiller_power(p, 1e6, 1.0, high + 3.0, 5.0)) == float(
        chiller_power(p, 1e6, 1.0, high, 12.7)
    )
    # a part load past 1 evaluates EIRFPLR at 1 (the power at full load, no more)
    cap = float(chiller_capacity(p, low + 2.0, 35.0))
    assert float(chiller_power(p, 1.5 * cap, 1.0, low + 2.0, 35.0)) == pytest.approx(
        float(chiller_power(p, cap, 1.0, low + 2.0, 35.0)), rel=1e-12
    )


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"cooling.chillers.condenser": "water"},
            "cooling.chillers: condenser 'water' needs a cooling_tower section",
        ),
        (
            {"cooling.chillers.curve_plr": [1.0, 0.2]},
            "cooling.chillers: curve_plr: minimum 1 must be below maximum 0.2",
        ),
        (
            {"cooling.chillers.condenser": "steam"},
            "cooling.chillers.condenser: Input should be 'air' or 'water'",
        ),
    ],
)
def test_condenser_choice_is_validated(overrides, message):
    with pytest.raises(SiteError) as err:
        load_site(SMALL, overrides)
    assert str(err.value).startswith(message)


def test_a_tower_on_an_air_cooled_plant_is_refused():
    tower_section = load_site(TOWER).cooling.chillers.cooling_tower
    assert tower_section is not None
    with pytest.raises(SiteError) as err:
        load_site(TOWER, {"cooling.chillers.condenser": "air"})
    assert str(err.value) == (
        "cooling.chillers: cooling_tower: only for condenser 'water' (this one is 'air')"
    )


# --------------------------------------------------------------------------- tower


def test_saturated_air_enthalpy_matches_the_ashrae_table():
    # ASHRAE Handbook, Fundamentals (2017), ch. 1, Table 2, h_s in kJ/kg dry air
    for t_c, h_s in ((10.0, 29.348), (20.0, 57.544), (30.0, 100.00)):
        assert saturated_enthalpy(t_c) / 1e3 == pytest.approx(h_s, rel=5e-3)


def test_tower_fans_hold_the_design_approach_within_their_speed_range():
    """Two 700 kW cells, 5.56 K at 23.9 C wet bulb, 7.5 kW fans (small_tower.yaml)."""
    args = (2, 700e3, 5.56, 23.9, 7.5e3, 0.2)
    cases = [  # (heat W) -> (approach K, speed, fan W), at the design wet bulb
        (1.4e6, (5.56, 1.0, 15e3)),  # the design point
        (0.7e6, (5.56, 0.5, 15e3 * 0.125)),  # affinity law: half speed, 1/8 power
        (0.14e6, (5.56 * 0.1 / 0.2, 0.2, 15e3 * 0.008)),  # at minimum speed: closer
        (1.68e6, (5.56 * 1.2, 1.0, 15e3)),  # beyond full speed: wider
        (0.0, (0.0, 0.0, 0.0)),  # idle
    ]
    for heat, expected in cases:
        got = tower(heat, 23.9, *args)
        np.testing.assert_allclose([float(v) for v in got], expected, rtol=1e-12, atol=1e-12)
    # At a lower wet bulb saturated air holds less heat per kelvin, so the same heat
    # needs more air: cpe(23.9) / cpe(15) more, by hand from the enthalpies.
    cpe = lambda wb: (saturated_enthalpy(wb + 5.56) - saturated_enthalpy(wb)) / 5.56  # noqa: E731
    approach, speed, _ = tower(0.7e6, 15.0, *args)
    assert float(speed) == pytest.approx(0.5 * cpe(23.9) / cpe(15.0), rel=1e-12)
    assert 0.65 < float(speed) < 0.75
    assert float(approach) == pytest.approx(5.56, rel=1e-12)


def test_make_up_water_is_evaporation_drift_and_blowdown():
    # 1.2 MW from the water: E = 1.2e6 / 2.43e6 kg/s = 0.4938 L/s; drift 0.005 % of
    # 81 L/s = 0.00405 L/s; 4 cycles: B = E / 3 - D; M = E + D + B = 4 E / 3.
    e = 1.2e6 / 2.43e6 / 1000.0
    d = 5e-5 * 0.081
    make_up, evaporation, drift, blowdown = make_up_water(1.2e6, 0.081, 5e-5, 4.0)
    assert float(evaporation) == pytest.approx(e, rel=1e-12)
    assert float(drift) == pytest.approx(d, rel=1e-12)
    assert float(blowdown) == pytest.approx(e / 3.0 - d, rel=1e-12)
    assert float(make_up) == pytest.approx(4.0 * e / 3.0, rel=1e-12)
    assert float(make_up) * 1000.0 == pytest.approx(0.6584, abs=1e-4)  # L/s
    # Drift past what the cycles need: no blowdown, make-up = E + D.
    make_up, _, drift, blowdown = make_up_water(1.2e6, 0.081, 0.005, 50.0)
    assert float(blowdown) == 0.0
    assert float(make_up) == pytest.approx(e + 0.005 * 0.081, rel=1e-12)


def test_water_cooled_step_balances_at_short_and_long_steps():
    """The same hot step on the tower site: the towers reject the chillers' load, their
    power and the condenser pumps' heat, and the condensers see wet bulb + approach."""
    for dt in (1.0, 900.0):
        _, out = _hot_step(TOWER, chillers_up=3.0, dt=dt)
        running = float(out.chillers_running)
        assert running == 2.0  # of 3: one standby
        pumps = running * 200e3 * 0.027 / 0.75  # head x flow / efficiency per chiller
        heat = float(out.chiller_load_w) + float(out.chillers_w) + pumps
        assert float(out.tower_heat_w) == pytest.approx(heat, rel=1e-12)
        wet_bulb = float(wet_bulb_stull(33.0, 0.4))
        approach, _, fans = tower(heat, wet_bulb, 2, 700e3, 5.56, 23.9, 7.5e3, 0.2)
        assert float(out.condenser_c) == pytest.approx(wet_bulb + float(approach), rel=1e-12)
        assert float(out.tower_fans_w) == pytest.approx(float(fans), rel=1e-12)
        assert float(out.water_m3_per_s) == pytest.approx(
            heat / 2.43e6 / 1000.0 * 4.0 / 3.0, rel=1e-12
        )
        assert abs(float(out.residual_w)) < 1e-9 * heat


def test_water_cooled_plant_conserves_energy_and_counts_its_water():
    """Two hours at 33 C and 90 % load on the tower site (dt = 10 s): the chillers run,
    the towers reject their load + power + pump heat, the make-up water is 4/3 of the
    evaporation (4 cycles, drift below E / 3) and the KPIs add it up."""
    site = load_site(TOWER, {**constant_weather(33.0, rh=0.5), **steady_load(0.9)})
    r = run64(site, 2 * 3600, 10.0, 600)
    m = {k: np.asarray(v) for k, v in r.means.items()}
    assert np.all(m["chillers_running"][-3:] >= 1.0)
    assert np.all(m["chillers_running"] <= 2.0)  # the third unit is standby: never on
    pumps = m["chillers_running"] * 200e3 * 0.027 / 0.75
    np.testing.assert_allclose(
        m["tower_heat_w"], m["chiller_load_w"] + m["chillers_w"] + pumps, rtol=1e-9
    )
    np.testing.assert_allclose(
        m["water_m3_per_s"], m["tower_heat_w"] / 2.43e6 / 1000.0 * 4.0 / 3.0, rtol=1e-9
    )
    assert r.kpis["energy_balance_rel_error"] < 1e-9
    water_m3 = float(np.sum(m["water_m3_per_s"]) * 600.0)
    assert r.kpis["water_m3"] == pytest.approx(water_m3, rel=1e-9)
    assert water_m3 > 1.0
    assert r.kpis["wue_l_per_kwh"] == pytest.approx(water_m3 / r.kpis["it_energy_mwh"], rel=1e-9)
    assert m["facility_supply_c"][-1] == pytest.approx(30.0, abs=0.01)
