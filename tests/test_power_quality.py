"""Sub-second training phases and the power-quality mode: phase validation, the phase
table against hand calculation, Welch band energies of a square wave, and the meter
spectrum of sub-second jobs on the small site at dt = 10 ms."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import F64, ROOT, SMALL, constant_weather, small_site

from twin_core import build_params, init_state, load_drivers
from twin_core.compress import compress
from twin_core.phases import job_phases, mean_utilization
from twin_core.rollout import TRACED, check_traced, run_jit
from twin_core.site import SiteError
from twin_core.spectrum import kpis, welch

# GB200 (catalog): idle 160 W, TDP 1,200 W, so a phase at power fraction f runs at
# utilization (1200 f - 160) / 1040.
U_COMPUTE = (0.95 * 1200 - 160) / 1040  # 0.942308
U_COMM = (0.25 * 1200 - 160) / 1040  # 0.134615
U_OPT = (0.50 * 1200 - 160) / 1040  # 0.423077


def job(**fields) -> dict:
    return {"workload.training.0": {"name": "t", "racks": 8, **fields}}


def square(period_s: float) -> dict:
    """A job at 95 % of TDP for the first half of each iteration, 25 % for the second."""
    return job(
        iteration_s=period_s,
        phases=[
            {"name": "compute", "fraction": 0.5, "power_fraction": 0.95},
            {"name": "communication", "fraction": 0.5, "power_fraction": 0.25},
        ],
    )


# -- the schema --------------------------------------------------------------------------


def phase(fraction, power_fraction) -> dict:
    return {"name": "p", "fraction": fraction, "power_fraction": power_fraction}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"iteration_s": 1, "phases": [phase(0.6, 1), phase(0.3, 0)]},
            "workload.training.0: phases: fractions sum to 0.9, they must sum to 1",
        ),
        (
            {"iteration_s": 1, "phases": [phase(0, 1)]},
            "workload.training.0.phases.0.fraction: Input should be greater than 0",
        ),
        (
            {"iteration_s": 1, "phases": [phase(1, 1.2)]},
            "workload.training.0.phases.0.power_fraction: Input should be less than or equal to 1",
        ),
        (
            {"iteration_s": 1, "phases": [phase(0.1, 1)] * 10},
            "workload.training.0.phases: List should have at most 8 items after validation, not 10",
        ),
        (
            {
                "iteration_s": 1,
                "compute_fraction": 0.5,
                "compute_util": 1,
                "comm_util": 0.2,
                "phases": [phase(1, 1)],
            },
            "workload.training.0: give phases or compute_fraction, compute_util, comm_util, "
            "not both",
        ),
        (
            {"iteration_s": 1, "compute_fraction": 0.5, "compute_util": 1},
            "workload.training.0: comm_util: required with compute_fraction "
            "(a two-phase iteration)",
        ),
        (
            {"iteration_s": 0},
            "workload.training.0.iteration_s: Input should be greater than or equal to 0.000001",
        ),
    ],
)
def test_bad_phases_fail_naming_the_field(fields, message):
    with pytest.raises(SiteError) as err:
        small_site(job(**fields))
    assert str(err.value) == message


def test_a_rack_type_without_defaults_needs_the_jobs_own_iteration():
    with pytest.raises(SiteError) as err:
        small_site({"rack_types": {"GB200_NVL72": {"training": None}}}, job())
    assert str(err.value) == (
        "workload.training.0: rack type 'GB200_NVL72' has no training defaults: give "
        "iteration_s and phases (or compute_fraction, compute_util, comm_util)"
    )


# -- the phase table ---------------------------------------------------------------------


def test_a_job_without_phases_runs_its_rack_types_sourced_iteration():
    site = small_site(job())
    p = job_phases(site.workload.training[0], site.rack_types["GB200_NVL72"])
    # The catalog's GB200 iteration: 2 s; compute 70 % at 95 % TDP, communication 25 % at
    # 25 % TDP, optimizer 5 % at 50 % TDP. The high group is compute alone (above the mean
    # 0.7 * 0.9423 + 0.25 * 0.1346 + 0.05 * 0.4231 = 0.7143); the low group's level is
    # the time-weighted mean of the other two.
    assert p.period_s == 2.0
    assert p.compute_fraction == pytest.approx(0.7, abs=1e-12)
    assert p.compute_util == pytest.approx(U_COMPUTE, abs=1e-12)
    assert p.comm_util == pytest.approx((0.25 * U_COMM + 0.05 * U_OPT) / 0.3, abs=1e-12)
    assert p.share[:3] == pytest.approx([1.0, 0.25 / 0.3, 0.05 / 0.3], abs=1e-12)
    levels = p.weight * p.compute_util + (1 - p.weight) * p.comm_util
    assert levels[:3] == pytest.approx([U_COMPUTE, U_COMM, U_OPT], abs=1e-12)
    params = build_params(site, load_drivers(site), horizon_s=60, dt=1.0, dtype=F64, host=True)
    assert float(params.compute.job_period_s[0]) == 2.0
    assert float(params.compute.job_compute_s[0]) == pytest.approx(1.4, abs=1e-12)


def test_a_two_phase_job_keeps_its_levels_exactly():
    site = small_site()  # iteration 20 s, 70 % at utilization 0.95, the rest at 0.3
    p = job_phases(site.workload.training[0], site.rack_types["GB200_NVL72"])
    assert (p.period_s, p.compute_fraction, p.compute_util, p.comm_util) == (20, 0.7, 0.95, 0.3)
    assert list(p.weight[:2]) == [1.0, 0.0] and list(p.share[:2]) == [1.0, 1.0]


def phase_mean(period, clock, dt):
    site = small_site(job(iteration_s=period))
    p = job_phases(site.workload.training[0], site.rack_types["GB200_NVL72"])
    a = lambda x: jnp.asarray([x], F64)  # noqa: E731
    return float(
        mean_utilization(
            a(p.period_s), a(p.period_s * p.compute_fraction), a(p.compute_util),
            a(p.comm_util), jnp.asarray(p.high), jnp.asarray(p.share),
            jnp.asarray(p.weight), a(clock), dt,
        )[0]
    )  # fmt: skip


def test_a_step_averages_the_phases_it_spans():
    # [1.3, 1.5] s of the 2 s default iteration: compute to 1.4 s, then communication.
    assert phase_mean(2.0, 1.3, 0.2) == pytest.approx((U_COMPUTE + U_COMM) / 2, abs=1e-12)
    # [1.85, 2.05]: communication to 1.9 s, the optimizer to 2.0 s, compute again.
    expected = (0.05 * U_COMM + 0.1 * U_OPT + 0.05 * U_COMPUTE) / 0.2
    assert phase_mean(2.0, 1.85, 0.2) == pytest.approx(expected, abs=1e-12)
    # A step of 1 s over a 0.25 s iteration: four whole iterations, the time-weighted mean.
    mean = 0.7 * U_COMPUTE + 0.25 * U_COMM + 0.05 * U_OPT
    assert phase_mean(0.25, 0.1, 1.0) == pytest.approx(mean, abs=1e-12)
    # The job starts 0.05 s into a 0.1 s step: half of it in compute.
    assert phase_mean(2.0, -0.05, 0.1) == pytest.approx(U_COMPUTE / 2, abs=1e-12)


# -- the spectrum ------------------------------------------------------------------------


def square_share(samples: int, harmonics) -> float:
    """The share of a sampled square wave's variance ((swing / 2)^2) in its odd harmonics
    ``harmonics``, ``samples`` to a period, half high: the DFT of the high half gives
    |c_k| = 1 / (N sin(pi k / N)), twice (at +-k) over the variance 1/4. (Continuous:
    8 / (pi k)^2.)"""
    return sum(8 / (samples * math.sin(math.pi * k / samples)) ** 2 for k in harmonics)


FUNDAMENTAL = square_share(80, [1])  # 0.8110 (8 / pi^2 = 0.8106 continuous)
HARMONICS_3_TO_23 = square_share(80, range(3, 24, 2))  # 3.75-28.75 Hz: 0.1774


def test_welch_puts_a_square_waves_energy_at_its_harmonics():
    dt, swing = 0.01, 2.0e6  # 100 Hz sampling, a 2 MW swing at 1.25 Hz (0.8 s period)
    t = np.arange(60_000) * dt
    power = 100e6 + swing * (np.mod(t, 0.8) < 0.4)
    got = kpis(power, dt)
    variance_mw2 = (swing / 2 * 1e-6) ** 2  # 1 MW^2
    assert got["meter_peak_hz"] == 1.25
    assert got["meter_swing_variance_mw2"] == pytest.approx(variance_mw2, rel=2e-3)
    assert got["meter_band_0p1_2hz_mw2"] == pytest.approx(FUNDAMENTAL * variance_mw2, rel=5e-3)
    assert got["meter_band_3_30hz_mw2"] == pytest.approx(HARMONICS_3_TO_23 * variance_mw2, rel=5e-3)
    assert got["meter_nyquist_hz"] == 50.0
    s = welch(power, dt)
    assert s.freq_hz[1] == pytest.approx(1 / 60)  # 60 s segments
    with pytest.raises(ValueError, match="power: the series is not finite"):
        welch(np.array([1.0, np.nan, 2.0]), dt)


def test_a_power_quality_run_keeps_a_bounded_trace():
    check_traced(2**24)  # 46.6 h at 10 ms
    with pytest.raises(ValueError) as err:
        check_traced(2**24 + 1)
    assert str(err.value) == (
        "power_quality: 16,777,217 steps is more than the 16,777,216 whose meter power a run "
        "keeps; shorten the duration or lengthen dt"
    )


# -- the model at dt = 10 ms -------------------------------------------------------------

DT = 0.01
SECONDS = 60.0


@pytest.fixture(scope="module")
def meter_traces() -> dict[float, np.ndarray]:
    """The meter power every 10 ms for a minute of the small site (constant weather),
    its one job iterating every 0.8 s (1.25 Hz) and every 0.1 s (10 Hz): one compiled
    rollout for both."""
    traces = {}
    for period in (0.8, 0.1):
        site = small_site(constant_weather(20.0), square(period))
        p = build_params(site, load_drivers(site), horizon_s=SECONDS, dt=DT, dtype=F64, host=True)
        p = jax.device_put(compress(p))
        every = round(SECONDS / DT) // 10
        _, (_, _, kept) = run_jit(p, init_state(p), 10, every, trace=TRACED)
        traces[period] = np.asarray(kept).reshape(-1)
    return traces


def swing_of(meter: np.ndarray) -> float:
    """The meter's swing between its two levels (medians above and below the middle)."""
    mid = 0.5 * (meter.min() + meter.max())
    return float(np.median(meter[meter > mid]) - np.median(meter[meter < mid]))


