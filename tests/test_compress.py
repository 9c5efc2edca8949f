"""Merging identical racks and CDUs is exact: the merged rollout gives the full rollout's
KPIs and series (float64, to rounding), whatever the mix of rack types, workloads and
failures; and it shrinks the seeded sites to a handful of elements."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import F64, ROOT, small_site

from twin_core import build_params, load_drivers
from twin_core.compress import compress
from twin_core.rollout import SERIES, simulate
from twin_core.site import load_site

MIXED = {
    # two halls of different rack types and sizes, a job, an inference pool, idle racks
    "halls": [
        {"name": "a", "cdus": 3, "racks_per_cdu": 4, "rack_type": "GB200_NVL72"},
        {"name": "b", "cdus": 2, "racks_per_cdu": 3, "rack_type": "GB300_NVL72"},
    ],
    "workload.training.0.racks": 7,
    "workload.inference": [{"name": "chat", "racks": 5, "mean_util": 0.6, "daily_amplitude": 0.3}],
    "failures": [
        {"equipment": "cdu", "index": 1, "at": "3m", "repair_at": "6m"},
        {"equipment": "chiller", "index": 0, "at": "1m"},
    ],
}


@pytest.mark.parametrize(
    "overrides",
    [{}, MIXED, {**MIXED, "controls.smoothing_enabled": False, "weather.offset_c": 15}],
    ids=["small", "mixed", "mixed-hot"],
)
def test_merged_rollout_equals_the_full_one(overrides):
    site = small_site(overrides)
    full = simulate(site, 600, 1.0, 60, dtype=F64, merge_identical=False)
    merged = simulate(site, 600, 1.0, 60, dtype=F64)
    for key, value in full.kpis.items():
        if key != "energy_balance_rel_error":  # a ratio of rounding residuals
            assert merged.kpis[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
    for name in SERIES:
        if not name.startswith("residual_"):
            np.testing.assert_allclose(merged.means[name], full.means[name], rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(merged.maxes[name], full.maxes[name], rtol=1e-10, atol=1e-9)
    assert merged.kpis["energy_balance_rel_error"] < 1e-12


def test_failed_cdu_is_kept_apart():
    site = small_site(MIXED)
    p = compress(build_params(site, load_drivers(site), horizon_s=600, dt=1.0, dtype=F64))
    counts = np.asarray(p.cooling.cdu_count)
    # hall a: CDU 1 fails (alone), the other two hold different job/pool/idle mixes
    assert counts.sum() == 5
    failed = int(np.asarray(p.failures.index)[0])
    assert counts[failed] == 1
    assert np.asarray(p.compute.rack_count).sum(axis=0) @ counts == 18  # every rack once


def test_seeded_fairwater_is_a_handful_of_elements():
    site = load_site(ROOT / "scenarios" / "fairwater-wi.yaml")
    full = build_params(site, load_drivers(site), horizon_s=3600, dt=10.0)
    merged = compress(full)
    assert np.shape(full.compute.mask) == (12, 240)  # 2,880 racks
    racks, cdus = np.shape(merged.compute.mask)
    assert racks * cdus <= 8
    weight = np.asarray(merged.power.rack_weight)
    assert weight.sum() == 2880
    assert float(np.sum(np.asarray(merged.compute.gpus) * weight)) == site.gpu_count
