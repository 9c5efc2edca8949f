"""The site-level energy closure (twin_core/closure.py): meter in = heat out + stored over
the run, and the one-interval lag it sees where the per-domain residuals cannot."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import constant_weather, run64, small_site, steady_load

from twin_core.closure import site_closure_j


def _end_term(m) -> float:
    """What the Jacobi coupling leaves in the closure, by hand (record = one interval):
    the meter reads the rack storage and cooling load one interval late, so the first
    interval's are metered (primed) before the run and the last interval's after it."""
    first = m["rack_storage_w"][0] + m["cooling_w"][0]
    last = m["rack_storage_w"][-1] + m["cooling_w"][-1]
    return float(first - last)


@pytest.fixture(scope="module")
def job_start():
    """GB300 racks, idle for two minutes, then a training job: the IT load steps up."""
    parts = {"halls.0.rack_type": "GB300_NVL72", "workload.training.0.start_s": 120}
    return run64(small_site(constant_weather(15.0), parts), 600, 1.0, 1)


def test_steady_run_closes():
    r = run64(small_site(constant_weather(15.0), steady_load(0.8)), 600, 1.0, 1)
    assert site_closure_j(r.means, 1.0) == pytest.approx(_end_term(r.means), abs=1e-3)
    assert r.kpis["site_closure_rel_error"] < 1e-5  # the fans settling: ~2.5 kJ of 0.6 GJ
    assert r.kpis["energy_balance_rel_error"] < 1e-12


def test_closure_is_the_coupling_end_term_and_catches_a_one_interval_lag(job_start):
    m = job_start.means
    meter_j = float(np.sum(m["facility_w"]))
    closure = site_closure_j(m, 1.0)
    # exactly the in-transit energy at the two ends, whatever the swings in between
    assert closure == pytest.approx(_end_term(m), abs=1e-9 * meter_j)
    assert job_start.kpis["site_closure_mwh"] * 3.6e9 == pytest.approx(closure, rel=1e-12)
    assert job_start.kpis["site_closure_rel_error"] == pytest.approx(abs(closure) / meter_j)
    assert job_start.kpis["energy_balance_rel_error"] < 1e-12  # every domain closes
    # A meter reading the IT power one more interval late (a shifted series): each
    # domain's balance is untouched, but the run's closure is off by the step in the
    # meter between the run's first and last interval (~0.43 MW x 1 s)
    lagged = dict(m)
    lagged["facility_w"] = np.concatenate([m["facility_w"][:1], m["facility_w"][:-1]])
    step = float(m["facility_w"][-1] - m["facility_w"][0])
    assert step > 0.3e6
    assert site_closure_j(lagged, 1.0) - _end_term(m) == pytest.approx(-step, rel=1e-9)
    assert abs(site_closure_j(lagged, 1.0) - _end_term(m)) > 1e5 * abs(closure - _end_term(m))
