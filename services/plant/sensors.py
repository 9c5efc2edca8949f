"""The plant's sensors: true value + bias + drift + Gaussian noise, and dropouts (a
missing reading is NaN; each protocol server leaves it out its own way).

One seeded generator draws, per step, every signal's noise then its dropouts in a fixed
order, so a seed gives the same readings step by step whatever the protocols read.
"""

from __future__ import annotations

import numpy as np

from services.plant.truth import Layout
from services.plant.truthfile import SensorDrift, Truth, TruthError, seconds


class Sensors:
    def __init__(self, truth: Truth, layout: Layout, name: str = "<truth>") -> None:
        self.errors = truth.sensors
        self.rng = np.random.default_rng(truth.seed)
        self.entities = {s: np.array(layout.entities(s)) for s in SIGNAL_ORDER}
        self.bias = {s: np.zeros(len(e)) for s, e in self.entities.items()}
        for i, b in enumerate(truth.sensors.bias):
            hit = self._where(b.signal, b.entity, f"{name}: sensors.bias.{i}.entity")
            self.bias[b.signal][hit] += b.value
        self.drifts: list[tuple[str, np.ndarray, float, float]] = []  # signal, where, at, /h
        for i, f in enumerate(truth.faults):
            if isinstance(f, SensorDrift):
                hit = self._where(f.signal, f.entity, f"{name}: faults.{i}.entity")
                self.drifts.append((f.signal, hit, seconds(f.at), f.per_hour))

    def _where(self, signal: str, entity: str, field: str) -> np.ndarray:
        hit = self.entities[signal] == entity
        if not hit.any():
            known = ", ".join(dict.fromkeys(self.entities[signal].tolist()))
            raise TruthError(f"{field}: {signal} has no sensor at {entity!r} (known: {known})")
        return hit

    def offset(self, signal: str, t: float) -> np.ndarray:
        """Bias plus drift of each sensor of ``signal`` at time ``t`` (no noise)."""
        out = self.bias[signal].copy()
        for s, hit, at, per_hour in self.drifts:
            if s == signal and t > at:
                out[hit] += per_hour * (t - at) / 3600.0
        return out

    def read(self, true: dict[str, np.ndarray], t: float) -> dict[str, np.ndarray]:
        """The measured signals at time ``t`` for the ``true`` ones (NaN: dropped)."""
        out: dict[str, np.ndarray] = {}
        for signal in SIGNAL_ORDER:
            v = true[signal] + self.offset(signal, t)
            sd = self.errors.noise.get(signal, 0.0)
            v = v + sd * self.rng.standard_normal(v.shape)
            dropped = self.rng.random(v.shape) < self.errors.dropout
            out[signal] = np.where(dropped, np.nan, v)
        return out


SIGNAL_ORDER = (
    "cdu_supply_c", "cdu_return_c", "ambient_c", "rack_power_w", "gpu_power_w", "gpu_temp_c",
    "meter_power_w", "ups_output_w",
)  # fmt: skip
