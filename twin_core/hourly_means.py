"""Hourly driver values from measured interval means: the model interpolates its drivers
linearly between hour marks, so a measured interval's mean constrains the hour marks
around it (weather, the IT load scale)."""

from __future__ import annotations

import numpy as np

# Weight of the smoothness term (second differences of the hourly values) against the
# interval means: it only picks among hourly values that reproduce the means equally well
# (hourly means leave one zig-zag free), so it is small.
SMOOTHING = 1e-3


def hourly_from_means(means: np.ndarray, step_s: float, hours: int) -> np.ndarray:
    """Values at ``hours`` hour marks whose linear interpolation (the model's drivers)
    has the given interval means: least squares, the smoothest among equals. An interval
    within an hour averages a linear piece, so its midpoint gives its mean exactly; a
    longer one is split into hours. NaN means are left out."""
    piece = min(step_s, 3600.0)
    pieces = max(round(step_s / piece), 1)
    mids = np.arange(len(means))[:, None] * step_s + (np.arange(pieces)[None, :] + 0.5) * piece
    hour = np.minimum(np.floor(mids / 3600.0).astype(int), hours - 2)
    frac = mids / 3600.0 - hour
    rows = np.zeros((len(means), hours))
    for k in range(pieces):
        np.add.at(rows, (np.arange(len(means)), hour[:, k]), (1.0 - frac[:, k]) / pieces)
        np.add.at(rows, (np.arange(len(means)), hour[:, k] + 1), frac[:, k] / pieces)
    ok = np.isfinite(means)
    curvature = SMOOTHING * (
        np.eye(hours)[:-2] - 2 * np.eye(hours, k=1)[:-2] + np.eye(hours, k=2)[:-2]
    )
    a = np.vstack([rows[ok], curvature])
    b = np.concatenate([means[ok], np.zeros(hours - 2)])
    return np.linalg.lstsq(a, b, rcond=None)[0]
