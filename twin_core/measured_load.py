"""IT load from a measured series: where a window measures the IT power (``it_w``), the
rollout's IT load follows it instead of the site's workload schedule alone.

The workload keeps its shape (training phases, inference pools, job starts): the drivers'
``it_scale`` column, which multiplies every workload's utilization, is set over the window
so that the modelled IT power has the measured interval means. IT power is affine in the
scale but for the PSU losses (quadratic) and throttling: two rollouts (scale 0 and 1)
give the scale to first order, three more rollouts correct the rest. It is solved once, at the
site's own parameters, before a fit (a fitted PSU loss then changes the IT power the
scale was solved for; fit it against the meter, not it_w).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from twin_core.contract import SERIES
from twin_core.coupling import TwinState
from twin_core.drivers import COLUMNS
from twin_core.hourly_means import hourly_from_means
from twin_core.params import Params
from twin_core.pytree import replace
from twin_core.rollout import run_jit

IT = "it_w"
IT_SCALE = COLUMNS.index("it_scale")
CORRECTIONS = 3  # rollouts correcting the first-order solve


def with_measured_it(
    p: Params,
    it_w: np.ndarray,
    step_s: float,
    offset_s: float,
    state0: Callable[[Params], TwinState],
    n_records: int,
    every: int,
) -> Params:
    """``p`` (reaching the window's end; ``state0(p)`` its state at the window's start,
    ``offset_s`` into the site's time, primed with the load it is given) with the
    ``it_scale`` column from the window's first hour mark on set so that the rollout's IT
    power over the window (``n_records`` records of ``every`` steps, the measured interval
    ``step_s``) has the means ``it_w`` (NaN: not measured; the scale there follows its
    neighbours)."""
    y = np.asarray(it_w, np.float64)
    h0 = math.floor(offset_s / 3600.0)
    lead = round((offset_s - h0 * 3600.0) / step_s)  # intervals before the window
    hours = p.hourly.shape[0] - h0
    column = SERIES.index(IT)

    def modelled(scale: np.ndarray) -> np.ndarray:
        hourly = jnp.asarray(p.hourly).at[h0:, IT_SCALE].set(jnp.asarray(scale, p.hourly.dtype))
        q = replace(p, hourly=hourly)
        _, (means, _) = run_jit(q, state0(q), n_records, every)
        return np.asarray(means[:, column], np.float64)

    idle, full = modelled(np.zeros(hours)), modelled(np.ones(hours))
    slope = full - idle
    ok = np.isfinite(y) & (slope > 1e-9 * np.max(np.abs(full)))
    if not ok.any():
        return p

    def hourly(scale: np.ndarray) -> np.ndarray:
        means = np.concatenate([np.full(lead, np.nan), np.where(ok, scale, np.nan)])
        return np.maximum(hourly_from_means(means, step_s, hours), 0.0)

    # First order from scale 0 and 1, then fixed-slope corrections: the model sees the
    # hourly values, not each interval's scale, so a per-interval secant would divide
    # noise by noise; the slope's error (PSU curvature) only slows the convergence.
    scale = np.where(ok, (y - idle) / np.where(ok, slope, 1.0), np.nan)
    values = hourly(scale)
    for _ in range(CORRECTIONS):
        scale = scale + np.where(ok, (y - modelled(values)) / np.where(ok, slope, 1.0), 0.0)
        values = hourly(scale)
    hourly_all = jnp.asarray(p.hourly).at[h0:, IT_SCALE].set(jnp.asarray(values, p.hourly.dtype))
    return replace(p, hourly=hourly_all)
