"""The two-sided CUSUM (Page 1954) on a standardised residual z = (measured - modelled) / sigma,
with the hysteresis that raises and clears a deviation, and its average run length.

    S+ <- max(0, S+ + z - k)      S- <- max(0, S- - z - k)

A deviation is raised when one side exceeds ``h``; while it is open that side is held at
most ``h``, and it clears when the side falls back to 0, that is when the residual has
stayed below ``k`` long enough to spend the evidence (about h / k samples once it is back
at 0: 40 samples with the defaults).

Defaults: ``k = 0.5`` (tuned to a shift of 2k = 1 sigma) and ``h = 20``. For independent
Gaussian noise the in-control average run length (samples between false alarms, both
sides together) is **1.5e9** (``arl(0.0)``: Brook & Evans' Markov chain; Siegmund's
approximation gives the same to 1 %), so a residual sampled each second raises a false
alarm about once in 48 years. A shift of 1 sigma is found after about 40 samples, 3 sigma
after about 8.6 (``arl(1.0)``, ``arl(3.0)``); without noise a 3-sigma step crosses on the
9th sample (S+ = 2.5 n > 20). Those rates hold for independent samples: the monitor feeds
each reading once (services/monitor/residuals.py).

References: E. S. Page, "Continuous inspection schemes", Biometrika 41 (1954);
D. Brook and D. A. Evans, "An approach to the probability distribution of cusum run
length", Biometrika 59 (1972); D. Siegmund, "Sequential Analysis" (1985), eq. 2.55;
D. C. Montgomery, "Introduction to Statistical Quality Control", 9.1 (the shift
estimate k + S/N).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

_ndtr = np.vectorize(lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0)), otypes=[float])

K = 0.5  # reference value, in sigmas: half the shift the chart is tuned to
H = 20.0  # decision interval, in sigmas


class Change(Enum):
    RAISED = "raised"
    CLEARED = "cleared"


@dataclass
class Cusum:
    """One residual's two-sided CUSUM. ``update(z)`` returns the change it caused."""

    k: float = K
    h: float = H
    pos: float = 0.0  # S+
    neg: float = 0.0  # S-
    pos_n: int = 0  # samples since S+ was last 0
    neg_n: int = 0
    side: int = 0  # +1 / -1 while a deviation is open, 0 otherwise
    samples: int = 0
    onset_shift: float = 0.0  # the shift estimate (signed, sigmas) when last raised
    _open_sum: float = field(default=0.0, repr=False)  # sum of z while open
    _open_n: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k) and self.k > 0):
            raise ValueError(f"k: must be a positive number of sigmas, got {self.k!r}")
        if not (math.isfinite(self.h) and self.h > 0):
            raise ValueError(f"h: must be a positive number of sigmas, got {self.h!r}")

    def update(self, z: float) -> Change | None:
        if not math.isfinite(z):
            raise ValueError(f"z: must be finite, got {z!r}")
        self.samples += 1
        self.pos = max(0.0, self.pos + z - self.k)
        self.neg = max(0.0, self.neg - z - self.k)
        self.pos_n = self.pos_n + 1 if self.pos > 0 else 0
        self.neg_n = self.neg_n + 1 if self.neg > 0 else 0
        if self.side:
            self._open_sum += z
            self._open_n += 1
            if self.evidence(self.side) == 0.0:
                self.side = 0
                return Change.CLEARED
            self._hold()
            return None
        for side in (1, -1):
            if self.evidence(side) > self.h:
                self.side = side
                self._open_sum, self._open_n = z, 1
                self.onset_shift = self.shift()  # before the hold caps S
                self._hold()
                return Change.RAISED
        return None

    def _hold(self) -> None:
        # Hysteresis: the open side keeps at most h, so it clears once the residual has
        # been back long enough to spend h (not a whole event's worth of evidence).
        if self.side > 0:
            self.pos = min(self.pos, self.h)
        else:
            self.neg = min(self.neg, self.h)

    def evidence(self, side: int) -> float:
        """S+ for ``side`` +1, S- for -1."""
        return self.pos if side > 0 else self.neg

    def shift(self) -> float:
        """The estimated mean of z since the open (or larger) side last left 0, signed:
        k + S/N (Montgomery)."""
        side = self.side or (1 if self.pos >= self.neg else -1)
        s, n = (self.pos, self.pos_n) if side > 0 else (self.neg, self.neg_n)
        return side * (self.k + s / n) if n else 0.0

    def open_mean(self) -> float:
        """The mean z over the samples since the deviation was raised."""
        return self._open_sum / self._open_n if self._open_n else 0.0


# ------------------------------------------------------------------ average run length


def arl_one_sided(shift: float, k: float = K, h: float = H, states: int = 400) -> float:
    """Average run length of the one-sided CUSUM S+ for z ~ N(shift, 1): Brook and
    Evans' Markov chain, ``states`` states on [0, h] (state 0 is S = 0)."""
    w = 2.0 * h / (2 * states - 1)
    centre = np.arange(states) * w
    upper = (np.arange(states) + 0.5) * w
    # From state i: S' = S_i + z - k lands in state j (j >= 1) for
    # S' in ((j - 1/2) w, (j + 1/2) w], in state 0 for S' <= w / 2.
    cdf = _ndtr(upper[None, :] - centre[:, None] + k - shift)
    r = np.diff(np.concatenate([np.zeros((states, 1)), cdf], axis=1), axis=1)
    r[:, 0] = cdf[:, 0]
    run = np.linalg.solve(np.eye(states) - r, np.ones(states))
    return float(run[0])


def arl(shift: float = 0.0, k: float = K, h: float = H) -> float:
    """Average run length of the two-sided CUSUM for z ~ N(shift, 1): the two sides
    combined as 1/ARL = 1/ARL+ + 1/ARL- (Van Dobben de Bruyn)."""
    up, down = arl_one_sided(shift, k, h), arl_one_sided(-shift, k, h)
    return 1.0 / (1.0 / up + 1.0 / down)


def arl_siegmund(shift: float = 0.0, k: float = K, h: float = H) -> float:
    """Siegmund's approximation of the two-sided ARL: for one side with drift
    d = shift - k and b = h + 1.166, (exp(-2 d b) + 2 d b - 1) / (2 d^2)."""

    def one(d: float) -> float:
        b = h + 1.166
        if abs(d) < 1e-9:
            return b * b
        return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)

    return 1.0 / (1.0 / one(shift - k) + 1.0 / one(-shift - k))
