"""Planning-sized steps: a year of Fairwater at dt = 15 min (wall time), and the error of
dt = 10 ... 900 s against dt = 1 s over a design period (float64), printed as tables.

    python bench/long_steps.py                # a year, and a design week from 15 July
    python bench/long_steps.py --days 2       # a shorter design period

Identical racks are merged (exact, compress.py) in both, as `twin simulate` does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table

from twin_core import load_drivers, load_site
from twin_core.rollout import simulate

ROOT = Path(__file__).resolve().parent.parent
FAIRWATER = ROOT / "scenarios" / "fairwater-wi.yaml"
YEAR_S = 365 * 86400.0
YEAR_TARGET_S = 10.0  # "a year in seconds"
DTS = (1.0, 10.0, 60.0, 300.0, 900.0)


def year_at_planning_steps(site, dt: float) -> tuple[float, float, dict]:
    """Wall seconds for a year at ``dt`` (hourly records): end to end, and stepping
    alone (a second run re-uses the compiled rollout)."""
    drivers = load_drivers(site)
    start = time.perf_counter()
    simulate(site, YEAR_S, dt, 3600.0, drivers=drivers)
    first = time.perf_counter() - start
    start = time.perf_counter()
    result = simulate(site, YEAR_S, dt, 3600.0, drivers=drivers)
    return first, time.perf_counter() - start, result.kpis


def error_table(site, horizon_s: float) -> list[tuple[float, float, dict]]:
    drivers = load_drivers(site)
    rows = []
    for dt in DTS:
        start = time.perf_counter()
        result = simulate(site, horizon_s, dt, 3600.0, dtype=jnp.float64, drivers=drivers)
        rows.append((dt, time.perf_counter() - start, result.kpis))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--days", type=float, default=7.0, help="design period, days")
    parser.add_argument("--year-dt", type=float, default=900.0, help="dt of the year run")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    site = load_site(FAIRWATER)
    console = Console(width=150)
    device = jax.devices()[0]
    console.print(
        f"device: {getattr(device, 'device_kind', device.platform)}, jax {jax.__version__}; "
        f"{site.name}: {site.rack_count:,} racks, start day {site.start.day_of_year}"
    )

    first, again, kpis = year_at_planning_steps(site, args.year_dt)
    year = Table(title=f"A year of {site.name} at dt = {args.year_dt:g} s (float32, merged)")
    for col in ("run", "wall s", "target s", "ratio", "facility GWh", "max GPU °C", "PUE"):
        year.add_column(col, justify="right")
    for name, wall in (("end to end (cold)", first), ("again (compiled)", again)):
        year.add_row(
            name,
            f"{wall:.2f}",
            f"{YEAR_TARGET_S:g}",
            f"{YEAR_TARGET_S / wall:.1f}",
            f"{kpis['facility_energy_mwh'] / 1e3:,.1f}",
            f"{kpis['max_gpu_temp_c']:.2f}",
            f"{kpis['pue']:.4f}",
        )
    console.print(year)

    rows = error_table(site, args.days * 86400.0)
    ref = rows[0][2]
    table = Table(title=f"Error against dt = 1 s over {args.days:g} days from the start (float64)")
    for col in ("dt s", "wall s", "facility MWh", "Δ energy %", "hottest GPU °C", "Δ K",
                "hottest CDU supply °C", "Δ K", "Δ cooling energy %", "balance error"):  # fmt: skip
        table.add_column(col, justify="right")
    for dt, wall, k in rows:
        table.add_row(
            f"{dt:g}",
            f"{wall:.1f}",
            f"{k['facility_energy_mwh']:,.1f}",
            f"{100 * (k['facility_energy_mwh'] / ref['facility_energy_mwh'] - 1):+.3f}",
            f"{k['max_gpu_temp_c']:.2f}",
            f"{k['max_gpu_temp_c'] - ref['max_gpu_temp_c']:+.3f}",
            f"{k['max_supply_c']:.3f}",
            f"{k['max_supply_c'] - ref['max_supply_c']:+.3f}",
            f"{100 * (k['cooling_energy_mwh'] / ref['cooling_energy_mwh'] - 1):+.2f}",
            f"{k['energy_balance_rel_error']:.1e}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