def test_a_1_25_hz_job_swings_the_meter_in_the_low_band(meter_traces):
    meter = meter_traces[0.8]
    got = kpis(meter, DT)
    variance = (swing_of(meter) / 2 * 1e-6) ** 2
    # 8 racks x 72 GPUs x 1040 W x (0.9423 - 0.1346) = 484 kW of GPU swing, more at the
    # meter with the CPUs, PSU and UPS losses.
    assert 0.48 < swing_of(meter) * 1e-6 < 0.62
    assert got["meter_peak_hz"] == 1.25
    assert got["meter_band_0p1_2hz_mw2"] == pytest.approx(FUNDAMENTAL * variance, rel=0.03)
    ratio = got["meter_band_3_30hz_mw2"] / got["meter_band_0p1_2hz_mw2"]
    assert ratio == pytest.approx(HARMONICS_3_TO_23 / FUNDAMENTAL, rel=0.05)  # 0.213


def test_a_10_hz_job_swings_the_meter_in_the_high_band(meter_traces):
    meter = meter_traces[0.1]
    got = kpis(meter, DT)
    variance = (swing_of(meter) / 2 * 1e-6) ** 2
    assert got["meter_peak_hz"] == 10.0
    # A square wave sampled 10 times a period: its 10 Hz fundamental carries 0.838 of the
    # variance, inside 3-30 Hz; its 30 Hz harmonic (0.122) sits on the band's edge, half
    # in; the 50 Hz one (0.04), at the Nyquist frequency, is outside.
    share = square_share(10, [1]) + 0.5 * square_share(10, [3])
    assert got["meter_band_3_30hz_mw2"] == pytest.approx(share * variance, rel=0.05)
    assert got["meter_band_0p1_2hz_mw2"] < 1e-3 * got["meter_band_3_30hz_mw2"]


