"""The spectrum of the meter power: Welch's power spectral density and the energy of the
bands that grid operators limit.

Choukse et al., "Power Stabilization for AI Training Datacenters" (Microsoft, OpenAI,
NVIDIA; arXiv:2508.14318, 2025) state utility requirements as limits on the oscillation
energy in a low band (0.1-2 Hz: inter-area and closely coupled generator modes) and a
high band (3-30 Hz: turbine-generator shaft torsional modes). A band's energy here is
the integral of the one-sided PSD over it, the variance of the meter power carried by
those frequencies (W^2); a band above the Nyquist frequency 1 / (2 dt) is cut there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANDS_HZ: dict[str, tuple[float, float]] = {"low": (0.1, 2.0), "high": (3.0, 30.0)}
# Welch segment: 60 s resolves 1/60 Hz, a sixth of the low band's lower edge.
SEGMENT_S = 60.0

KPI_UNITS: dict[str, str] = {
    "meter_band_0p1_2hz_mw2": "MW2",
    "meter_band_3_30hz_mw2": "MW2",
    "meter_swing_variance_mw2": "MW2",
    "meter_peak_hz": "Hz",
    "meter_nyquist_hz": "Hz",
}


@dataclass(frozen=True)
class Spectrum:
    """One-sided PSD of a power series: ``freq_hz`` (F,) and ``psd_w2_per_hz`` (F,)."""

    freq_hz: np.ndarray
    psd_w2_per_hz: np.ndarray

    def band_energy(self, low_hz: float, high_hz: float) -> float:
        """The PSD integrated over [low_hz, high_hz] (W^2), bins weighted by the part of
        their width inside the band."""
        f = self.freq_hz
        if len(f) < 2:
            return 0.0
        df = f[1] - f[0]
        left = np.clip(f - df / 2, low_hz, high_hz)
        right = np.clip(f + df / 2, low_hz, high_hz)
        return float(np.sum(self.psd_w2_per_hz * (right - left)))

    @property
    def peak_hz(self) -> float:
        """The frequency of the largest PSD bin above 0 Hz."""
        if len(self.freq_hz) < 2:
            return 0.0
        return float(self.freq_hz[1 + np.argmax(self.psd_w2_per_hz[1:])])


def welch(power_w: np.ndarray, dt: float, segment_s: float = SEGMENT_S) -> Spectrum:
    """Welch's PSD of a series sampled every ``dt`` seconds: Hann segments of
    ``segment_s`` (the whole series if shorter), half overlapping, each less its mean."""
    x = np.asarray(power_w, np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"power: need a series of at least 2 samples, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("power: the series is not finite")
    nperseg = min(len(x), max(2, round(segment_s / dt)))
    # Imported here: scipy.signal takes ~0.6 s to import, and only power-quality runs
    # need it (rollout.py imports this module on every start).
    from scipy import signal

    freq, psd = signal.welch(
        x, fs=1.0 / dt, window="hann", nperseg=nperseg, detrend="constant", scaling="density"
    )
    return Spectrum(freq, psd)


def kpis(power_w: np.ndarray, dt: float) -> dict[str, float]:
    """The power-quality KPIs of a meter series (``KPI_UNITS``; MW^2 and Hz)."""
    s = welch(power_w, dt)
    nyquist = 0.5 / dt
    return {
        "meter_band_0p1_2hz_mw2": s.band_energy(*BANDS_HZ["low"]) * 1e-12,
        "meter_band_3_30hz_mw2": s.band_energy(*BANDS_HZ["high"]) * 1e-12,
        "meter_swing_variance_mw2": s.band_energy(0.0, nyquist) * 1e-12,
        "meter_peak_hz": s.peak_hz,
        "meter_nyquist_hz": nyquist,
    }
