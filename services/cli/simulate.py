"""``twin simulate`` (a scenario run here, with a progress bar, written as summary.json,
timeseries.parquet and overview.png) and ``twin validate`` (a site file checked)."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from services.cli.errors import console, fail, seconds
from services.cli.extras import installed


class Phases:
    """Wall seconds per stage of a run, in order (``--timings``; bench/startup.py)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


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
    merge: Annotated[
        bool,
        typer.Option(
            "--merge/--no-merge",
            help="advance one rack per class of identical racks (exact); --no-merge "
            "advances every rack, as the live services do",
        ),
    ] = True,
    power_quality: Annotated[
        bool,
        typer.Option(
            "--power-quality",
            help="keep the meter power at every dt and write its spectrum (meter.parquet, "
            "spectrum.parquet, spectrum.png) with the 0.1-2 Hz and 3-30 Hz band energies; "
            "use with a short dt, e.g. --dt 50ms",
        ),
    ] = False,
    timings: Annotated[
        Path | None, typer.Option(hidden=True, help="write seconds per stage as JSON here")
    ] = None,
) -> None:
    """Run a scenario and write summary.json, timeseries.parquet and overview.png (and the
    meter's spectrum with --power-quality)."""
    phases = Phases()
    from twin_core.site import SiteError, load_site, parse_overrides

    horizon = seconds("--duration", duration)
    step = seconds("--dt", dt)
    record_s = seconds("--record", record)
    if granularity not in ("rack", "gpu"):
        fail(f"--granularity: {granularity!r} is not one of rack, gpu")
    if granularity == "rack":  # a few thousand elements a step at most
        from services.runtime import xla_threads

        xla_threads.use_one_thread()  # before JAX's CPU client starts
    phases("imports")
    try:
        overrides = parse_overrides(set_ or [])
        site = load_site(scenario, overrides)
    except SiteError as exc:
        fail(str(exc))
    phases("site")

    import jax

    from services.runtime import compilation_cache
    from services.runtime.config import ConfigError, RuntimeConfig

    try:
        compilation_cache.enable(RuntimeConfig.read("compilation_cache_dir"))
    except ConfigError as exc:
        fail(str(exc))
    if x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from twin_core import build_params, load_drivers, plan
    from twin_core.params import steps_per_hour
    from twin_core.rollout import check_traced, progress_chunks

    phases("imports")
    try:
        steps_per_hour(step)
        n_records, every = plan(horizon, step, record_s)
        if power_quality:
            check_traced(n_records * every)
        drivers = load_drivers(site)
        phases("site")
        params = build_params(
            site,
            drivers,
            horizon_s=horizon,
            dt=step,
            granularity=granularity,
            dtype=jnp.float64 if x64 else jnp.float32,
            host=True,
        )
    except (ValueError, SiteError) as exc:
        fail(str(exc))

    chunks = progress_chunks(n_records, every)
    result, wall = _run_with_progress(
        params, horizon, record_s, merge, n_records, chunks, phases, power_quality
    )
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
        "merge_identical": merge,
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
    phases("outputs")
    if timings is not None:
        timings.write_text(json.dumps(phases.seconds, indent=2) + "\n")


def _run_with_progress(params, horizon, record_s, merge, n_records, chunks, phases, pq):
    from twin_core.rollout import simulate_params

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

        def phase(name: str) -> None:
            phases(name)
            if name == "compile":  # stepping runs in XLA, without the GIL: load the writers
                threading.Thread(target=_import_writers, daemon=True).start()

        result = simulate_params(
            params,
            horizon,
            record_s,
            merge_identical=merge,
            progress=advance,
            chunks=chunks,
            phase=phase,
            power_quality=pq,
        )
    return result, time.perf_counter() - start


def _import_writers() -> None:
    import services.cli.outputs

    if installed("matplotlib"):
        import services.cli.plots  # noqa: F401


def _print_summary(name: str, kpis: dict[str, float], out: Path, wall: float, horizon: float):
    from twin_core.kpis import KPI_UNITS
    from twin_core.spectrum import KPI_UNITS as PQ_UNITS

    table = Table(title=f"{name}: {horizon / 3600:g} h simulated in {wall:.1f} s")
    table.add_column("KPI")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for key, value in kpis.items():
        table.add_row(key, f"{value:,.6g}", KPI_UNITS.get(key) or PQ_UNITS.get(key, ""))
    Console().print(table)
    more = ", meter.parquet, spectrum.parquet, spectrum.png" if "meter_peak_hz" in kpis else ""
    Console().print(f"wrote {out}/summary.json, timeseries.parquet, overview.png{more}")


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
