"""Levenberg-Marquardt for a few bounded parameters and many residuals (NumPy).

Works in coordinates scaled to [0, 1] per bound; a step that leaves the box is clipped
to it (projected). ``evaluate(z)`` returns the residuals, their Jacobian and whatever
the caller wants back at that point (the model's series); the Jacobian of every
accepted trial is the next iteration's, so an accepted step costs one evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Evaluate = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, Any]]


@dataclass(frozen=True)
class Solution:
    """The last accepted point: ``z``, its residuals ``r``, Jacobian ``jac`` and the
    evaluation's extra value ``aux``; ``start_aux`` and ``start_cost``: at the start."""

    z: np.ndarray
    r: np.ndarray
    jac: np.ndarray
    aux: Any
    cost: float
    start_aux: Any
    start_cost: float
    iterations: int
    converged: bool


def levenberg_marquardt(
    evaluate: Evaluate,
    z0: np.ndarray,
    *,
    dof: int,
    max_iterations: int,
    tolerance: float,
    progress: Callable[[int, int, float], None] | None = None,
    accepted: Callable[[int, np.ndarray, float], None] | None = None,
) -> Solution:
    """Minimise ‖r(z)‖² over the unit box from ``z0``: each step solves
    (JᵀJ + λ diag JᵀJ) δ = −Jᵀr, λ divided by 10 after a step that lowers the cost and
    multiplied by 10 (the step retried) after one that does not. Converged when no step
    lowers the cost, the point stops moving, or the cost falls by less than
    ``tolerance`` × cost / ``dof`` (that share of one residual's variance).
    ``progress(iteration, max_iterations, cost)`` and ``accepted(iteration, z, cost)``
    follow every accepted step."""
    z = np.asarray(z0, np.float64)
    r, jac, aux = evaluate(z)
    cost = start_cost = float(r @ r)
    start_aux = aux
    lam, converged, iterations = 1e-3, False, 0
    for iterations in range(1, max_iterations + 1):
        a = jac.T @ jac
        g = jac.T @ r
        damping = np.maximum(np.diag(a), 1e-12 * max(float(np.max(np.diag(a))), 1e-300))
        while True:
            trial = np.clip(z + np.linalg.solve(a + lam * np.diag(damping), -g), 0.0, 1.0)
            r_t, jac_t, aux_t = evaluate(trial)
            cost_t = float(r_t @ r_t)
            if cost_t <= cost or lam > 1e10:
                break
            lam *= 10.0
        if cost_t > cost:  # no step lowers the cost: a minimum within the bounds
            converged = True
            break
        small = cost - cost_t <= tolerance * cost_t / max(dof, 1)
        moved = float(np.max(np.abs(trial - z)))
        z, r, jac, aux, cost = trial, r_t, jac_t, aux_t, cost_t
        lam = max(lam / 10.0, 1e-12)
        if progress:
            progress(iterations, max_iterations, cost)
        if accepted:
            accepted(iterations, z, cost)
        if small or moved < 1e-10:
            converged = True
            break
    return Solution(z, r, jac, aux, cost, start_aux, start_cost, iterations, converged)
