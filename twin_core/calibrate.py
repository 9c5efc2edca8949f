"""Calibration: fit a site's physical parameters to measured series by Gauss-Newton
(Levenberg-Marquardt) through the whole rollout.

The residuals r_i = w_q (ŷ_i + b_q − y_i) / σ_q compare each measured quantity q (a
contract quantity, the mean over each measurement interval) with the rollout's record of
it (``b_q``: a fitted sensor bias, 0 unless ``bias.<q>`` is fitted). Few parameters and
many residuals: the Jacobian comes from forward-mode differentiation (``jax.jacfwd``,
one tangent per parameter through the scan), each step solves
(JᵀJ + λ diag JᵀJ) δ = −Jᵀr in coordinates scaled to each parameter's bounds, and the
same JᵀJ gives the parameters' covariance and identifiability (``fit_stats``).

Measured weather (``ambient_c``, ``rh``) drives the rollout in place of the site's
weather, and a measured IT power (``it_w``) its IT load: the site's workload scaled to it
(measured_load.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twin_core import contract
from twin_core.calibratable import CALIBRATABLE, Calibratable, lookup
from twin_core.compress import compress
from twin_core.contract import SERIES
from twin_core.coupling import init_state
from twin_core.drivers import COLUMNS, DriverData, load_drivers
from twin_core.fit_stats import FitStats, Identifiability, block_means, covariance, fit_stats
from twin_core.fit_stats import identifiability as identify
from twin_core.gauss_newton import levenberg_marquardt
from twin_core.hourly_means import SMOOTHING as SMOOTHING
from twin_core.hourly_means import hourly_from_means
from twin_core.measured_load import IT, with_measured_it
from twin_core.params import Granularity, Params, build_params
from twin_core.pytree import replace
from twin_core.rollout import _run, plan
from twin_core.site import Site, with_overrides
from twin_core.window import first_values, start_state

# Measured quantities that drive the rollout (drivers column), not fitted against.
DRIVEN: dict[str, int] = {"ambient_c": COLUMNS.index("ambient_c"), "rh": COLUMNS.index("rh")}
MEASURABLE: tuple[str, ...] = (*SERIES, "rh")
BIAS = "bias."
# Noise assumed where none is given: 0.1 K for a temperature (a class A RTD is ±0.15 K),
# else 1 % of the measured mean (a revenue meter is 0.2-0.5 %, a CT-based one 1-2 %).
TEMPERATURE_NOISE_C = 0.1
RELATIVE_NOISE = 0.01
REFERENCE_ROUNDS = 4  # most rollouts at ``reference_dt`` (calibrate)


@dataclass(frozen=True)
class Measured:
    """Measured series on one time axis: ``series[q][k]`` is the mean of quantity ``q``
    (a contract quantity, or ``rh``) over [k·step_s, (k+1)·step_s) from the site's
    start; NaN where missing. ``start_s``: when the window began (Unix seconds, 0 if
    unknown), for provenance."""

    step_s: float
    series: dict[str, np.ndarray]
    start_s: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.step_s) and self.step_s > 0):
            raise ValueError(f"measured.step_s: {self.step_s:g} s must be positive")
        if not self.series:
            raise ValueError("measured: no series")
        lengths = set()
        for name, values in self.series.items():
            if name not in MEASURABLE:
                raise ValueError(
                    f"measured.{name}: not a quantity of the contract "
                    "(e.g. it_w, facility_w, tcs_supply_mean_c, ambient_c, rh)"
                )
            v = np.asarray(values, np.float64)
            if v.ndim != 1 or v.size == 0:
                raise ValueError(f"measured.{name}: must be a non-empty series")
            if np.isinf(v).any():
                raise ValueError(f"measured.{name}: holds an infinite value")
            if not np.isfinite(v).any():
                raise ValueError(f"measured.{name}: holds no value")
            lengths.add(v.size)
        if len(lengths) > 1:
            raise ValueError(f"measured: series of different lengths {sorted(lengths)}")

    @property
    def n(self) -> int:
        return len(next(iter(self.series.values())))

    @property
    def duration_s(self) -> float:
        return self.n * self.step_s


@dataclass(frozen=True)
class Estimate:
    """A fitted parameter: its ``start`` (the site's value; 0 for a bias), the fitted
    ``value``, its standard error (inf when the data cannot identify it) and bounds."""

    path: str
    start: float
    value: float
    std_error: float
    lower: float
    upper: float
    step_correction: float = 0.0  # of ``value``: the rollout step's own error, removed

    @property
    def at_bound(self) -> bool:
        span = self.upper - self.lower
        return min(self.value - self.lower, self.upper - self.value) <= 1e-6 * span

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "value": self.value,
            "std_error": self.std_error,
            "lower": self.lower,
            "upper": self.upper,
            "at_bound": self.at_bound,
            "step_correction": self.step_correction,
        }


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` found. ``before``/``after``: Guideline 14 statistics per fitted
    quantity at the site's own values and at the estimates; ``overrides``: the site
    fields to write (biases excluded; they belong to the sensors); ``modelled``: the
    fitted model's series (biases included), on the measured axis."""

    estimates: dict[str, Estimate]
    before: dict[str, FitStats]
    after: dict[str, FitStats]
    identifiability: Identifiability
    overrides: dict[str, float]
    iterations: int
    converged: bool
    cost_before: float
    cost_after: float
    measured: Measured
    stats_s: float
    noise: dict[str, float]
    modelled: dict[str, np.ndarray] = field(repr=False)
    reference_dt: float | None = None  # the step the estimates were corrected to

    @property
    def biases(self) -> dict[str, float]:
        return {
            k.removeprefix(BIAS): e.value for k, e in self.estimates.items() if k.startswith(BIAS)
        }

    @property
    def warnings(self) -> list[str]:
        out = self.identifiability.warnings()
        out += [
            f"{e.path}: at its bound {e.value:g} (widen the bounds, or the model lacks "
            "something the data show)"
            for e in self.estimates.values()
            if e.at_bound
        ]
        if not self.converged:
            out.append(f"not converged in {self.iterations} iterations")
        return out

    def site(self, base: Site) -> Site:
        """``base`` with the calibrated values."""
        return with_overrides(base, dict(self.overrides))

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimates": {k: e.to_dict() for k, e in self.estimates.items()},
            "before": {k: s.to_dict() for k, s in self.before.items()},
            "after": {k: s.to_dict() for k, s in self.after.items()},
            "identifiability": self.identifiability.to_dict(),
            "overrides": self.overrides,
            "warnings": self.warnings,
            "iterations": self.iterations,
            "converged": self.converged,
            "cost_before": self.cost_before,
            "cost_after": self.cost_after,
            "window": {
                "start_s": self.measured.start_s,
                "step_s": self.measured.step_s,
                "duration_s": self.measured.duration_s,
            },
            "stats_s": self.stats_s,
            "noise": self.noise,
            "reference_dt": self.reference_dt,
        }


