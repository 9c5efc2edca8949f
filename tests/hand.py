"""Hand calculations for tests/sites/small.yaml, written from the textbook relations with
the numbers of the site file and the rack catalog; they share no code with the model."""

from __future__ import annotations

import numpy as np

# (gpu idle W, gpu TDP W, fixed DC W = switches + other + CPU idle, CPU span W, PSU rated W)
RACKS = {
    "GB200_NVL72": (160.0, 1200.0, 9 * 1400 + 20000 + 36 * 100, 36 * 200.0, 198000.0),
    "GB300_NVL72": (180.0, 1400.0, 9 * 400 + 15500 + 36 * 100, 36 * 200.0, 264000.0),
}
TITANIUM = (0.94, 0.96, 0.91)


def three_point_loss(effs, rated):
    """loss = l0 + l1 P + l2 P^2 through efficiencies at 20/50/100 % of rated output."""
    p = np.array([0.2, 0.5, 1.0]) * rated
    losses = p * (1 / np.array(effs) - 1)
    return np.linalg.solve(np.stack([np.ones(3), p, p * p], axis=1), losses)


def poly(c, x):
    return c[0] + c[1] * x + c[2] * x * x


def rack_dc(rack: str, util: float) -> float:
    idle, tdp, fixed, cpu_span, _ = RACKS[rack]
    return fixed + cpu_span * util + 72 * (idle + (tdp - idle) * util)


def rack_ac(rack: str, dc: float) -> float:
    return dc + poly(three_point_loss(TITANIUM, RACKS[rack][4]), dc)


def meter(it_w: float, cooling_w: float, it_design_w: float) -> float:
    """small.yaml electrical chain: 1 % busway loss at design, UPS curve 95/97/96.5 % of
    2 MW, misc 20 kW + 1 % of IT, 3 MVA transformers with 0.2 % / 0.8 % losses."""
    dist = 0.01 * it_w**2 / it_design_w
    ups = poly(three_point_loss([0.95, 0.97, 0.965], 2e6), it_w + dist)
    through = it_w + dist + ups + cooling_w + 20000 + 0.01 * it_w
    return through + 0.002 * 3e6 + 0.008 * 3e6 * (through / 3e6) ** 2


def it_design(rack: str, racks: int = 8) -> float:
    return racks * rack_ac(rack, rack_dc(rack, 1.0))
