"""Equipment curves: three-point loss fits, DOE-2 biquadratics, epsilon-NTU relations.

All functions work on NumPy (at params-build time) and JAX (inside steps) alike.
"""

from __future__ import annotations

import numpy as np


def fit_loss_model(eff_20: float, eff_50: float, eff_100: float, rated: float) -> np.ndarray:
    """Coefficients (l0, l1, l2) of loss = l0 + l1*P + l2*P^2 (P = output power, W).

    The three-term model (no-load, proportional, I^2R) passes exactly through the three
    datasheet efficiencies; this is how UPS and PSU efficiency curves are usually modelled
    (e.g. Rasmussen, APC White Paper 113).
    """
    points = np.array([0.2, 0.5, 1.0]) * rated
    effs = np.array([eff_20, eff_50, eff_100])
    losses = points * (1.0 / effs - 1.0)
    vander = np.stack([np.ones(3), points, points**2], axis=1)
    return np.linalg.solve(vander, losses)


def loss(coeffs, power):
    """Conversion loss for output ``power`` (never below zero output)."""
    l0, l1, l2 = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2]
    return l0 + l1 * power + l2 * power**2


def output_for_input(coeffs, p_in, xp=np):
    """Inverse of input = P + loss(P): the output power a converter delivers for ``p_in``."""
    l0, l1, l2 = coeffs[..., 0], coeffs[..., 1], coeffs[..., 2]
    b = 1.0 + l1
    disc = xp.maximum(b * b - 4.0 * l2 * (l0 - p_in), 0.0)
    # Stable root of l2*P^2 + b*P + (l0 - p_in) = 0 that tends to (p_in - l0)/b as l2 -> 0.
    return 2.0 * (p_in - l0) / (b + xp.sqrt(disc))


def biquadratic(c, x, y):
    """DOE-2 curve a + b*x + c*x^2 + d*y + e*y^2 + f*x*y."""
    return c[0] + c[1] * x + c[2] * x * x + c[3] * y + c[4] * y * y + c[5] * x * y


def quadratic(c, x):
    return c[0] + c[1] * x + c[2] * x * x


def eps_counterflow(ntu, cr, xp=np):
    """Effectiveness of a counterflow heat exchanger (plate CDU heat exchangers)."""
    cr = xp.minimum(cr, 0.999999)
    e = xp.exp(-ntu * (1.0 - cr))
    return (1.0 - e) / (1.0 - cr * e)


def eps_crossflow_unmixed(ntu, cr, xp=np):
    """Effectiveness of a crossflow exchanger, both fluids unmixed (finned-coil dry cooler).

    Incropera & DeWitt, Fundamentals of Heat and Mass Transfer, eq. 11.32.
    """
    ntu = xp.maximum(ntu, 1e-9)
    cr = xp.maximum(cr, 1e-9)
    return 1.0 - xp.exp((ntu**0.22 / cr) * (xp.exp(-cr * ntu**0.78) - 1.0))


def wet_bulb_stull(t_c, rh, xp=np):
    """Wet-bulb temperature (C) from dry bulb and relative humidity 0..1.

    Stull (2011), J. Appl. Meteor. Climatol. 50, 2267-2269; valid for RH 5-99 %.
    """
    r = xp.clip(rh, 0.05, 0.99) * 100.0
    return (
        t_c * xp.arctan(0.151977 * xp.sqrt(r + 8.313659))
        + xp.arctan(t_c + r)
        - xp.arctan(r - 1.676331)
        + 0.00391838 * r**1.5 * xp.arctan(0.023101 * r)
        - 4.686035
    )