@dataclass(frozen=True)
class _Parameter:
    path: str
    entry: Calibratable | None  # None: a sensor bias
    start: float
    lower: float
    upper: float


def _parameters(
    site: Site, fit: dict[str, tuple[float, float]], fitted: list[str]
) -> list[_Parameter]:
    if not fit:
        raise ValueError(
            f"fit: give at least one parameter (choose from {', '.join(sorted(CALIBRATABLE))}, "
            "or bias.<quantity>)"
        )
    out = []
    for path, bounds in fit.items():
        lo, hi = (float(b) for b in bounds)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"fit.{path}: bounds must be finite numbers")
        if not lo < hi:
            raise ValueError(f"fit.{path}: lower bound {lo:g} must be below upper {hi:g}")
        if path.startswith(BIAS):
            q = path.removeprefix(BIAS)
            if q not in fitted:
                raise ValueError(f"fit.{path}: {q} is not a measured quantity that is fitted")
            entry, start = None, 0.0
        else:
            found = lookup(path, site)
            if found is None:
                raise ValueError(
                    f"fit.{path}: not a calibratable parameter (choose from "
                    f"{', '.join(sorted(CALIBRATABLE))}, or bias.<quantity>)"
                )
            entry = found[1]
            start = entry.start(site, path)
            if start == 0.0 and not entry.from_zero:
                raise ValueError(
                    f"fit.{path}: the site's value is 0, and this parameter is fitted as a "
                    "scale of it (set a non-zero value first)"
                )
        if not lo <= start <= hi:
            raise ValueError(
                f"fit.{path}: the site's value {start:g} is outside the bounds [{lo:g}, {hi:g}]"
            )
        out.append(_Parameter(path, entry, start, lo, hi))
    return out


def noise_scale(name: str, values: np.ndarray) -> float:
    """The noise assumed for a quantity without a given one (module constants)."""
    if contract.QUANTITY[name].unit == "C":
        return TEMPERATURE_NOISE_C
    mean = float(np.nanmean(np.abs(values)))
    return RELATIVE_NOISE * mean if mean > 0 else 1.0