def test_simulate_power_quality_writes_the_spectrum(tmp_path):
    out = tmp_path / "pq"
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "simulate", str(SMALL), "--duration", "20s",
         "--dt", "10ms", "--record", "10s", "--power-quality", "--out", str(out),
         "--set", "workload.training.0.iteration_s=0.8",
         "--set", "workload.training.0.compute_fraction=0.5"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dt_s"] == 0.01 and summary["meter_nyquist_hz"] == 50.0
    assert summary["meter_peak_hz"] == pytest.approx(1.25, abs=0.05)  # 20 s: 0.05 Hz bins
    assert summary["meter_band_0p1_2hz_mw2"] > 3 * summary["meter_band_3_30hz_mw2"] > 0
    meter = pq.read_table(out / "meter.parquet")
    assert meter.num_rows == 2000 and meter.column_names == ["time_s", "meter_w"]
    assert meter.column("time_s")[-1].as_py() == pytest.approx(20.0)
    spectrum = pq.read_table(out / "spectrum.parquet")
    assert spectrum.column_names == ["freq_hz", "psd_w2_per_hz"]
    assert spectrum.column("freq_hz")[-1].as_py() == pytest.approx(50.0)
    assert (out / "spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "meter_band_3_30hz_mw2" in done.stdout and "spectrum.png" in done.stdout
