"""A residual's noise when nothing configures it: a robust estimate from its first samples.

sigma = 1.4826 * median(|r_t - r_(t-1)|) / sqrt(2): the median absolute successive
difference. Differences remove a constant or slowly varying offset (a twin not yet
calibrated, a slow drift already under way), and the median ignores a step; for
independent Gaussian noise it is unbiased (1.4826 = 1 / Phi^-1(3/4), and the difference of
two samples has twice the variance). It is fixed after ``samples`` readings, so that a
departure that follows cannot widen it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LEARN_SAMPLES = 60  # readings before a residual without a configured noise is tested
MAD_TO_SIGMA = 1.4826


@dataclass
class NoiseEstimate:
    samples: int = LEARN_SAMPLES
    sigma: float | None = None  # set once ``samples`` readings are in
    _seen: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.samples < 3:
            raise ValueError(f"samples: at least 3 readings are needed, got {self.samples}")

    def add(self, residual: float) -> float | None:
        """Take one residual; the estimate once it is fixed (None before)."""
        if self.sigma is not None:
            return self.sigma
        self._seen.append(residual)
        if len(self._seen) >= self.samples:
            diffs = np.abs(np.diff(np.asarray(self._seen)))
            sigma = MAD_TO_SIGMA * float(np.median(diffs)) / math.sqrt(2.0)
            if sigma <= 0.0:  # quantised readings: fall back to the differences' spread
                sigma = float(np.std(diffs)) / math.sqrt(2.0)
            if sigma > 0.0:
                self.sigma = sigma
            else:  # a constant residual: keep learning
                self._seen = self._seen[-self.samples // 2 :]
        return self.sigma
