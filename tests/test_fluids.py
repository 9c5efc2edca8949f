"""Coolant properties: CoolProp fluids evaluated at the loop's design temperature when
params are built, checked against CoolProp itself and a textbook table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import SMALL
from CoolProp.CoolProp import PropsSI

from twin_core import drivers
from twin_core.fluids import fluid_properties
from twin_core.params import build_params
from twin_core.site import Fluid, SiteError, load_site


def test_water_matches_the_textbook_table():
    # Incropera & DeWitt, Fundamentals of Heat and Mass Transfer, Table A.6, saturated
    # water at 300 K: v_f = 1.003e-3 m3/kg (997.0 kg/m3), c_p,f = 4.179 kJ/(kg K).
    rho, cp = fluid_properties(Fluid(coolprop="Water"), "f", 300.0 - 273.15)
    assert rho == pytest.approx(1 / 1.003e-3, rel=1e-3)
    assert cp == pytest.approx(4179.0, rel=1e-3)


def test_glycol_is_evaluated_at_the_given_temperature():
    # The seeded PG25 loop: CoolProp's incompressible MPG at 25 % by mass. Warmer glycol
    # is lighter and holds more heat per kg (the old constants, 1030 kg/m3 and
    # 3900 J/(kg K), were 1.5 % heavy and 1.1 % short).
    name = "INCOMP::MPG[0.25]"
    rho30, cp30 = fluid_properties(Fluid(coolprop=name), "f", 30.0)
    rho40, cp40 = fluid_properties(Fluid(coolprop=name, at_c=40.0), "f", 30.0)
    assert rho30 == PropsSI("D", "T", 303.15, "P", 101325.0, name)
    assert cp40 == PropsSI("C", "T", 313.15, "P", 101325.0, name)
    assert rho40 < rho30 and cp40 > cp30
    assert rho30 == pytest.approx(1014.9, abs=0.1) and cp30 == pytest.approx(3944.6, abs=0.1)


def test_params_use_coolprop_at_the_supply_setpoint():
    # small.yaml: supply 30 C, CDU loop 1 m3, facility loop 20 m3, one 40 L/s duty pump,
    # GB200 racks at 150 L/min.
    site = load_site(
        SMALL,
        {
            "cooling.tcs_fluid": {"coolprop": "INCOMP::MPG[0.25]"},
            "cooling.facility_water.fluid": {"coolprop": "Water"},
        },
    )
    p = build_params(site, drivers.load_drivers(site), horizon_s=10.0, dt=1.0, dtype=np.float64)
    pg = [PropsSI(k, "T", 303.15, "P", 101325.0, "INCOMP::MPG[0.25]") for k in ("D", "C")]
    water = [PropsSI(k, "T", 303.15, "P", 101325.0, "Water") for k in ("D", "C")]
    rack = 150 / 60000 * pg[0] * pg[1]
    assert float(np.max(p.compute.coolant_c_w_per_k)) == pytest.approx(rack, rel=1e-12)
    assert float(p.cooling.tcs_heat_capacity[0]) == pytest.approx(1.0 * pg[0] * pg[1], rel=1e-12)
    assert float(p.cooling.fws_heat_capacity) == pytest.approx(20 * water[0] * water[1], rel=1e-12)
    assert float(p.cooling.fws_c_per_pump) == pytest.approx(0.040 * water[0] * water[1], rel=1e-12)


def test_fixed_properties_still_work_and_need_both_values():
    assert fluid_properties(Fluid(cp_j_per_kg_k=4180, density_kg_per_m3=995), "f", 30) == (
        995,
        4180,
    )
    for fluid, message in [
        ({"cp_j_per_kg_k": 4180}, "give coolprop, or both cp_j_per_kg_k and density_kg_per_m3"),
        ({"coolprop": "Water", "cp_j_per_kg_k": 4180}, "give coolprop or fixed properties"),
        ({"cp_j_per_kg_k": 4180, "density_kg_per_m3": 995, "at_c": 30}, "at_c applies only"),
    ]:
        with pytest.raises(SiteError) as info:
            load_site(SMALL, {"cooling.tcs_fluid": fluid})
        assert str(info.value).startswith("cooling.tcs_fluid: ") and message in str(info.value)


def test_only_the_heos_and_incompressible_backends_are_accepted():
    with pytest.raises(SiteError) as info:
        load_site(SMALL, {"cooling.tcs_fluid": {"coolprop": "REFPROP::/tmp/lib.so"}})
    assert str(info.value).startswith("cooling.tcs_fluid.coolprop: ")


def test_unknown_fluid_and_steam_name_the_field():
    with pytest.raises(SiteError) as info:
        fluid_properties(Fluid(coolprop="Nonsense"), "cooling.tcs_fluid", 30.0)
    assert (
        str(info.value) == "cooling.tcs_fluid.coolprop: CoolProp has no liquid 'Nonsense' at 30 C"
    )
    with pytest.raises(SiteError) as info:
        fluid_properties(Fluid(coolprop="Water", at_c=110.0), "cooling.tcs_fluid", 30.0)
    assert str(info.value) == "cooling.tcs_fluid.coolprop: 'Water' is not a liquid at 110 C"


def test_the_table_is_coolprop_and_spares_its_import():
    """The seeded fluids come from the table written from CoolProp (exact on its 1 K
    points, within 1e-5 between), so building params does not import CoolProp."""
    from twin_core import fluids

    for name in fluids.TABULATED:
        entry = fluids._table()[name]
        for k in range(len(entry["density_kg_per_m3"]) - 1):
            t = entry["from_c"] + k * entry["step_c"]
            assert fluids._tabulated(name, t) == fluids._evaluate(name, t, "f"), (name, t)
            mid = fluids._tabulated(name, t + 0.5)
            assert mid is not None
            for got, want in zip(mid, fluids._evaluate(name, t + 0.5, "f"), strict=True):
                assert got == pytest.approx(want, rel=1e-5), (name, t + 0.5)
    code = (
        "import sys; from twin_core.site import Fluid; from twin_core.fluids import "
        "fluid_properties as f; f(Fluid(coolprop='INCOMP::MPG[0.25]'), 'f', 30.0); "
        "f(Fluid(coolprop='Water'), 'f', 32.5); print('CoolProp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
