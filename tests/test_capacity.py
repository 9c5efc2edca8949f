"""Capacity planning (twin_core/capacity.py, ``twin plan capacity``): the planner's count
against hand calculations on the small site, the binding constraint named, bad input
refused in one line.

Every planner call here shares one compiled batch (same site shape, horizon, dt and
round size), so the module pays for one compilation of the rollout and one of its
forward-mode derivative."""

from __future__ import annotations

import math

import pytest
from conftest import SMALL, constant_weather, small_site
from hand import RACKS, rack_ac, rack_dc
from typer.testing import CliRunner

from services.cli.main import app
from twin_core.capacity import Limits, plan_capacity
from twin_core.capacity_sites import Battery, CapacityError, parse_mix, split_count

HORIZON_S, DT = 1800.0, 10.0
INTERCONNECT_MW = 3.0
# The small site's CDU pump (200 kPa, 70 %) moving 150 L/min per rack: W per rack.
CDU_PUMP_PER_RACK_W = 200e3 * 150 / 60000 / 0.7
FACILITY_PUMP_W = 250e3 * 0.040 / 0.75  # one duty pump: 250 kPa x 40 L/s / 75 %

# The small site made hand-calculable: its own racks idle, the planned racks at full
# power all the time (one phase at TDP), a lossless electrical chain, no chillers, no
# air-handling fans, dry-cooler fans of negligible power and a flat 20 C ambient.
HAND = {
    **constant_weather(20.0),
    "workload.training": [],
    "rack_types.GB200_NVL72.training": {
        "iteration_s": 2.0,
        "phases": [{"name": "full", "fraction": 1.0, "power_fraction": 1.0}],
    },
    "cooling.chillers.units": 0,
    "cooling.air_handling_w_per_w": 0.0,
    "cooling.dry_coolers.fan_power_kw_per_unit": 0.001,
    "power.interconnect_limit_mw": INTERCONNECT_MW,
    "power.distribution_loss_fraction": 0.0,
    "power.ups.efficiency": {"at_20": 1.0, "at_50": 1.0, "at_100": 1.0},
    "power.transformers.no_load_loss_fraction": 0.0,
    "power.transformers.load_loss_fraction": 0.0,
    "power.misc_fixed_mw": 0.0,
    "power.misc_fraction_of_it": 0.0,
}
# Dry coolers large enough to hold a 25 C supply at 20 C ambient, keeping full-TDP dies
# (~40 K over their coolant) below the 85 C throttle start.
BIG_PLANT = {"cooling.dry_coolers.ua_w_per_k_per_unit": 2_000_000, "cooling.supply_c": 25.0}


def hand_count() -> tuple[int, float, float]:
    """(racks, W per planned rack, W of the site before any) under INTERCONNECT_MW."""
    per_rack = rack_ac("GB200_NVL72", rack_dc("GB200_NVL72", 1.0)) + CDU_PUMP_PER_RACK_W
    idle_rack = rack_ac("GB200_NVL72", rack_dc("GB200_NVL72", 0.0)) + CDU_PUMP_PER_RACK_W
    fixed = 8 * idle_rack + FACILITY_PUMP_W
    return math.floor((INTERCONNECT_MW * 1e6 - fixed) / per_rack), per_rack, fixed


def plan(site, **kw):
    mix = parse_mix(["GB200_NVL72"], site)
    kw = {"cases": ["uncapped"], "guess": False, **kw}
    return plan_capacity(site, mix, horizon_s=HORIZON_S, dt=DT, **kw).cases[0]


def test_interconnect_binds_at_the_hand_calculated_count():
    racks, per_rack, fixed = hand_count()
    # 129.8 kW DC at full load -> 137.0 kW through the Titanium PSUs, + 0.71 kW pumping
    assert per_rack == pytest.approx(137_734, abs=1)
    assert fixed == pytest.approx(420_058, abs=1)  # 8 idle racks at 50.8 kW + 13.3 kW
    assert racks == 18  # (3 MW - 420 kW) / 137.7 kW = 18.7
    result = plan(small_site(HAND, BIG_PLANT), guess=True)
    assert result.racks == racks
    assert result.gpus == 72 * racks
    assert result.binding == ("interconnect",)
    # The margin left at the answer is the hand-calculated one, and one rack more fails.
    margin = result.checks["interconnect"].margin
    assert margin == pytest.approx(INTERCONNECT_MW - (fixed + racks * per_rack) / 1e6, abs=2e-3)
    assert all(c.passed for c in result.checks.values())
    assert result.checks["gpu_temp"].limit == 85.0  # GB200's throttle start (catalog)
    # The gradient estimate (a linear extrapolation from one CDU of racks) lands within
    # a rack of the answer: facility power is linear in the count here.
    assert result.guess is not None and abs(result.guess - 18.7) < 1.0


