"""Backtests: the (calibrated) twin run over a measured window it was not fitted on,
compared with the measurements by the Guideline 14 statistics ``calibrate`` reports.

The window starts ``offset_s`` seconds after the site's start (its workload schedule
and failures are read at those times) and the rollout starts there from the measured
state (``start_state``): what was measured at the window's first interval is set, the
rest is the model's own initial guess. Measured weather drives the rollout as in
calibration, and a measured IT power its IT load (measured_load.py). Nothing was fitted
on the window, so the statistics use its n points (p = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np

from twin_core.calibrate import DRIVEN, Measured, window_params
from twin_core.contract import SERIES
from twin_core.drivers import DriverData
from twin_core.fit_stats import FitStats, block_means, fit_stats
from twin_core.params import Granularity
from twin_core.rollout import plan, run_jit
from twin_core.site import Site
from twin_core.window import INITIALISES, first_values, start_state

NOT_INITIALISED: tuple[str, ...] = (
    "compute.storage_j (power-smoothing storage: at its target charge)",
    "compute.dc_out_w (rack DC power: idle, settles in the first step)",
    "compute.mean_w, compute.peak_w (smoothing controller: idle, settle over minutes)",
    "cooling.fan_integral (dry-cooler fan PI integrator: 0.5)",
    "power.* (UPS, filters: settled to the first step's meter power)",
)


@dataclass(frozen=True)
class Backtest:
    """A backtest: ``stats`` per measured (non-driver) quantity at ``stats_s``;
    ``modelled`` the model's series on the measured axis; ``initialised``: state set from
    measurements (state -> value), and ``not_initialised`` the rest."""

    stats: dict[str, FitStats]
    modelled: dict[str, np.ndarray] = field(repr=False)
    measured: Measured = field(repr=False)
    offset_s: float
    stats_s: float
    initialised: dict[str, float]
    not_initialised: tuple[str, ...] = NOT_INITIALISED

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": {
                "start_s": self.measured.start_s,
                "offset_s": self.offset_s,
                "step_s": self.measured.step_s,
                "duration_s": self.measured.duration_s,
            },
            "stats_s": self.stats_s,
            "stats": {q: s.to_dict() for q, s in self.stats.items()},
            "initialised": self.initialised,
            "not_initialised": list(self.not_initialised),
        }


def backtest(
    site: Site,
    measured: Measured,
    *,
    dt: float,
    offset_s: float = 0.0,
    stats_s: float = 3600.0,
    granularity: Granularity = "rack",
    dtype=jnp.float64,
    drivers: DriverData | None = None,
) -> Backtest:
    """Run ``site`` over the window of ``measured`` (starting ``offset_s`` after the
    site's start) from the measured state, and compare."""
    fitted = [q for q in measured.series if q not in DRIVEN and q in SERIES]
    if not fitted:
        raise ValueError(
            f"measured: nothing to compare with (only drivers: {', '.join(measured.series)})"
        )
    if not (math.isfinite(offset_s) and offset_s >= 0):
        raise ValueError(f"offset_s: {offset_s:g} s must be 0 or more")
    k0 = offset_s / dt
    if abs(k0 - round(k0)) > 1e-6:
        raise ValueError(f"offset_s: {offset_s:g} s is not a whole number of dt = {dt:g} s")
    if not (math.isfinite(stats_s) and stats_s > 0):
        raise ValueError(f"stats_s: {stats_s:g} s must be positive")
    n_records, every = plan(measured.duration_s, dt, measured.step_s)
    p = window_params(
        site, measured, offset_s=offset_s, dt=dt, granularity=granularity, dtype=dtype,
        drivers=drivers,
    )  # fmt: skip
    values = first_values(measured.series)
    s0 = start_state(
        p,
        jnp.asarray(round(k0), jnp.int32),
        *(jnp.asarray(values[q], dtype) for q in INITIALISES),
    )
    _, (means, _) = run_jit(p, s0, n_records, every)
    means = np.asarray(means, np.float64)
    modelled = {q: means[:, SERIES.index(q)] for q in fitted}

    def stats(q: str) -> FitStats:
        y = np.asarray(measured.series[q], np.float64)
        return fit_stats(
            block_means(y, measured.step_s, stats_s),
            block_means(np.where(np.isfinite(y), modelled[q], np.nan), measured.step_s, stats_s),
            0,
        )

    return Backtest(
        stats={q: stats(q) for q in fitted},
        modelled=modelled,
        measured=measured,
        offset_s=offset_s,
        stats_s=stats_s,
        initialised={INITIALISES[q]: v for q, v in values.items() if math.isfinite(v)},
    )
