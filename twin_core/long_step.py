"""Planning-sized coupling intervals: what a step does when dt is long beside the fast loops.

A step longer than ``LONG_STEP_S`` is long beside the dry-cooler fan loop (integral time
kp/ki, 10 s by default), a training iteration (seconds to a minute) and a die's thermal
time constant (~10 s), and the facility water loop (a few minutes) may turn over within
it. Such a step (the switch is static: dt is a compile-time constant)

- takes the fan loop as settled: the dry coolers remove what holds the water leaving
  them at the setpoint, within what their fans can do (cooling.py);
- advances the facility water node by a linearly implicit exponential update, exact for
  a linear loop and stable at any dt (cooling.py);
- averages each training job's utilization over the step and reports the hottest die
  at the peak of its periodic compute/communication cycle (compute.py).

At or below those a step is the explicit one the model always had.
"""

from __future__ import annotations

import jax.numpy as jnp

LONG_STEP_S = 10.0  # a coupling interval above this uses the long-step scheme
MAX_DT_S = 900.0  # the longest interval, checked against dt = 1 s in tests/test_long_steps.py


AVERAGED_ABOVE_S = LONG_STEP_S  # and above this, workload phases are averaged over the step


def is_long(dt: float) -> bool:
    return dt > LONG_STEP_S


def is_averaged(dt: float) -> bool:
    """Whether a step averages workload phases: a sampled phase aliases once dt is a
    sizeable part of an iteration (up to 10 s the step samples it, as it always did)."""
    return dt > AVERAGED_ABOVE_S


def relax(x0, rate, target, dt):
    """Exact step of dx/dt = rate * (target - x); returns (x1, mean of x over the step)."""
    kdt = rate * dt
    small = kdt < 1e-4
    decay = jnp.exp(-kdt)
    # (1 - exp(-kdt)) / kdt, with its series where kdt is tiny (a failed exchanger).
    frac = jnp.where(small, 1.0 - 0.5 * kdt, -jnp.expm1(-kdt) / jnp.where(small, 1.0, kdt))
    x1 = target + (x0 - target) * decay
    mean = target + (x0 - target) * frac
    return x1, mean


def time_in_window(t, period, start, length):
    """Time within [0, t] (t >= 0) during which ``t' mod period`` lies in
    [start, start + length): the integral of a periodic on/off signal."""
    whole = jnp.floor(t / period)
    rest = t - whole * period
    return whole * length + jnp.clip(rest - start, 0.0, length)


def wrap(clock, dt, period):
    """A phase clock advanced by ``dt`` and wrapped into [0, period) however long dt is
    (negative, counting up to a start, until it reaches 0)."""
    c = clock + dt
    return jnp.where(c >= 0.0, jnp.mod(c, period), c)
