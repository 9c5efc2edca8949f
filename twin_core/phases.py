"""The phases of a training iteration: from the site file to the model's arrays, and the
mean utilization of each job over a coupling interval.

A job's iteration is a sequence of up to ``MAX_PHASES`` phases, each a share of the
iteration at a utilization (``site.TrainingPhase`` gives it as GPU power over TDP). The
model keeps the two-level summary it always had (``job_compute_s``, ``job_compute_util``,
``job_comm_util``: the phases above the iteration's mean utilization, and the rest) and
expresses every phase relative to it: its share of its group's time and its place
between the two levels. Long steps, the heat swing and live job updates work on the
summary; a short step integrates the phases themselves, so a sub-second iteration is
neither lost nor aliased at any dt.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from twin_core.long_step import time_in_window
from twin_core.pytree import Array
from twin_core.site import MAX_PHASES, RackType, TrainingJob


@dataclass(frozen=True)
class JobPhases:
    """One job's iteration for the model: the two-level summary and the phase table."""

    period_s: float
    compute_fraction: float  # share of the iteration in the high group
    compute_util: float  # time-weighted mean utilization of the high group
    comm_util: float  # of the low group (= compute_util when there is none)
    high: np.ndarray  # (K,) 1 for a phase of the high group
    share: np.ndarray  # (K,) share of its group's time; 0 pads
    weight: np.ndarray  # (K,) utilization = weight * compute_util + (1 - weight) * comm_util


def utilization_of_power(power_fraction: float, rt: RackType) -> float:
    """The utilization at which a GPU of ``rt`` draws ``power_fraction`` of its TDP (the
    model's GPU power is idle + (TDP - idle) u); at or below idle, 0."""
    span = rt.gpu_tdp_w - rt.gpu_idle_w
    return float(np.clip((power_fraction * rt.gpu_tdp_w - rt.gpu_idle_w) / span, 0.0, 1.0))


def phase_list(job: TrainingJob, rt: RackType) -> tuple[float, list[tuple[float, float]]]:
    """(iteration period, [(share of the iteration, utilization), ...]) of ``job`` on
    racks of type ``rt``: its two phases, its own phases, or the rack type's defaults."""
    period = job.iteration_s
    if job.compute_fraction is not None:
        assert job.compute_util is not None and job.comm_util is not None  # validated
        cf = job.compute_fraction
        return _period(period, rt), [(cf, job.compute_util), (1.0 - cf, job.comm_util)]
    phases = job.phases
    if phases is None:
        assert rt.training is not None  # Site validates that a default exists
        phases = rt.training.phases
    return _period(period, rt), [
        (ph.fraction, utilization_of_power(ph.power_fraction, rt)) for ph in phases
    ]


def _period(period: float | None, rt: RackType) -> float:
    if period is not None:
        return period
    assert rt.training is not None
    return rt.training.iteration_s


def job_phases(job: TrainingJob, rt: RackType) -> JobPhases:
    period, phases = phase_list(job, rt)
    frac = np.array([f for f, _ in phases])
    util = np.array([u for _, u in phases])
    if len(phases) == 2 and job.compute_fraction is not None:
        high = np.array([True, False])  # a two-phase job keeps its own compute/comm split
    else:
        high = util >= float(np.dot(frac, util)) - 1e-12
    high_time, low_time = float(frac[high].sum()), float(frac[~high].sum())
    hi_u = float(np.dot(frac[high], util[high]) / high_time)
    lo_u = float(np.dot(frac[~high], util[~high]) / low_time) if low_time > 0 else hi_u
    spread = hi_u - lo_u
    # where the two levels are equal, the phases sit on them by group
    weight = (util - lo_u) / spread if abs(spread) > 1e-12 else high.astype(float)
    share = np.where(high, frac / high_time, frac / max(low_time, 1e-300))
    pad = MAX_PHASES - len(phases)
    return JobPhases(
        period_s=period,
        compute_fraction=high_time,
        compute_util=hi_u,
        comm_util=lo_u,
        high=np.pad(high.astype(float), (0, pad)),
        share=np.pad(share, (0, pad)),
        weight=np.pad(weight, (0, pad)),
    )


def mean_utilization(
    period: Float[Array, " J"],
    compute_s: Float[Array, " J"],
    compute_util: Float[Array, " J"],
    comm_util: Float[Array, " J"],
    high: Float[Array, " JK"],
    share: Float[Array, " JK"],
    weight: Float[Array, " JK"],
    clock: Float[Array, " J"],
    dt: float,
) -> Float[Array, " J"]:
    """Each job's utilization averaged over [clock, clock + dt] (its phase clock; negative
    before the job starts): the time in every phase integrated exactly, phases in order
    from the start of the iteration. The phase tables are (J * MAX_PHASES,), flat."""
    k = MAX_PHASES
    high, share, weight = (a.reshape(-1, k) for a in (high, share, weight))
    group_s = jnp.where(high > 0, compute_s[:, None], (period - compute_s)[:, None])
    length = share * group_s
    end = jnp.cumsum(length, axis=1)
    start = end - length
    level = jnp.clip(weight * compute_util[:, None] + (1.0 - weight) * comm_util[:, None], 0, 1)
    t0 = jnp.maximum(clock, 0.0)[:, None]
    t1 = jnp.maximum(clock + dt, 0.0)[:, None]
    p = period[:, None]
    inside = time_in_window(t1, p, start, length) - time_in_window(t0, p, start, length)
    return jnp.sum(level * inside, axis=1) / dt
