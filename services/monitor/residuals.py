"""The residual monitor: readings and the twin's own values of the same things, paired,
normalised and tested; deviations raised and cleared. No bus here (service.py wires it).

Monitored: each CDU's supply and return temperature (``cdu/<i>``) and each rack's power
(``rack/<slot>/<cdu>``) that the telemetry measures. The modelled values come from the
domains' state messages (``tcs_supply_model_c``, ``tcs_return_model_c``,
``rack_ac_model_w``): the model's own prediction, never the reading that replaced it.

Pairing: a reading is used once, with the next state of its domain after it arrived; a
reading republished with the same time stamp (the gateway holds a value between scans)
is not a new sample. That keeps the samples independent, as the CUSUM's false-alarm rate
assumes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from services.monitor.cause import RACK_POWER, RETURN, SUPPLY, Key, classify
from services.monitor.cusum import Change, Cusum, H, K
from services.monitor.noise import LEARN_SAMPLES, NoiseEstimate
from twin.twin.v1 import deviation_pb2

# Monitored quantity -> (name as the historian and the point map write it, unit, domain).
MONITORED: dict[int, tuple[str, str, str]] = {
    SUPPLY: ("supply_temperature_c", "degC", "cooling"),
    RETURN: ("return_temperature_c", "degC", "cooling"),
    RACK_POWER: ("rack_power_w", "W", "compute"),
}
_CDU, _RACK = re.compile(r"cdu/\d{1,6}"), re.compile(r"rack/\d{1,6}/\d{1,6}")
ENTITY: dict[int, re.Pattern[str]] = {SUPPLY: _CDU, RETURN: _CDU, RACK_POWER: _RACK}
MAX_SERIES = 200_000  # more than a 200k-GPU site's racks and CDUs
QUANTITY_BY_NAME = {name: q for q, (name, _, _) in MONITORED.items()}

# The model's value of (entity, quantity), or None when the model has none.
Lookup = Callable[[str, int], float | None]


@dataclass(frozen=True)
class MonitorConfig:
    """``noise``: one standard deviation of each quantity's residual, by the names of
    ``MONITORED`` (``supply_temperature_c``: 0.05); a quantity without one is estimated
    from its first ``learn_samples`` residuals (noise.py)."""

    k: float = K
    h: float = H
    noise: Mapping[str, float] = field(default_factory=dict)
    learn_samples: int = LEARN_SAMPLES

    def __post_init__(self) -> None:
        Cusum(self.k, self.h)  # checks k and h
        for name, sigma in self.noise.items():
            if name not in QUANTITY_BY_NAME:
                known = ", ".join(QUANTITY_BY_NAME)
                raise ValueError(f"noise.{name}: not a monitored quantity (known: {known})")
            if not (math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"noise.{name}: must be a positive number, got {sigma!r}")
        NoiseEstimate(self.learn_samples)


@dataclass
class _Series:
    noise: NoiseEstimate
    pending: tuple[float, float] | None = None  # (value, reading time) not yet used
    last_time_s: float = -math.inf  # the newest reading used or pending
    cusum: Cusum | None = None  # once the noise is known
    sigma: float = 0.0
    events: int = 0
    raised: deviation_pb2.Deviation | None = None  # the open deviation


class ResidualMonitor:
    def __init__(self, site_id: str, config: MonitorConfig | None = None) -> None:
        self.site_id = site_id
        self.config = config or MonitorConfig()
        self.run_id = ""
        self.refused = 0  # readings of an unknown entity form, or beyond MAX_SERIES
        self._series: dict[Key, _Series] = {}

    def start_run(self, run_id: str) -> None:
        """Forget everything of the run before."""
        self.run_id = run_id
        self._series.clear()

    # ------------------------------------------------------------------ readings

    def offer(self, entity: str, quantity: int, value: float, time_s: float) -> None:
        """One reading (telemetry); kept until the next state of its domain."""
        if quantity not in MONITORED or not math.isfinite(value):
            return
        key = (entity, quantity)
        series = self._series.get(key)
        if series is None:
            if not ENTITY[quantity].fullmatch(entity) or len(self._series) >= MAX_SERIES:
                self.refused += 1
                return
            series = self._series[key] = _Series(NoiseEstimate(self.config.learn_samples))
        if time_s > series.last_time_s:  # a new sample, not a republished one
            series.pending = (value, time_s)
            series.last_time_s = time_s

    # ------------------------------------------------------------------ model states

    def waiting(self, domain: str) -> bool:
        """Whether a reading waits for ``domain``'s next state (else ``on_model`` has
        nothing to test)."""
        return any(
            s.pending is not None and MONITORED[quantity][2] == domain
            for (_, quantity), s in self._series.items()
        )

    def on_model(
        self, domain: str, lookup: Lookup, step: int, time_s: float
    ) -> list[deviation_pb2.Deviation]:
        """The model's state of ``step`` for ``domain``: test each reading waiting for it;
        the deviations raised or cleared."""
        changed: list[tuple[Key, _Series, Change, float]] = []
        for key, series in list(self._series.items()):
            entity, quantity = key
            if series.pending is None or MONITORED[quantity][2] != domain:
                continue
            (value, read_at), series.pending = series.pending, None
            modelled = lookup(entity, quantity)
            if modelled is None or not math.isfinite(modelled):
                del self._series[key]  # the model has no such entity
                self.refused += 1
                continue
            change = self._test(quantity, series, value - modelled)
            if change is not None:
                changed.append((key, series, change, read_at))
        detectors = {k: s.cusum for k, s in self._series.items() if s.cusum is not None}
        return [
            self._event(key, series, change, read_at, step, time_s, detectors)
            for key, series, change, read_at in changed
        ]

    def _test(self, quantity: int, series: _Series, residual: float) -> Change | None:
        sigma = self.config.noise.get(MONITORED[quantity][0])
        if sigma is None:
            sigma = series.noise.add(residual)
            if sigma is None:  # still learning the noise
                return None
        if series.cusum is None:
            series.cusum, series.sigma = Cusum(self.config.k, self.config.h), sigma
        return series.cusum.update(residual / series.sigma)

    def _event(
        self,
        key: Key,
        series: _Series,
        change: Change,
        read_at: float,
        step: int,
        time_s: float,
        detectors: Mapping[Key, Cusum],
    ) -> deviation_pb2.Deviation:
        entity, quantity = key
        cusum = series.cusum
        assert cusum is not None  # a change comes from a detector
        name, unit, _ = MONITORED[quantity]
        if change is Change.RAISED:
            series.events += 1
            finding = classify(key, cusum.side, detectors)
            sigmas = cusum.onset_shift
            event = deviation_pb2.Deviation(
                status=deviation_pb2.DEVIATION_STATUS_RAISED,
                cause=finding.cause,
                reason=finding.reason,
                suspect=finding.suspect,
                raised_step=step,
            )
        else:
            raised = series.raised
            assert raised is not None  # cleared only after raised
            sigmas = cusum.open_mean()
            event = deviation_pb2.Deviation(
                status=deviation_pb2.DEVIATION_STATUS_CLEARED,
                cause=raised.cause,
                reason=raised.reason,
                suspect=raised.suspect,
                raised_step=raised.raised_step,
            )
        status = "raised" if change is Change.RAISED else "cleared"
        event.MergeFrom(
            deviation_pb2.Deviation(
                event_id=f"{self.run_id}/{entity}/{name}/{series.events}/{status}",
                run_id=self.run_id,
                site_id=self.site_id,
                entity=entity,
                quantity=quantity,  # type: ignore[arg-type]  # a Quantity value
                departure=sigmas * series.sigma,
                departure_sigmas=sigmas,
                sigma=series.sigma,
                unit=unit,
                step=step,
                time_s=time_s,
                measured_time_s=read_at,
            )
        )
        series.raised = event if change is Change.RAISED else None
        return event

    def open_deviations(self) -> list[deviation_pb2.Deviation]:
        """The deviations raised and not cleared, by entity and quantity."""
        return [s.raised for _, s in sorted(self._series.items()) if s.raised is not None]


def parse_noise(text: str | None) -> dict[str, float]:
    """``supply_temperature_c=0.05,rack_power_w=300`` -> the ``MonitorConfig.noise`` map
    (TWIN_MONITOR_NOISE); a ValueError names the item."""
    noise: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            sigma = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{item.strip()!r}: expected quantity=sigma")
        noise[name.strip()] = sigma
    MonitorConfig(noise=noise)  # checks names and values
    return noise