def test_hall_space_binds_before_the_interconnect():
    result = plan(small_site(HAND, BIG_PLANT), space=7)
    assert (result.racks, result.binding) == (7, ("hall_space",))
    assert result.checks["hall_space"].margin == 0.0
    assert result.checks["interconnect"].margin > 11 * 0.137  # 11 racks of room left


def test_cooling_binds_when_the_plant_is_smaller():
    # Four 60 kW/K dry coolers (the site's own) and no chillers: at 20 C ambient and a
    # 30 C supply setpoint they reject ~4 x 60 kW/K x 10 K = 2.4 MW at full fan speed
    # with the water at the setpoint, less with one out; heat beyond that warms the loop.
    site = small_site(HAND, {"power.interconnect_limit_mw": 50.0})
    result = plan(site)
    assert result.binding in (("cooling_n1",), ("gpu_temp", "cooling_n1"))
    assert 0 < result.racks < hand_count()[0] * 50 / 3
    one_more = result.racks + 1
    assert one_more in result.evaluated
    assert all(c.passed for c in result.checks.values())
    assert result.checks["cooling_n1"].margin < result.checks["gpu_temp"].margin


def test_power_caps_fit_racks_until_the_cap_depth_binds():
    """Capped, the site's cap loop holds the meter at the interconnect limit: racks fit
    while the cap they need stays at or above --min-cap (0.9). Hand: the cap c that holds
    3 MW with n planned racks, c = (3 MW - fixed - n x pumping) / (n x full-load AC)."""
    _, per_rack, fixed = hand_count()
    full_ac = per_rack - CDU_PUMP_PER_RACK_W

    def cap(n: int) -> float:
        return (INTERCONNECT_MW * 1e6 - fixed - n * CDU_PUMP_PER_RACK_W) / (n * full_ac)

    assert (round(cap(20), 4), round(cap(21), 4)) == (0.9362, 0.8914)
    result = plan(small_site(HAND, BIG_PLANT), cases=["capped"])
    assert (result.racks, result.binding) == (20, ("cap_depth",))
    assert result.checks["cap_depth"].value == pytest.approx(cap(20), abs=2e-4)
    # The loop starts settled (coupling.init_state): no start-up overshoot at the meter.
    assert result.checks["interconnect"].value == pytest.approx(INTERCONNECT_MW, rel=1e-4)


# Training that swings: 7 s at full power, 3 s at a fifth, so the meter steps by the
# racks' swing every 10 s; checked against a 0.5 MW/s grid ramp limit at dt = 1 s.
SWING = {
    "iteration_s": 10.0,
    "phases": [
        {"name": "compute", "fraction": 0.7, "power_fraction": 1.0},
        {"name": "comm", "fraction": 0.3, "power_fraction": 0.2},
    ],
}
MAX_RAMP = 0.5


def plan_swinging(rack_type: str, cases: list[str]):
    site = small_site(HAND, BIG_PLANT, {f"rack_types.{rack_type}.training": SWING})
    return plan_capacity(
        site, parse_mix([rack_type], site), horizon_s=600.0, dt=1.0, cases=cases,
        limits=Limits(max_ramp_mw_per_s=MAX_RAMP), battery=Battery(2.0, 0.5), guess=False,
    ).cases  # fmt: skip


def test_a_firming_battery_lifts_the_grid_ramp_bound_to_the_interconnect():
    """Uncapped, the grid ramp binds: each planned rack steps the meter by its swing (a
    lossless chain here). A 2 MW firming battery takes the steps; the grid ramp then sits
    at its limit and the interconnect binds at its hand count."""
    idle, tdp = RACKS["GB200_NVL72"][:2]
    comm_util = (0.2 * tdp - idle) / (tdp - idle)  # a fifth of TDP per GPU
    full, comm = (rack_ac("GB200_NVL72", rack_dc("GB200_NVL72", u)) for u in (1.0, comm_util))
    swing = full - comm
    assert round(swing) == 80_600  # W per rack, once an iteration
    uncapped, battery = plan_swinging("GB200_NVL72", ["uncapped", "battery"])
    assert (uncapped.racks, uncapped.binding) == (
        math.floor(MAX_RAMP * 1e6 / swing),
        ("grid_ramp",),
    )
    assert uncapped.checks["grid_ramp"].value == pytest.approx(6 * swing / 1e6, rel=1e-3)
    assert (battery.racks, battery.binding) == (hand_count()[0], ("interconnect",))
    assert battery.checks["grid_ramp"].value == pytest.approx(MAX_RAMP, rel=1e-6)


