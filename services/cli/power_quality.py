"""The power-quality outputs of ``twin simulate --power-quality``: the meter power at every
coupling interval (meter.parquet), its spectrum (spectrum.parquet) and the spectrum
figure with the grid bands shaded (spectrum.png)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow as pa

from twin_core.spectrum import BANDS_HZ, Spectrum, welch


def meter_table(meter_w: np.ndarray, dt: float) -> pa.Table:
    """The meter power per coupling interval; a row's time is the end of its interval."""
    time_s = (np.arange(len(meter_w)) + 1) * dt
    return pa.Table.from_arrays(
        [np.asarray(time_s, np.float64), np.asarray(meter_w, np.float64)],
        schema=pa.schema(
            [
                pa.field("time_s", pa.float64(), metadata={"unit": "s"}),
                pa.field("meter_w", pa.float64(), metadata={"unit": "W"}),
            ]
        ),
    )


def spectrum_table(s: Spectrum) -> pa.Table:
    return pa.Table.from_arrays(
        [s.freq_hz, s.psd_w2_per_hz],
        schema=pa.schema(
            [
                pa.field("freq_hz", pa.float64(), metadata={"unit": "Hz"}),
                pa.field("psd_w2_per_hz", pa.float64(), metadata={"unit": "W2/Hz"}),
            ]
        ),
    )


def spectrum_png(s: Spectrum, summary: dict[str, Any], path: Path | BinaryIO) -> None:
    """The meter power's PSD on log axes, the 0.1-2 Hz and 3-30 Hz bands shaded."""
    fig, ax = plt.subplots(figsize=(11, 5))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.11)
    f, psd = s.freq_hz[1:], s.psd_w2_per_hz[1:] * 1e-12  # above 0 Hz, in MW^2/Hz
    ax.loglog(f, np.maximum(psd, 1e-30), color="black", lw=0.8)
    nyquist = summary.get("meter_nyquist_hz", math.inf)
    for (low, high), color in zip(BANDS_HZ.values(), ("tab:blue", "tab:red"), strict=True):
        energy = summary.get(f"meter_band_{low:g}_{high:g}hz_mw2".replace(".", "p"), math.nan)
        shown = f"{low:g}-{min(high, nyquist):g} Hz" + (" (Nyquist)" if high > nyquist else "")
        ax.axvspan(low, high, color=color, alpha=0.12, label=f"{shown}: {energy:.4g} MW²")
    ax.set_xlim(f[0] if len(f) else 0.01, summary.get("meter_nyquist_hz", f[-1] if len(f) else 1))
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("meter power PSD (MW²/Hz)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=9)
    fig.suptitle(
        f"{summary.get('site', '')}: meter power spectrum at dt = {summary.get('dt_s', 0):g} s "
        f"(peak {summary.get('meter_peak_hz', float('nan')):.3g} Hz)"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def files(meter_w: np.ndarray, dt: float, summary: dict[str, Any], out_dir: Path) -> dict:
    """The power-quality files of a run, for ``write_all_atomic``."""
    import pyarrow.parquet as pq

    s = welch(meter_w, dt)
    meter, spectrum = meter_table(meter_w, dt), spectrum_table(s)
    return {
        out_dir / "meter.parquet": lambda f: pq.write_table(meter, f),
        out_dir / "spectrum.parquet": lambda f: pq.write_table(spectrum, f),
        out_dir / "spectrum.png": lambda f: spectrum_png(s, summary, f),
    }