def with_measured_weather(p: Params, measured: Measured) -> Params:
    """``p`` with its hourly weather columns replaced by values whose interpolation
    reproduces the measured interval means (``hourly_from_means``)."""
    return weather_from(p, measured, 0.0)


def window_params(
    site: Site,
    measured: Measured,
    *,
    offset_s: float,
    dt: float,
    granularity: Granularity,
    dtype,
    drivers: DriverData | None,
) -> Params:
    """Params reaching the end of the measured window (``offset_s`` into the site's time),
    driven by the measured weather and, where measured, IT load (measured_load.py),
    identical racks merged, on the device."""
    drivers = drivers if drivers is not None else load_drivers(site)
    p = build_params(
        site,
        drivers,
        horizon_s=offset_s + measured.duration_s,
        dt=dt,
        granularity=granularity,
        dtype=dtype,
        host=True,
    )
    p = jax.device_put(compress(weather_from(p, measured, offset_s)))
    if IT not in measured.series:
        return p
    k0 = jnp.asarray(round(offset_s / dt), jnp.int32)
    first = [jnp.asarray(v, dtype) for v in first_values(measured.series).values()]
    n_records, every = plan(measured.duration_s, dt, measured.step_s)

    def state0(q: Params):
        return start_state(q, k0, *first) if offset_s else init_state(q)

    return with_measured_it(
        p, measured.series[IT], measured.step_s, offset_s, state0, n_records, every
    )


def weather_from(p: Params, measured: Measured, offset_s: float) -> Params:
    """``p`` with its hourly weather from the hour mark at or before ``offset_s`` on
    replaced by values whose interpolation gives the measured interval means (the
    window's own hours only; earlier hours are the site's)."""
    hourly = np.array(p.hourly)
    h0 = math.floor(offset_s / 3600.0)
    lead = round((offset_s - h0 * 3600.0) / measured.step_s)  # intervals before the window
    hours = hourly.shape[0] - h0
    for name, column in DRIVEN.items():
        if name in measured.series:
            v = np.concatenate([np.full(lead, np.nan), measured.series[name]])
            hourly[h0:, column] = hourly_from_means(v, measured.step_s, hours)
    return replace(p, hourly=np.asarray(hourly, hourly.dtype))


def check(
    site: Site,
    measured: Measured,
    *,
    fit: dict[str, tuple[float, float]],
    dt: float,
    noise: dict[str, float] | None = None,
    weights: dict[str, float] | None = None,
    stats_s: float = 3600.0,
    max_iterations: int = 20,
    reference_dt: float | None = None,
) -> None:
    """What ``calibrate`` checks before it builds anything (ValueError naming the field),
    so that a service can refuse a bad request before it accepts it."""
    _check(site, measured, fit, dt, noise, weights, stats_s, max_iterations)
    if reference_dt is not None:
        _check_reference(reference_dt, dt, 0.0, measured)


def _check(
    site: Site,
    measured: Measured,
    fit: dict[str, tuple[float, float]],
    dt: float,
    noise: dict[str, float] | None,
    weights: dict[str, float] | None,
    stats_s: float,
    max_iterations: int,
) -> tuple[list[str], list[_Parameter]]:
    fitted = [q for q in measured.series if q not in DRIVEN]
    if not fitted:
        raise ValueError(
            f"measured: nothing to fit against (only drivers: {', '.join(measured.series)})"
        )
    params = _parameters(site, fit, fitted)
    for name, table in (("noise", noise or {}), ("weights", weights or {})):
        for q, v in table.items():
            if q not in fitted:
                raise ValueError(f"{name}.{q}: not a measured quantity that is fitted")
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}.{q}: {v:g} must be a positive number")
    if not (math.isfinite(stats_s) and stats_s > 0):
        raise ValueError(f"stats_s: {stats_s:g} s must be positive")
    if max_iterations < 1:
        raise ValueError("max_iterations: must be at least 1")
    plan(measured.duration_s, dt, measured.step_s)
    return fitted, params


