"""The seeded sites: every number sourced, and each site runs a day of sensible physics."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

from twin_core.rollout import simulate
from twin_core.site import CATALOG_DIR, load_site

SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
NUMBER = re.compile(r"(?<![A-Za-z_])-?\d+(\.\d+)?")


@pytest.mark.parametrize("path", [*SCENARIOS, *CATALOG_DIR.glob("*.yaml")], ids=lambda p: p.name)
def test_every_number_carries_a_source_or_estimate(path: Path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if NUMBER.search(code.replace("GB200", "").replace("GB300", "").replace("NVL72", "")):
            assert "#" in line, f"{path.name}:{number}: number without a source comment: {line!r}"


def test_three_seeded_sites_exist():
    assert [p.stem for p in SCENARIOS] == ["fairwater-wi", "loughton-uk", "narvik-no"]


@pytest.mark.parametrize(
    ("name", "racks", "gpus"),
    [("fairwater-wi", 2880, 207360), ("loughton-uk", 320, 23040), ("narvik-no", 720, 51840)],
)
def test_site_sizes(name, racks, gpus):
    site = load_site(ROOT / "scenarios" / f"{name}.yaml")
    assert (site.rack_count, site.gpu_count) == (racks, gpus)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fairwater-wi", "loughton-uk", "narvik-no"])
def test_a_summer_day_is_sensible(name):
    site = load_site(ROOT / "scenarios" / f"{name}.yaml")
    k = simulate(site, 86400, 10.0, 600).kpis
    assert 1.05 < k["pue"] < 1.25
    assert k["max_gpu_temp_c"] < 85.0 and k["throttled_gpu_hours"] == 0.0
    assert k["min_cap_fraction"] == 1.0  # the interconnect is not binding
    assert k["energy_balance_rel_error"] < 1e-4  # float32
    assert k["water_m3"] == 0.0  # closed loops


@pytest.mark.slow
def test_fairwater_heat_wave_needs_the_trim_chillers():
    path = ROOT / "scenarios" / "fairwater-wi.yaml"
    normal = simulate(load_site(path), 86400, 10.0, 600).kpis
    hot = simulate(load_site(path, {"weather.offset_c": 8.0}), 86400, 10.0, 600).kpis
    assert hot["chiller_hours"] > normal["chiller_hours"] + 100
    assert hot["pue"] > normal["pue"]
