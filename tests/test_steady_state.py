"""Steady state against a hand calculation: fixed load, fixed ambient -> rack outlet
temperature, GPU die temperature, dry-cooler fan power and PUE.

The hand calculation below re-derives every relation from the textbook formulas with the
numbers of tests/sites/small.yaml and the GB200 catalog entry; it shares no code with the
model except the site loader.
"""

from __future__ import annotations

import math

import pytest
from conftest import constant_weather, run64, small_site, steady_load
from hand import it_design, meter, poly, rack_ac, rack_dc, three_point_loss

# One worker runs the module: its module-scoped fixture is computed once, not per worker.
pytestmark = pytest.mark.xdist_group("steady-state")

AMBIENT_C = 15.0
UTIL = 0.8


def hand_calculation():
    # Rack (GB200 NVL72 catalog numbers) at utilization 0.8, no throttling.
    gpu_w = 160 + (1200 - 160) * UTIL
    dc = rack_dc("GB200_NVL72", UTIL)
    psu = three_point_loss([0.94, 0.96, 0.91], 198000)
    it = 8 * rack_ac("GB200_NVL72", dc)
    q_liq_rack = 0.85 * dc
    q_air = 8 * (0.15 * dc + poly(psu, dc))

    # Technology loop of one CDU (4 racks, PG25) and its counterflow plate exchanger.
    c_rack = 150 / 60000 * 1030 * 3900
    c_tcs = 4 * c_rack
    tcs_pump = 200e3 * 4 * 150 / 60000 / 0.7
    c_fws = 40e-3 * 995 * 4180
    c_min, c_max = min(c_tcs, c_fws / 2), max(c_tcs, c_fws / 2)
    ntu, cr = 200000 / c_min, c_min / c_max
    eps = (1 - math.exp(-ntu * (1 - cr))) / (1 - cr * math.exp(-ntu * (1 - cr)))
    q_cdu = 4 * q_liq_rack
    t_fws = 30.0  # fans hold the setpoint
    t_tcs = t_fws + (q_cdu + tcs_pump) / (eps * c_min) - q_cdu / c_tcs
    rise = q_liq_rack / c_rack
    outlet = t_tcs + rise
    die = t_tcs + 0.5 * rise + 0.033 * gpu_w

    # Facility loop and dry coolers: find the fan speed whose heat rejection matches.
    fws_pump = 250e3 * 40e-3 / 0.75
    fws_in = 2 * (q_cdu + tcs_pump) + q_air * 1.03 + fws_pump
    t_return = t_fws + fws_in / c_fws

    def rejected(speed):
        c_air = 4 * speed * 40 * 1.16 * 1006
        ua = 4 * 60000 * speed**0.8
        cmin, cmax = min(c_air, c_fws), max(c_air, c_fws)
        n, r = ua / cmin, cmin / cmax
        e = 1 - math.exp((n**0.22 / r) * (math.exp(-r * n**0.78) - 1))
        return e * cmin * (t_return - AMBIENT_C)

    lo, hi = 0.2, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rejected(mid) < fws_in else (lo, mid)
    speed = 0.5 * (lo + hi)
    fans = 4 * 8000 * speed**3
    cooling = 2 * tcs_pump + fws_pump + fans + 0.03 * q_air

    facility = meter(it, cooling, it_design("GB200_NVL72"))
    return {
        "it_w": it,
        "rack_outlet_c": outlet,
        "tcs_supply_mean_c": t_tcs,
        "gpu_temp_mean_c": die,
        "fan_speed": speed,
        "dry_cooler_fans_w": fans,
        "facility_w": facility,
        "pue": facility / it,
    }


@pytest.fixture(scope="module")
def steady():
    site = small_site(constant_weather(AMBIENT_C), steady_load(UTIL))
    return run64(site, 8 * 3600, dt=10.0, record_s=600)


@pytest.mark.parametrize(
    "name",
    [
        "it_w",
        "rack_outlet_c",
        "tcs_supply_mean_c",
        "gpu_temp_mean_c",
        "fan_speed",
        "dry_cooler_fans_w",
        "facility_w",
    ],
)
def test_steady_state_matches_hand_calculation(steady, name):
    expected = hand_calculation()[name]
    assert steady.means[name][-1] == pytest.approx(expected, rel=1e-6)


def test_steady_pue(steady):
    expected = hand_calculation()["pue"]
    last = steady.means["facility_w"][-1] / steady.means["it_w"][-1]
    assert last == pytest.approx(expected, rel=1e-6)
    assert 1.05 < expected < 1.2  # a liquid-cooled site with free cooling


def test_no_chillers_and_no_throttling_at_steady_state(steady):
    assert steady.kpis["chiller_hours"] == 0.0
    assert steady.kpis["throttled_gpu_hours"] == 0.0
    assert steady.means["facility_supply_c"][-1] == pytest.approx(30.0, abs=1e-6)