def test_gb300_smoothing_lifts_the_grid_ramp_bound():
    """GB300's power smoothing (floor and ramp limits in the racks) cuts the steps the
    grid sees: several times the racks fit, and then the interconnect binds."""
    uncapped, smoothing = plan_swinging("GB300_NVL72", ["uncapped", "smoothing"])
    assert uncapped.binding == ("grid_ramp",)
    assert smoothing.binding == ("interconnect",)
    assert smoothing.racks > 3 * uncapped.racks
    assert smoothing.checks["grid_ramp"].margin > 0


def test_mix_split_and_largest_remainder():
    assert split_count(10, {"GB200_NVL72": 0.25, "GB300_NVL72": 0.75}) == {
        "GB200_NVL72": 3,  # 2.5 -> the larger remainder first, ties in order given
        "GB300_NVL72": 7,
    }
    site = small_site()
    assert parse_mix(["GB200_NVL72=1", "GB300_NVL72=3"], site) == {
        "GB200_NVL72": 0.25,
        "GB300_NVL72": 0.75,
    }
    with pytest.raises(CapacityError, match=r"^--rack-type 'GB300_NVL72=-1': share must"):
        parse_mix(["GB300_NVL72=-1"], site)


def test_a_mix_is_planned_in_its_shares_up_to_the_hand_count():
    """Half GB200, half GB300 (both at TDP): the count split by largest remainder, the
    interconnect binding where the hand sum of both types' racks passes 3 MW."""
    full = HAND["rack_types.GB200_NVL72.training"]
    site = small_site(HAND, BIG_PLANT, {"rack_types.GB300_NVL72.training": full})
    mix = parse_mix(["GB200_NVL72=1", "GB300_NVL72=1"], site)
    _, per_gb200, fixed = hand_count()
    per_gb300 = rack_ac("GB300_NVL72", rack_dc("GB300_NVL72", 1.0)) + CDU_PUMP_PER_RACK_W

    def facility_w(n: int) -> float:
        c = split_count(n, mix)
        return fixed + c["GB200_NVL72"] * per_gb200 + c["GB300_NVL72"] * per_gb300

    hand = max(n for n in range(40) if facility_w(n) <= INTERCONNECT_MW * 1e6)
    assert hand == 18  # 9 + 9: 2.891 MW; a 19th (GB200) rack makes 3.029 MW
    result = plan_capacity(site, mix, horizon_s=HORIZON_S, dt=DT, cases=["uncapped"]).cases[0]
    assert (result.racks, result.binding) == (hand, ("interconnect",))
    assert result.counts == {"GB200_NVL72": 9, "GB300_NVL72": 9}
    assert result.gpus == 18 * 72
    assert result.checks["interconnect"].value == pytest.approx(facility_w(hand) / 1e6, abs=2e-3)


def test_planner_refuses_bad_limits_naming_them():
    site = small_site()
    with pytest.raises(CapacityError, match=r"^--min-cap: must be in \(0, 1\], got 1.5$"):
        plan(site, limits=Limits(min_cap_fraction=1.5))
    with pytest.raises(CapacityError, match=r"^--case battery: give --battery-mw"):
        plan(site, cases=["battery"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rack-type", "GB900"], "error: --rack-type 'GB900': unknown rack type (known: "
         "GB200_NVL72, GB300_NVL72)"),
        (["--rack-type", "GB300_NVL72", "--max-ramp", "-2"],
         "error: --max-ramp: must be > 0, got -2"),
        (["--rack-type", "GB300_NVL72", "--space", "-1"], "error: --space: must be >= 0, got -1"),
        (["--rack-type", "GB300_NVL72", "--case", "cheap"],
         "error: --case 'cheap': unknown case (choose from uncapped, capped, smoothing, battery)"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line_and_exit_2(args, message):
    result = CliRunner().invoke(app, ["plan", "capacity", str(SMALL), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [message]
