"""The ``twin`` command."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    help="AI Factory Twin: a digital twin of a hyperscale AI datacenter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command()
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
    from twin_core.durations import parse_duration
    from twin_core.site import SiteError, load_site, parse_overrides

    try:
        horizon = parse_duration(duration)
        step = parse_duration(dt)
        record_s = parse_duration(record) if record else None
    except ValueError as exc:
        fail(str(exc))
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

    from twin_core.params import build_params, steps_per_hour
    from twin_core.rollout import plan

    try:
        steps_per_hour(step)
        n_records, _ = plan(horizon, step, record_s)
        build_params(site, horizon, step, granularity, jnp.float64 if x64 else jnp.float32)
    except (ValueError, SiteError) as exc:
        fail(str(exc))

    result, wall = _run_with_progress(site, horizon, step, record_s, granularity, x64, n_records)
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

    from twin_core.rollout import simulate as run

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
            granularity,
            jnp.float64 if x64 else jnp.float32,
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


@app.command()
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


@app.command()
def serve(service: Annotated[str, typer.Argument(help="compute, cooling, power, energy or twin")]):
    """Run one service (configured by TWIN_* environment variables)."""
    from services.serve import SERVICES
    from services.serve import serve as run_service

    if service not in SERVICES:
        fail(f"service: {service!r} is not one of {', '.join(SERVICES)}")
    raise typer.Exit(run_service(service))


@app.command()
def up(
    scenario: Annotated[str, typer.Argument(help="seeded site name or site file")] = "fairwater-wi",
    speed: Annotated[float, typer.Option(help="real-time factor; 0 = as fast as possible")] = 1.0,
    paused: Annotated[bool, typer.Option(help="start the run paused")] = False,
) -> None:
    """Start a local twin: nats-server, every service, and a run; Ctrl-C stops it all."""
    import signal as signals
    import threading
    from pathlib import Path as P

    from services.launcher import LocalTwin
    from services.scenario import site_from_spec
    from twin.twin.v1 import clock_pb2, twin_pb2

    path = P(scenario)
    spec = clock_pb2.RunSpec(dt_s=1.0)
    if path.suffix in (".yaml", ".yml"):
        try:
            spec.scenario_yaml = path.read_text()
        except OSError as exc:
            fail(f"{scenario}: {exc.strerror}")
    else:
        spec.scenario_name = scenario
    from twin_core.site import SiteError

    try:
        site = site_from_spec(spec)
    except SiteError as exc:
        fail(str(exc))
    with LocalTwin(site.name) as twin:
        address = twin.addresses["twin"]
        start = twin_pb2.StartRequest(spec=spec, paused=paused)
        if speed > 0:
            start.speed.real_time_factor = speed
        else:
            start.speed.as_fast_as_possible = True
        run_id = _start_run(address, start)
        Console().print(
            f"twin {site.name} up: run {run_id}; gRPC {address} (nats {twin.nats_url})\n"
            f"  grpcurl -plaintext {address} list\n"
            f"  grpcurl -plaintext {address} twin.twin.v1.TwinService/GetSnapshot\n"
            "Ctrl-C stops everything.",
            soft_wrap=True,
        )
        stop = threading.Event()
        for sig in (signals.SIGINT, signals.SIGTERM):
            signals.signal(sig, lambda *_: stop.set())
        stop.wait()
    Console().print("stopped")


def _start_run(address: str, request) -> str:
    import grpc

    from twin.twin.v1 import twin_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = twin_pb2_grpc.TwinServiceStub(channel).Start(request, timeout=300)
        except grpc.RpcError as exc:
            fail(f"start: {exc.details()}")
    return reply.run_id


@app.command()
def status() -> None:
    """Health of each service of a local twin (default ports)."""
    from services.launcher import default_addresses, health

    table = Table(title="services")
    table.add_column("service")
    table.add_column("address")
    table.add_column("health")
    for name, address in default_addresses().items():
        table.add_row(name, address, health(address))
    Console().print(table)


db_app = typer.Typer(help="The history database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate(
    url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL/TimescaleDB conninfo or URL", envvar="TWIN_DATABASE_URL"),
    ] = None,
) -> None:
    """Apply the pending schema migrations (TimescaleDB features when the extension is
    available, plain PostgreSQL tables otherwise)."""
    from rich.markup import escape

    from services.historian.migrate import MigrationError, migrate

    if not url:
        fail("no database: pass --url or set TWIN_DATABASE_URL")
    try:
        applied = migrate(url)
    except MigrationError as exc:
        fail(escape(str(exc)))
    if applied:
        console.print(f"applied migrations {', '.join(f'{v:04d}' for v in applied)}")
    else:
        console.print("schema is up to date")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
