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


history_app = typer.Typer(
    help="Query the history (the historian's gRPC API).", no_args_is_help=True
)
app.add_typer(history_app, name="history")
HISTORY_ADDRESS = "127.0.0.1:50056"
AGGREGATE_CHOICES = ("avg", "min", "max", "last", "sum", "p50", "p95", "p99", "pNN")


def _history_call(address: str, method: str, request):
    import grpc
    from rich.markup import escape

    from twin.history.v1 import history_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            return getattr(history_pb2_grpc.HistoryServiceStub(channel), method)(
                request, timeout=60
            )
        except grpc.RpcError as exc:
            fail(escape(f"{method}: {exc.details()} ({exc.code().name})"))


def _aggregate(text: str) -> tuple[int, float]:
    """``avg``/``min``/``max``/``last``/``sum`` or ``pNN`` (a percentile, e.g. p95)."""
    from twin.history.v1 import history_pb2

    name = text.strip().lower()
    if name.startswith("p") and len(name) > 1:
        try:
            return history_pb2.AGGREGATE_PERCENTILE, float(name[1:])
        except ValueError:
            pass
    value = getattr(history_pb2, f"AGGREGATE_{name.upper()}", None)
    if value is None or name in ("unspecified", "percentile"):
        fail(f"--agg: unknown aggregate {text!r} (expected one of {', '.join(AGGREGATE_CHOICES)})")
    return value, 0.0


@history_app.command("runs")
def history_runs(
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
    site: Annotated[str, typer.Option(help="only this site")] = "",
) -> None:
    """The stored runs, most recent first."""
    from twin.history.v1 import history_pb2

    table = Table(title="runs")
    for column in (
        "run",
        "site",
        "scenario",
        "started",
        "dt (s)",
        "horizon (s)",
        "status",
        "steps",
    ):
        table.add_column(column)
    token = ""
    while True:
        reply = _history_call(
            address, "ListRuns", history_pb2.ListRunsRequest(site_id=site, page_token=token)
        )
        for r in reply.runs:
            table.add_row(
                r.run_id,
                r.site_id,
                r.scenario,
                r.started_at.ToDatetime().isoformat(timespec="seconds") + "Z",
                f"{r.dt_s:g}",
                f"{r.horizon_s:g}",
                r.status,
                str(r.steps_stored),
            )
        token = reply.next_page_token
        if not token:
            break
    Console().print(table)


@history_app.command("query")
def history_query(
    metrics: Annotated[list[str], typer.Argument(help="site_series columns, e.g. facility_w")],
    run: Annotated[str, typer.Option(help="run id (see `twin history runs`)")],
    bucket: Annotated[str, typer.Option(help="bucket width, e.g. 1m, 1h; 0 = raw")] = "1h",
    agg: Annotated[str, typer.Option(help="avg, min, max, last, sum or pNN")] = "avg",
    start: Annotated[str | None, typer.Option(help="simulated start, e.g. 0s, 6h")] = None,
    end: Annotated[str | None, typer.Option(help="simulated end (exclusive), e.g. 24h")] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
    plot: Annotated[Path | None, typer.Option(help="also plot the series to this PNG")] = None,
    limit: Annotated[int, typer.Option(help="rows at most (all pages up to this)")] = 100_000,
) -> None:
    """One run's site series, bucketed (default hourly averages) or raw."""
    from twin.history.v1 import history_pb2
    from twin_core.durations import parse_duration

    def seconds(option: str, text: str | None) -> float | None:
        if text is None:
            return None
        try:
            return parse_duration(text, allow_zero=True)
        except ValueError as exc:
            fail(f"{option}: {exc}")

    bucket_s = seconds("--bucket", bucket) or 0.0
    aggregate, percentile = _aggregate(agg)
    request = history_pb2.QueryRequest(
        run_id=run,
        metrics=metrics,
        bucket_s=bucket_s,
        aggregate=aggregate,
        percentile=percentile,
        page_size=10_000,
    )
    if (start_s := seconds("--start", start)) is not None:
        request.start_s = start_s
    if (end_s := seconds("--end", end)) is not None:
        request.end_s = end_s
    rows: list = []
    while len(rows) < limit:
        reply = _history_call(address, "Query", request)
        rows += list(reply.rows)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    rows = rows[:limit]
    label = "raw" if bucket_s == 0 else f"{agg} per {bucket}"
    table = Table(title=f"{run}: {label}")
    table.add_column("time")
    for m in metrics:
        table.add_column(m, justify="right")
    for row in rows:
        table.add_row(_clock(row.time_s), *(f"{v:.6g}" for v in row.values))
    Console().print(table)
    if plot is not None:
        _plot(plot, metrics, rows, f"{run}: {label}")
        console.print(f"wrote {plot}")


def _clock(seconds: float) -> str:
    days, rest = divmod(seconds, 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = f"{int(h):02d}:{int(m):02d}:{s:06.3f}".rstrip("0").rstrip(".")
    return f"{int(days)}d {text}" if days else text


def _plot(path: Path, metrics: list[str], rows: list, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [r.time_s / 3600 for r in rows]
    fig, axes = plt.subplots(
        len(metrics), 1, sharex=True, squeeze=False, figsize=(9, 2.5 * len(metrics))
    )
    for i, m in enumerate(metrics):
        ax = axes[i][0]
        ax.plot(hours, [r.values[i] for r in rows])
        ax.set_ylabel(m)
        ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("simulated time (h)")
    axes[0][0].set_title(title)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        fail(f"--plot: {exc}")
    finally:
        plt.close(fig)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
