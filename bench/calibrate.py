"""Calibration benchmark: wall time of ``twin_core.calibrate`` on Fairwater, on 7 days of
hourly data and on 24 h of 10 s data, printed as a table with targets and ratios.

The "measured" series are the model's own: Fairwater with three parameters perturbed
(CDU UA +15 %, dry-cooler UA -15 %, GPU die resistance +12 %), rolled out, with 1 %
seeded Gaussian noise; the unperturbed site is calibrated against them. The wall time
counts everything ``calibrate`` does (drivers, params, compiling the rollout and its
Jacobian, every Gauss-Newton iteration); generating the data is not timed.

    python bench/calibrate.py                       # both cases
    python bench/calibrate.py --days 1 --hours 2    # shorter windows
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from twin_core import load_site, simulate, with_overrides  # noqa: E402
from twin_core.calibrate import Measured, calibrate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAIRWATER = ROOT / "scenarios" / "fairwater-wi.yaml"
R_DIE = "rack_types.GB200_NVL72.thermal.r_die_c_per_w"
FACTORS = {
    "cooling.cdu.ua_w_per_k": 1.15,
    "cooling.dry_coolers.ua_w_per_k_per_unit": 0.85,
    R_DIE: 1.12,
}
FITTED = (
    "facility_w",
    "it_w",
    "cooling_w",
    "tcs_supply_mean_c",
    "facility_supply_c",
    "gpu_temp_mean_c",
    "dry_cooler_fans_w",
)
TARGET_S = {"hourly": 300.0, "10 s": None}  # the target: <= 5 min for the week


def value(site, path: str) -> float:
    node = site
    for key in path.split("."):
        node = node[key] if isinstance(node, dict) else getattr(node, key)
    return float(node)


def case(site, horizon_s: float, dt: float, record_s: float):
    """(wall s, iterations, worst |error| / truth, worst |error| / std error, the
    parameter with the worst relative error)."""
    truth = {p: value(site, p) * f for p, f in FACTORS.items()}
    result = simulate(with_overrides(site, truth), horizon_s, dt, record_s, dtype=jnp.float64)
    rng = np.random.default_rng(7)
    series = {
        q: result.means[q] * (1 + 0.01 * rng.standard_normal(len(result.means[q]))) for q in FITTED
    }
    series["ambient_c"] = result.means["ambient_c"]
    bounds = {p: (0.5 * value(site, p), 2.0 * value(site, p)) for p in FACTORS}
    start = time.perf_counter()
    cal = calibrate(site, Measured(record_s, series), fit=bounds, dt=dt)
    wall = time.perf_counter() - start
    errors = [abs(cal.estimates[p].value - t) for p, t in truth.items()]
    rels = {p: e / t for e, (p, t) in zip(errors, truth.items(), strict=True)}
    sigmas = max(e / cal.estimates[p].std_error for e, p in zip(errors, truth, strict=True))
    worst = max(rels, key=lambda p: rels[p])
    return wall, cal.iterations, rels[worst], sigmas, worst.rpartition(".")[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--days", type=float, default=7.0, help="days of hourly data")
    parser.add_argument("--hours", type=float, default=24.0, help="hours of 10 s data")
    # Above 10 s a step is a long one (twin_core/long_step.py), accurate up to 900 s.
    parser.add_argument("--hourly-dt", type=float, default=45.0, help="rollout dt, hourly data")
    args = parser.parse_args()
    device = jax.devices()[0]
    site = load_site(FAIRWATER)
    console = Console(width=140)
    console.print(
        f"device: {getattr(device, 'device_kind', device.platform)} ({device.platform}), "
        f"jax {jax.__version__}; site {site.name}: {site.rack_count:,} racks; float64; "
        f"3 parameters, {len(FITTED)} quantities"
    )
    table = Table(title="Fairwater calibration wall time")
    for col in ("data", "window", "dt s", "iterations", "wall s", "target s", "ratio",
                "worst error %", "worst error / σ", "worst parameter"):  # fmt: skip
        table.add_column(col, justify="right")
    runs = (
        ("hourly", args.days * 86400.0, args.hourly_dt, 3600.0),
        ("10 s", args.hours * 3600.0, 10.0, 10.0),
    )
    for name, horizon, dt, record in runs:
        if horizon <= 0:
            continue
        wall, iterations, rel, sigmas, worst = case(site, horizon, dt, record)
        target = TARGET_S[name] if horizon >= 7 * 86400 or name != "hourly" else None
        table.add_row(
            name,
            f"{horizon / 3600:g} h",
            f"{dt:g}",
            str(iterations),
            f"{wall:.1f}",
            f"{target:g}" if target else "-",
            f"{target / wall:.2f}" if target else "-",
            f"{100 * rel:.2f}",
            f"{sigmas:.2f}",
            worst,
        )
    console.print(table)


if __name__ == "__main__":
    main()
