"""IT load from a measured series (twin_core/measured_load.py): where a window measures the
IT power, the rollout's workload is scaled to it.

The hand case: the small site's training job at a steady utilization of 0.8, against
measurements taken from the same site at 0.6. Utilization enters only through the scale
(u = 0.8 s), so the scale that reproduces the measured IT power is 0.6 / 0.8 = 0.75 exactly,
and with it the rollout is the 0.6 site's: the same IT power and GPU power, interval by
interval.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import F64, constant_weather, run64, small_site, steady_load

from twin_core.backtest import backtest
from twin_core.calibrate import Measured, window_params
from twin_core.contract import SERIES
from twin_core.coupling import init_state
from twin_core.measured_load import IT_SCALE
from twin_core.rollout import plan, run_jit

DT, HOURS = 60.0, 3
WEATHER = constant_weather(20.0)


def measured_at(util: float, *quantities: str) -> Measured:
    result = run64(small_site(steady_load(util), WEATHER), HOURS * 3600.0, DT, 3600.0)
    return Measured(3600.0, {q: np.asarray(result.means[q]) for q in quantities})


def window(site, measured: Measured):
    p = window_params(
        site, measured, offset_s=0.0, dt=DT, granularity="rack", dtype=F64, drivers=None
    )
    n_records, every = plan(measured.duration_s, DT, measured.step_s)
    _, (means, _) = run_jit(p, init_state(p), n_records, every)
    means = np.asarray(means)
    return p, {q: means[:, SERIES.index(q)] for q in ("it_w", "gpu_power_w", "facility_w")}


def test_a_measured_it_power_scales_the_workload_to_it():
    measured = measured_at(0.6, "it_w", "gpu_power_w", "ambient_c")
    p, modelled = window(small_site(steady_load(0.8), WEATHER), measured)
    scale = np.asarray(p.hourly[: HOURS + 1, IT_SCALE])
    np.testing.assert_allclose(scale, 0.75, rtol=1e-6)
    np.testing.assert_allclose(modelled["it_w"], measured.series["it_w"], rtol=1e-6)
    np.testing.assert_allclose(modelled["gpu_power_w"], measured.series["gpu_power_w"], rtol=1e-6)
    # 8 racks x 72 GPUs at 160 W idle + 1040 W x 0.6: the hand figure of the GPU power
    assert modelled["gpu_power_w"][-1] == pytest.approx(8 * 72 * (160 + 1040 * 0.6), rel=1e-6)


def test_without_a_measured_it_power_the_workload_is_the_site_s():
    measured = measured_at(0.6, "facility_w", "ambient_c")
    p, modelled = window(small_site(steady_load(0.8), WEATHER), measured)
    assert np.all(np.asarray(p.hourly[:, IT_SCALE]) == 1.0)
    own = run64(small_site(steady_load(0.8), WEATHER), HOURS * 3600.0, DT, 3600.0)
    np.testing.assert_allclose(modelled["it_w"], np.asarray(own.means["it_w"]), rtol=1e-12)


def test_a_step_in_the_measured_load_is_followed_hour_by_hour():
    """A load that steps from 0.6 to 0.8 between the first and the second hour (the
    scale's hour marks interpolate between 0.75 and 1, so the hours around the step are
    matched in their means, not at every instant)."""
    low = measured_at(0.6, "it_w")
    high = measured_at(0.8, "it_w")
    it_w = np.concatenate([low.series["it_w"][:1], high.series["it_w"][1:]])
    site = small_site(steady_load(0.8), WEATHER)
    _, modelled = window(site, Measured(3600.0, {"it_w": it_w}))
    np.testing.assert_allclose(modelled["it_w"], it_w, rtol=1e-4)
    # a backtest on the same window follows the measured IT power too
    bt = backtest(site, Measured(3600.0, {"it_w": it_w}), dt=DT)
    assert bt.stats["it_w"].cv_rmse_pct < 1e-3 and abs(bt.stats["it_w"].nmbe_pct) < 1e-3