def calibrate(
    site: Site,
    measured: Measured,
    *,
    fit: dict[str, tuple[float, float]],
    dt: float,
    noise: dict[str, float] | None = None,
    weights: dict[str, float] | None = None,
    stats_s: float = 3600.0,
    max_iterations: int = 20,
    tolerance: float = 1e-3,
    granularity: Granularity = "rack",
    dtype=jnp.float64,
    drivers: DriverData | None = None,
    offset_s: float = 0.0,
    reference_dt: float | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    on_iteration: Callable[[int, float, dict[str, float]], None] | None = None,
) -> Calibration:
    """Fit the parameters ``fit`` (path -> (lower, upper), site units; paths from
    ``CALIBRATABLE`` or ``bias.<quantity>``) to ``measured``, rolling the site out at
    coupling interval ``dt`` over the measured window (recorded at the measurement
    interval). ``noise``: σ per quantity (default ``noise_scale``); ``weights``: extra
    weight per quantity (default 1); ``stats_s``: the resolution of the statistics
    (Guideline 14: hourly); ``tolerance``: stop once an iteration lowers the cost by
    less than this fraction of one residual's variance (cost / (n - p)): the parameters
    then move by a few hundredths of their standard error;
    ``offset_s``: where the window starts on the site's clock (a window mid-run: the
    workload schedule is read from there, and the state starts from the measured one as
    in ``twin_core.backtest``);
    ``reference_dt``: a finer step (e.g. 1 s) to correct the estimates to: the fit runs
    at ``dt`` (fast), then a rollout at ``reference_dt`` measures what the coarse step
    itself adds to the modelled series and a Gauss-Newton step on the fit's Jacobian
    takes it out of the estimates (``step_correction``), repeated from the corrected
    estimates until they settle (at most ``REFERENCE_ROUNDS`` rollouts), so they
    describe the plant and not the step (a deferred correction; the statistics stay
    those of the fit at ``dt``);
    ``progress(iteration, max_iterations, cost)``; ``on_iteration(iteration, cost,
    values)``: the parameters (site units) after each accepted step."""
    fitted, params = _check(site, measured, fit, dt, noise, weights, stats_s, max_iterations)
    if not (math.isfinite(offset_s) and offset_s >= 0):
        raise ValueError(f"offset_s: {offset_s:g} s must be a whole number of dt = {dt:g} s, >= 0")
    _whole_steps(offset_s, dt, "dt")
    if reference_dt is not None:
        _check_reference(reference_dt, dt, offset_s, measured)
    drivers = drivers if drivers is not None else load_drivers(site)
    start = [jnp.asarray(v, dtype) for v in first_values(measured.series).values()]

    def rollout_at(step: float) -> Callable[[np.ndarray], jnp.ndarray]:
        """The modelled series at coupling interval ``step`` as a function of the
        parameters (site units), biases included."""
        p0 = window_params(
            site, measured, offset_s=offset_s, dt=step, granularity=granularity,
            dtype=dtype, drivers=drivers,
        )  # fmt: skip
        k0 = jnp.asarray(round(offset_s / step), jnp.int32)
        n_records, every = plan(measured.duration_s, step, measured.step_s)

        def model(x):
            q = p0
            for j, par in enumerate(params):
                if par.entry is not None:
                    q = par.entry.apply(q, x[j], par.start)
            s0 = start_state(q, k0, *start) if offset_s else init_state(q)
            _, (means, _) = _run(q, s0, n_records, every)
            return means[:, columns] + (x @ bias_column)[None, :]

        return model

    y = np.stack([np.asarray(measured.series[q], np.float64) for q in fitted], axis=1)
    valid = np.isfinite(y)
    sigma = np.array(
        [(noise or {}).get(q) or noise_scale(q, y[:, i]) for i, q in enumerate(fitted)]
    )
    weight = np.array([(weights or {}).get(q, 1.0) for q in fitted])
    scale = weight / sigma
    columns = np.array([SERIES.index(q) for q in fitted])
    lo = np.array([x.lower for x in params])
    span = np.array([x.upper - x.lower for x in params])
    bias_column = np.zeros((len(params), len(fitted)))
    for j, x in enumerate(params):
        if x.entry is None:
            bias_column[j, fitted.index(x.path.removeprefix(BIAS))] = 1.0

    coarse_at = rollout_at(dt)

    def predict(z):
        return coarse_at(lo + z * span)

    y_filled = jnp.asarray(np.where(valid, y, 0.0), dtype)
    mask = jnp.asarray(valid, dtype)
    scale_j = jnp.asarray(scale, dtype)

    def residuals(z):
        model = predict(z)
        return ((model - y_filled) * scale_j * mask).reshape(-1), model

    evaluate = jax.jit(jax.jacfwd(residuals, has_aux=True))

    def at(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        jac, model = evaluate(jnp.asarray(z, dtype))
        model = np.asarray(model, np.float64)
        r = (np.where(valid, model - y, 0.0) * scale).reshape(-1)
        return r, np.asarray(jac, np.float64), model

    z0 = np.array([(x.start - x.lower) / (x.upper - x.lower) for x in params])
    dof = int(np.count_nonzero(valid)) - len(params)

    def accepted(k: int, z: np.ndarray, cost: float) -> None:
        if on_iteration is not None:
            x = lo + z * span
            on_iteration(k, cost, {p.path: float(x[j]) for j, p in enumerate(params)})

    sol = levenberg_marquardt(
        at,
        z0,
        dof=dof,
        max_iterations=max_iterations,
        tolerance=tolerance,
        progress=progress,
        accepted=accepted,
    )
    z, r, jac, model = sol.z, sol.r, sol.jac, sol.aux

    names = [x.path for x in params]
    ident = identify(jac, names)
    group = np.where(valid, np.arange(len(fitted))[None, :], -1).reshape(-1)
    cov = covariance(jac, r, group) * span[:, None] * span[None, :]
    weak = set(ident.unidentifiable)
    correction = np.zeros(len(params))
    if reference_dt is not None:
        fine_at = jax.jit(rollout_at(reference_dt))
        keep = [x.path not in weak for x in params]
        zc, coarse = z, model
        # The step's error depends on the parameters a little: taken out where the
        # corrected estimates are, until they stop moving (a tenth of a standard error).
        for _ in range(REFERENCE_ROUNDS):
            fine = np.asarray(fine_at(jnp.asarray(lo + zc * span, dtype)))
            defect = (np.where(valid, fine - coarse, 0.0) * scale).reshape(-1)
            moved = np.clip(z + step_correction(jac, defect, keep), 0.0, 1.0)
            settled = np.all(np.abs(moved - zc) * span <= 0.1 * np.sqrt(np.diag(cov)))
            zc = moved
            if settled:
                break
            coarse = at(zc)[2]  # the fit's compiled evaluation; the Jacobian is discarded
        correction = (zc - z) * span
    x_hat = lo + z * span + correction
    estimates = {
        x.path: Estimate(
            x.path,
            x.start,
            float(x_hat[j]),
            math.inf if x.path in weak else math.sqrt(max(float(cov[j, j]), 0.0)),
            x.lower,
            x.upper,
            float(correction[j]),
        )
        for j, x in enumerate(params)
    }
    overrides: dict[str, float] = {}
    for j, x in enumerate(params):
        if x.entry is not None:
            overrides.update(x.entry.to_site(site, x.path, float(x_hat[j])))

    def stats(m: np.ndarray) -> dict[str, FitStats]:
        return {
            q: fit_stats(
                block_means(np.where(valid[:, i], y[:, i], np.nan), measured.step_s, stats_s),
                block_means(np.where(valid[:, i], m[:, i], np.nan), measured.step_s, stats_s),
                len(params),
            )
            for i, q in enumerate(fitted)
        }

    return Calibration(
        estimates=estimates,
        before=stats(sol.start_aux),
        after=stats(model),
        identifiability=ident,
        overrides=overrides,
        iterations=sol.iterations,
        converged=sol.converged,
        cost_before=sol.start_cost,
        cost_after=sol.cost,
        measured=measured,
        stats_s=stats_s,
        noise={q: float(s) for q, s in zip(fitted, sigma, strict=True)},
        modelled={q: model[:, i] for i, q in enumerate(fitted)},
        reference_dt=reference_dt,
    )


def _check_reference(reference_dt: float, dt: float, offset_s: float, measured: Measured) -> None:
    if not (math.isfinite(reference_dt) and 0 < reference_dt < dt):
        raise ValueError(
            f"reference_dt: {reference_dt:g} s must be positive and finer than dt = {dt:g} s"
        )
    _whole_steps(offset_s, reference_dt, "reference_dt")
    plan(measured.duration_s, reference_dt, measured.step_s)


def _whole_steps(offset_s: float, step: float, name: str) -> None:
    """The window starts on a step of the rollout (ValueError naming offset_s)."""
    if abs(offset_s / step - round(offset_s / step)) > 1e-6:
        suffix = ", >= 0" if name == "dt" else ""
        raise ValueError(
            f"offset_s: {offset_s:g} s must be a whole number of {name} = {step:g} s{suffix}"
        )


def step_correction(jac: np.ndarray, defect: np.ndarray, identifiable: list[bool]) -> np.ndarray:
    """The Gauss-Newton step (scaled coordinates) that takes the step's ``defect`` (the
    fine rollout minus the coarse one, as scaled residuals) out of the fit: the coarse
    model plus the defect stands for the fine one, so its optimum moves by
    -(JᵀJ)⁻¹Jᵀ·defect. Parameters the data cannot identify keep their value."""
    keep = np.flatnonzero(identifiable)
    dz = np.zeros(jac.shape[1])
    if keep.size:
        dz[keep] = np.linalg.lstsq(jac[:, keep], -defect, rcond=None)[0]
    return dz
