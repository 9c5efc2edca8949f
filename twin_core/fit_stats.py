"""Goodness of fit and parameter statistics for calibration (NumPy only, no JAX).

Per measured quantity, ASHRAE Guideline 14-2014 (Measurement of Energy, Demand, and
Water Savings, section 4.3.3.4 / Annex B) statistics with its n - p degrees of freedom,
where y_i is measured, ŷ_i modelled, ȳ the measured mean, n the number of (hourly)
points and p the number of fitted parameters:

    CV(RMSE) = 100 · sqrt( Σ (y_i − ŷ_i)² / (n − p) ) / ȳ                [%]
    NMBE     = 100 · Σ (y_i − ŷ_i) / ((n − p) · ȳ)                       [%]
    R²       = 1 − Σ (y_i − ŷ_i)² / Σ (y_i − ȳ)²

NMBE > 0 means the model under-predicts. Guideline 14 accepts a calibrated model at
hourly CV(RMSE) <= 30 % and |NMBE| <= 10 %.

Parameters: the covariance of a weighted least-squares estimate from the Jacobian of
its normalised residuals, and identifiability from the singular values of that
Jacobian with its columns scaled to unit length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# A direction is "near-singular" when its singular value (of the column-normalised
# Jacobian) is below this fraction of the largest: the data then constrain a change of
# 1 in the parameters along it a thousand times less than the best-determined direction.
RCOND = 1e-3
# A parameter belongs to a near-singular direction when its share of the direction's
# (unit) vector is at least this.
MEMBER = 0.2


@dataclass(frozen=True)
class FitStats:
    """Guideline 14 statistics of one quantity: ``n`` points compared (after averaging to
    the statistics resolution), CV(RMSE) and NMBE in percent, and R² (NaN where undefined:
    n <= p, a zero measured mean, or a constant measured series for R²)."""

    n: int
    cv_rmse_pct: float
    nmbe_pct: float
    r2: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "cv_rmse_pct": self.cv_rmse_pct,
            "nmbe_pct": self.nmbe_pct,
            "r2": self.r2,
        }


def fit_stats(measured: np.ndarray, modelled: np.ndarray, p: int) -> FitStats:
    """CV(RMSE), NMBE and R² (module docstring) over the points where both are finite;
    ``p``: parameters fitted (the n - p degrees of freedom)."""
    y = np.asarray(measured, np.float64)
    yhat = np.asarray(modelled, np.float64)
    ok = np.isfinite(y) & np.isfinite(yhat)
    y, yhat = y[ok], yhat[ok]
    n = int(y.size)
    if n - p <= 0 or n == 0:
        return FitStats(n, math.nan, math.nan, math.nan)
    ybar = float(np.mean(y))
    err = y - yhat
    sse = float(np.sum(err**2))
    sst = float(np.sum((y - ybar) ** 2))
    if ybar == 0.0:
        cv = nmbe = math.nan
    else:
        cv = 100.0 * math.sqrt(sse / (n - p)) / ybar
        nmbe = 100.0 * float(np.sum(err)) / ((n - p) * ybar)
    r2 = 1.0 - sse / sst if sst > 0 else math.nan
    return FitStats(n, cv, nmbe, r2)


def block_means(values: np.ndarray, step_s: float, resolution_s: float) -> np.ndarray:
    """Means over consecutive blocks of ``resolution_s`` of a series sampled every
    ``step_s`` (a trailing partial block is dropped; NaN points are skipped, an all-NaN
    block is NaN). A series at ``resolution_s`` or coarser is returned as it is."""
    v = np.asarray(values, np.float64)
    every = round(resolution_s / step_s)
    if every <= 1:
        return v
    blocks = v[: len(v) // every * every].reshape(-1, every)
    counts = np.sum(np.isfinite(blocks), axis=1)
    sums = np.nansum(blocks, axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class Identifiability:
    """``singular_values``: of the Jacobian (normalised residuals by parameters) with each
    column scaled to unit length, largest first: all near 1 for independent parameters,
    near 0 along a combination the data cannot tell apart. ``groups``: the parameters
    of each near-singular direction (a pair entering only as a product or a sum forms
    one group); ``insensitive``: parameters no measured quantity responds to."""

    singular_values: tuple[float, ...]
    groups: tuple[tuple[str, ...], ...]
    insensitive: tuple[str, ...]

    @property
    def unidentifiable(self) -> tuple[str, ...]:
        names = [n for g in self.groups for n in g] + list(self.insensitive)
        return tuple(dict.fromkeys(names))

    def warnings(self) -> list[str]:
        out = [
            f"{' and '.join(g)}: not identifiable apart (the data constrain only a "
            "combination of them)"
            for g in self.groups
        ]
        out += [f"{n}: no measured quantity responds to it" for n in self.insensitive]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "singular_values": list(self.singular_values),
            "groups": [list(g) for g in self.groups],
            "insensitive": list(self.insensitive),
        }


def identifiability(jac: np.ndarray, names: list[str], rcond: float = RCOND) -> Identifiability:
    """Near-singular directions of ``jac`` (residuals x parameters), named."""
    jac = np.asarray(jac, np.float64)
    norms = np.linalg.norm(jac, axis=0)
    scale = float(norms.max()) if norms.size else 0.0
    live = norms > 1e-12 * max(scale, 1e-300)
    insensitive = tuple(n for n, ok in zip(names, live, strict=True) if not ok)
    kept = [n for n, ok in zip(names, live, strict=True) if ok]
    if not kept:
        return Identifiability((), (), insensitive)
    _, s, vt = np.linalg.svd(jac[:, live] / norms[live], full_matrices=False)
    groups = []
    for value, v in zip(s, vt, strict=True):
        if value < rcond * s[0]:
            members = tuple(n for n, c in zip(kept, v, strict=True) if abs(c) >= MEMBER)
            groups.append(members)
    return Identifiability(tuple(float(x) for x in s), tuple(groups), insensitive)


MAX_AUTOCORRELATION = 0.99  # keeps the scale (1 + ρ) / (1 − ρ) finite (at most 199)


def lag1_autocorrelation(r: np.ndarray) -> float:
    """Σ r_t r_(t+1) / Σ r_t² of a series in time order, clipped to [0,
    ``MAX_AUTOCORRELATION``] (a negative value would only shrink an uncertainty by chance);
    0 for fewer than three points."""
    r = np.asarray(r, np.float64)
    total = float(np.sum(r**2))
    if r.size < 3 or total <= 0.0:
        return 0.0
    return min(max(float(np.sum(r[:-1] * r[1:])) / total, 0.0), MAX_AUTOCORRELATION)


def covariance(jac: np.ndarray, residuals: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Covariance of the parameters of a weighted least-squares fit.

    ``jac``, ``residuals``: of the normalised residuals r_i (weight · (model − measured)
    / noise) at the optimum; ``group``: the measured quantity of each residual (an int,
    -1 for a missing point). With A = JᵀJ and, per quantity q, its residual variance
    s_q² = Σ_{i∈q} r_i² / (n_q − p·n_q/n) (its share of the n − p degrees of freedom),
    the sandwich

        Cov = A⁻¹ (Σ_q s_q² J_qᵀ J_q) A⁻¹

    which is s² (JᵀJ)⁻¹, scaled by the residual variance, when every quantity's noise was
    guessed right up to one common factor, and stays right when the guessed noise of one
    quantity is off. Directions of the column-normalised A below ``RCOND``² (relative)
    are left out (a pseudo-inverse); the caller reports those parameters as
    unidentifiable. Residuals in time order that are autocorrelated (model error is
    smooth in time) carry fewer independent points than they number: each quantity's
    term is scaled by (1 + ρ_q) / (1 − ρ_q), ρ_q its residuals' lag-1 autocorrelation
    (≥ 0; the effective number of points n' = n (1 − ρ) / (1 + ρ) of ASHRAE Guideline 14,
    Annex B), so that a fit limited by model error rather than noise says so."""
    jac = np.asarray(jac, np.float64)
    r = np.asarray(residuals, np.float64)
    group = np.asarray(group)
    n = int(np.count_nonzero(group >= 0))
    p = jac.shape[1]
    meat = np.zeros((p, p))
    for q in np.unique(group[group >= 0]):
        rows = group == q
        n_q = int(np.count_nonzero(rows))
        dof = n_q - p * n_q / max(n, 1)
        if dof <= 0:
            continue
        s2 = float(np.sum(r[rows] ** 2)) / dof
        rho = lag1_autocorrelation(r[rows])
        meat += s2 * (1.0 + rho) / (1.0 - rho) * jac[rows].T @ jac[rows]
    norms = np.linalg.norm(jac, axis=0)
    d = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    a = (jac.T @ jac) * d[:, None] * d[None, :]
    bread = np.linalg.pinv(a, rcond=RCOND**2, hermitian=True) * d[:, None] * d[None, :]
    return bread @ meat @ bread
