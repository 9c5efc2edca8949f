"""``twin simulate`` (a scenario run here, with a progress bar, written as summary.json,
timeseries.parquet and overview.png) and ``twin validate`` (a site file checked)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from services.cli.errors import console, fail, seconds


def simulate(
    scenario: Annotated[Path, typer.Argument(help="site file (YAML)")],
    duration: Annotated[str, typer.Option(help="simulated time, e.g. 600s, 24h, 7d")] = "24h",
    dt: Annotated[str, typer.Option(help="coupling interval, e.g. 1s, 10s")] = "1s",
    out: Annotated[Path, typer.Option(help="output folder")] = Path("out"),
    granularity: Annotated[str, typer.Option(help="rack or gpu")] = "rack",
    record: Annotated[str | None, typer.Option(help="recording interval (default 1m)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a site field: path=value")
    ] = None,
    x64: Annotated[bool, typer.Option(help="run in float64 (slower, for checks)")] = False,
) -> None:
    """Run a scenario and write summary.json, timeseries.parquet and overview.png."""
    from twin_core.site import SiteError, load_site, parse_overrides

    horizon = seconds("--duration", duration)
    step = seconds("--dt", dt)
    record_s = seconds("--record", record)
    if granularity not in ("rack", "gpu"):
        fail(f"--granularity: {granularity!r} is not one of rack, gpu")
    try:
        overrides = parse_overrides(set_ or [])
        site = load_site(scenario, overrides)
    except SiteError as exc:
        fail(str(exc))

    import jax

    if x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from twin_core import build_params, load_drivers, plan
    from twin_core.params import steps_per_hour

    try:
        steps_per_hour(step)
        n_records, _ = plan(horizon, step, record_s)
        build_params(
            site,
            load_drivers(site),
            horizon_s=horizon,
            dt=step,
            granularity=granularity,
            dtype=jnp.float64 if x64 else jnp.float32,
        )
    except (ValueError, SiteError) as exc:
        fail(str(exc))

    result, wall = _run_with_progress(site, horizon, step, record_s, granularity, x64, n_records)
    if bad := sorted(k for k, v in result.kpis.items() if not math.isfinite(v)):
        fail(
            f"{scenario}: KPIs not finite ({', '.join(bad)}): the site's values are outside "
            "what the model can simulate; nothing written"
        )
    summary = {
        "scenario": str(scenario),
        "site": site.name,
        "racks": site.rack_count,
        "gpus": site.gpu_count,
        "duration_s": horizon,
        "dt_s": step,
        "record_s": result.record_s,
        "granularity": granularity,
        "dtype": "float64" if x64 else "float32",
        "overrides": {k: v for k, v in overrides.items()},
        "wall_s": round(wall, 3),
        **result.kpis,
    }
    from services.cli.outputs import write_run

    try:
        write_run(out, summary, result)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    _print_summary(site.name, result.kpis, out, wall, horizon)


def _run_with_progress(site, horizon, step, record_s, granularity, x64, n_records):
    import jax.numpy as jnp

    from twin_core import simulate as run

    progress = Progress(
        TextColumn("[bold]simulating[/]"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal and os.environ.get("TWIN_PROGRESS") != "1",
    )
    start = time.perf_counter()
    with progress:
        task = progress.add_task("run", total=n_records, rate="")

        def advance(n: int) -> None:
            done = progress.tasks[0].completed + n
            rate = done / n_records * horizon / max(time.perf_counter() - start, 1e-9)
            progress.update(task, advance=n, rate=f"{rate:,.0f}x real time")

        result = run(
            site,
            horizon,
            step,
            record_s,
            granularity=granularity,
            dtype=jnp.float64 if x64 else jnp.float32,
            progress=advance,
            chunks=min(100, n_records),
        )
    return result, time.perf_counter() - start


def _print_summary(name: str, kpis: dict[str, float], out: Path, wall: float, horizon: float):
    from twin_core.kpis import KPI_UNITS

    table = Table(title=f"{name}: {horizon / 3600:g} h simulated in {wall:.1f} s")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for key, value in kpis.items():
        table.add_row(key, f"{value:,.6g}", KPI_UNITS.get(key, ""))
    Console().print(table)
    Console().print(f"wrote {out}/summary.json, timeseries.parquet, overview.png")


def validate(scenario: Annotated[Path, typer.Argument(help="site file (YAML)")]) -> None:
    """Check a site file; print its size or the first problem."""
    from twin_core.site import SiteError, load_site

    try:
        site = load_site(scenario)
    except SiteError as exc:
        fail(str(exc))
    Console().print(
        f"{site.name}: {len(site.halls)} halls, {site.cdu_count} CDUs, "
        f"{site.rack_count} racks, {site.gpu_count} GPUs: valid"
    )
