"""The ``twin`` command."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from services.cli.errors import console, fail, rpc_failed, seconds
from services.cli.gateway import gateway_app, replay_cmd
from services.cli.inventory import inventory_app
from services.cli.whatif import whatif
from services.runtime.redact import redact

app = typer.Typer(
    help="AI Factory Twin: a digital twin of a hyperscale AI datacenter.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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

    from twin_core.params import build_params, steps_per_hour
    from twin_core.rollout import plan

    try:
        steps_per_hour(step)
        n_records, _ = plan(horizon, step, record_s)
        build_params(site, horizon, step, granularity, jnp.float64 if x64 else jnp.float32)
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
def serve(
    service: Annotated[
        str, typer.Argument(help="compute, cooling, power, energy, twin, historian or gateway")
    ],
):
    """Run one service (configured by TWIN_* environment variables)."""
    if service == "gateway":  # no model in it: skip importing JAX
        from services.gateway.service import main as gateway_main

        raise typer.Exit(gateway_main())
    from services.serve import OPTIONAL, SERVICES
    from services.serve import serve as run_service

    if service not in SERVICES + OPTIONAL:
        fail(f"service: {service!r} is not one of {', '.join(SERVICES + OPTIONAL)}")
    raise typer.Exit(run_service(service))


@app.command()
def up(
    scenario: Annotated[str, typer.Argument(help="seeded site name or site file")] = "fairwater-wi",
    speed: Annotated[
        float | None,
        typer.Option(
            help="real-time factor; 0 = as fast as possible (default: 1, or 0 with --duration)"
        ),
    ] = None,
    paused: Annotated[bool, typer.Option(help="start the run paused")] = False,
    duration: Annotated[
        str | None, typer.Option(help="simulated time, e.g. 6h; then report and stop")
    ] = None,
    dt: Annotated[str, typer.Option(help="coupling interval, e.g. 1s, 10s")] = "1s",
    report: Annotated[
        Path | None, typer.Option(help="with --duration: write history.csv and hourly.png here")
    ] = None,
    base_port: Annotated[
        int, typer.Option(help="first gRPC port (twin; the others follow); 0 = free ports")
    ] = 50051,
    ready_timeout: Annotated[
        str, typer.Option(help="how long to wait for every service to serve")
    ] = "120s",
    stall_timeout: Annotated[
        str, typer.Option(help="with --duration: give up when the run makes no progress this long")
    ] = "120s",
    log_dir: Annotated[
        Path | None,
        typer.Option(help="service logs (default: --report, else a twin-<id> temp folder)"),
    ] = None,
) -> None:
    """Start a local twin: nats-server, PostgreSQL, every service, and a run; the twin is
    supervised (a dead service or server is restarted); Ctrl-C stops it all.
    With --duration the run ends by itself: the history of the run is queried, printed
    (and written to --report DIR), and everything stops."""
    import signal as signals
    import tempfile
    import threading
    from pathlib import Path as P

    from services.launcher import (
        LocalTwin,
        TwinStartError,
        default_addresses,
        free_addresses,
        new_instance_id,
    )
    from services.scenario import site_from_spec
    from twin.twin.v1 import clock_pb2, twin_pb2

    step_s = seconds("--dt", dt) or 0.0
    horizon_s = seconds("--duration", duration) or 0.0
    ready_s = seconds("--ready-timeout", ready_timeout) or 0.0
    stall_s = seconds("--stall-timeout", stall_timeout) or 0.0
    steps = round(horizon_s / step_s)
    if duration is not None and abs(steps * step_s - horizon_s) > 1e-9 * horizon_s:
        fail(f"--duration: {duration} is not a whole number of --dt {dt} steps")
    if report is not None and duration is None:
        fail("--report: needs --duration (the report is written when the run ends)")
    if duration is not None and paused:
        fail("--paused: not with --duration")
    if speed is None:
        speed = 0.0 if duration is not None else 1.0
    if speed < 0:
        fail("--speed: must be >= 0")
    if not 0 <= base_port <= 65535 - 5:
        fail(f"--base-port: {base_port} is not 0 or a port from 1 to {65535 - 5}")
    path = P(scenario)
    spec = clock_pb2.RunSpec(dt_s=step_s, horizon_s=horizon_s)
    data_env: dict[str, str] = {}
    if path.suffix in (".yaml", ".yml"):
        try:
            spec.scenario_yaml = path.read_text()
        except OSError as exc:
            fail(f"{scenario}: {exc.strerror}")
        # The site travels as YAML: its relative weather and series files resolve in the
        # services' data directory, which is the site file's folder here.
        data_env = {"TWIN_DATA_DIR": str(path.resolve().parent)}
        os.environ.update(data_env)  # the check below resolves them the same way
    else:
        spec.scenario_name = scenario
    from twin_core.site import SiteError

    try:
        site = site_from_spec(spec)
    except SiteError as exc:
        fail(str(exc))
    addresses = free_addresses() if base_port == 0 else default_addresses(base=base_port)
    instance = new_instance_id()
    logs = log_dir or report or P(tempfile.gettempdir()) / f"twin-{instance}"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--log-dir {logs}: {exc.strerror or exc}")
    stop = threading.Event()
    started = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()
        if not started.is_set():  # still starting: unwind, so nothing is left behind
            raise KeyboardInterrupt

    for sig in (signals.SIGINT, signals.SIGTERM):
        signals.signal(sig, on_signal)
    console.print(f"twin {site.name}: instance {instance}, logs in {logs}", highlight=False)
    twin = LocalTwin(
        site.name,
        addresses,
        env=data_env,
        log_path=str(logs / "services.log"),
        nats_log_path=str(logs / "nats-server.log"),
        ready_timeout_s=ready_s,
        instance_id=instance,
        supervise=True,
        on_event=lambda line: (
            None  # the failure itself is the command's last line (below)
            if line.startswith("error: ")
            else console.print(f"  {line}", highlight=False, soft_wrap=True)
        ),
    )
    try:
        twin.__enter__()
    except TwinStartError as exc:
        fail(f"twin did not start: {exc}")
    except KeyboardInterrupt:
        fail("interrupted while starting; everything stopped")
    try:  # entered above: `with twin` would start it a second time
        started.set()
        threading.Thread(target=lambda: twin.failed.wait() and stop.set(), daemon=True).start()
        address = twin.addresses["twin"]
        start = twin_pb2.StartRequest(spec=spec, paused=paused)
        if speed > 0:
            start.speed.real_time_factor = speed
        else:
            start.speed.as_fast_as_possible = True
        run_id = _start_run(address, start, instance)
        ports = ", ".join(f"{name} {a}" for name, a in twin.addresses.items())
        if duration is None:
            Console().print(
                f"twin {site.name} up (instance {instance}): run {run_id}\n"
                f"  gRPC: {ports}\n  nats: {redact(twin.nats_url or '')}\n"
                f"  grpcurl -plaintext {address} list\n"
                f"  grpcurl -plaintext {address} twin.twin.v1.TwinService/GetSnapshot\n"
                "Ctrl-C stops everything.",
                soft_wrap=True,
                highlight=False,
            )
            stop.wait()
        else:
            console.print(f"  gRPC: {ports}", highlight=False, soft_wrap=True)
            console.print(f"twin {site.name}: run {run_id}, {duration} at dt {dt} ({steps} steps)")
            # A paced run may legitimately take a while per step: never stall-fail faster.
            patience = max(stall_s, 3 * step_s / speed) if speed > 0 else stall_s
            if _wait_for_step(address, run_id, steps, stop, patience, instance, twin):
                _history_report(twin.addresses["historian"], run_id, steps, step_s, report, stop)
        if twin.failure:
            fail(twin.failure)
    finally:
        twin.close()
    Console().print("stopped")


def print_whole(table: Table) -> None:
    """Print ``table`` at least as wide as its content needs: on a narrow terminal the
    lines run on rather than ids being cut or the other columns squeezed to nothing."""
    out = Console()
    needed = out.measure(table).maximum
    (Console(width=needed) if needed > out.width else out).print(table, crop=False)


def _wait_for_step(
    address: str, run_id: str, steps: int, stop, stall_s: float, instance: str, twin
) -> bool:
    """Until the run has ticked ``steps`` times (True) or Ctrl-C (False); progress on
    stderr every few seconds. Fails (one line) when the step does not advance for
    ``stall_s`` (a transient gRPC error counts as no progress) or the twin failed."""
    import grpc

    from services.cli.channel import client_channel as open_channel
    from twin.twin.v1 import snapshot_pb2, twin_pb2, twin_pb2_grpc

    started = shown = moved = time.monotonic()
    step, last, problem = 0, -1, ""
    with open_channel(address, instance) as channel:
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        while not stop.is_set():
            try:
                request = twin_pb2.GetSnapshotRequest(run_id=run_id)
                snapshot = stub.GetSnapshot(request, timeout=10).snapshot
                step, problem = snapshot.step, ""
                if snapshot.state == snapshot_pb2.RUN_STATE_FAILED:
                    fail(
                        f"run {run_id} failed at step {step:,} of {steps:,}: "
                        f"{snapshot.reason}; logs: {twin.log_location}"
                    )
            except grpc.RpcError as exc:
                if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    rpc_failed("GetSnapshot", address, exc)
                problem = f"; last error: {exc.details()} ({exc.code().name})"
            now = time.monotonic()
            if step != last:
                last, moved = step, now
            if step >= steps:
                rate = steps / max(now - started, 1e-9)
                console.print(f"run ended: {steps} steps, {rate:,.0f} steps/s")
                return True
            if now - moved > stall_s:
                fail(
                    f"run {run_id} made no progress for {stall_s:g} s (step {step:,} of "
                    f"{steps:,}{problem}); logs: {twin.log_location}"
                )
            if now - shown >= 5:
                shown = now
                console.print(f"  step {step:,}/{steps:,}")
            stop.wait(0.2)
    return False


def _history_report(
    address: str, run_id: str, steps: int, dt_s: float, out: Path | None, stop
) -> None:
    """Wait for the historian to hold every step of the run, then print hourly facility
    power, IT power and PUE (energy-weighted: hourly facility energy / IT energy) from the
    History API; with ``out``, write out/history.csv (Export) and out/hourly.png."""
    from types import SimpleNamespace

    from twin.history.v1 import history_pb2

    deadline = time.monotonic() + 120
    compare = history_pb2.CompareRunsRequest(run_a=run_id, run_b=run_id, metrics=["facility_w"])
    while True:  # every step stored (rows) and complete (a facility meter in each)
        reply = _history_call(address, "CompareRuns", compare)
        if reply.a.steps >= steps and reply.a.metrics[0].samples >= steps:
            break
        if stop.is_set() or time.monotonic() > deadline:
            fail(f"history: {reply.a.steps} of {steps} steps stored")
        stop.wait(0.25)
    metrics = ["facility_w", "it_w", "pue"]
    # A step's sample is stamped at its end, so the last one (at the horizon) would open an
    # hour of its own: the hourly table stops before it (the run's totals include it).
    request = history_pb2.QueryRequest(
        run_id=run_id, metrics=metrics, bucket_s=3600, page_size=10_000, end_s=steps * dt_s
    )
    rows = list(_history_call(address, "Query", request).rows)
    hourly = [
        SimpleNamespace(
            time_s=r.time_s,
            values=[r.values[0] / 1e6, r.values[1] / 1e6, r.values[0] / r.values[1]],
        )
        for r in rows
    ]
    whole = _history_call(
        address,
        "CompareRuns",
        history_pb2.CompareRunsRequest(run_a=run_id, run_b=run_id, metrics=metrics[:2]),
    ).a.metrics
    hours = steps * dt_s / 3600
    table = Table(title=f"run {run_id}: {hours:g} h simulated, hourly (from the History API)")
    for column in ("hour", "facility (MW)", "IT (MW)", "PUE"):
        table.add_column(column, justify="right")
    for r in hourly:
        table.add_row(_clock(r.time_s), *(f"{v:.4f}" if i == 2 else f"{v:,.2f}"
                                          for i, v in enumerate(r.values)))  # fmt: skip
    facility_mwh, it_mwh = whole[0].energy_mwh, whole[1].energy_mwh
    table.add_row(
        "run", f"{facility_mwh:,.1f} MWh", f"{it_mwh:,.1f} MWh", f"{facility_mwh / it_mwh:.4f}"
    )
    Console().print(table)
    if out is not None:
        csv_path = out / "history.csv"
        export_to_file(
            address,
            history_pb2.ExportRequest(run_id=run_id, format=history_pb2.EXPORT_FORMAT_CSV),
            csv_path,
        )
        # The run at up to ~600 points (bucket averages), with the hourly values over it.
        bucket = max(1, math.ceil(steps / 600)) * dt_s
        fine = _history_call(
            address,
            "Query",
            history_pb2.QueryRequest(
                run_id=run_id, metrics=metrics[:2], bucket_s=bucket, page_size=10_000
            ),
        ).rows
        png = out / "hourly.png"
        _report_plot(png, fine, hourly, f"run {run_id}: {hours:g} h simulated")
        Console().print(f"wrote {csv_path}, {png}")


def _report_plot(path: Path, fine, hourly, title: str) -> None:
    """Facility and IT power and PUE over the run, with the hourly values as steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r.time_s / 3600 for r in fine]
    facility = [r.values[0] / 1e6 for r in fine]
    it = [r.values[1] / 1e6 for r in fine]
    series = [
        ("power (MW)", [("facility", facility), ("IT", it)]),
        (
            "PUE",
            [("PUE", [f / i if i else float("nan") for f, i in zip(facility, it, strict=True)])],
        ),
    ]
    th = [r.time_s / 3600 for r in hourly] + [t[-1]]  # the last hour drawn to the end
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for k, (ax, (label, lines)) in enumerate(zip(axes, series, strict=True)):
        for name, values in lines:
            ax.plot(t, values, label=name, linewidth=1)
        for j in (0, 1) if k == 0 else (2,):
            ax.step(th, [r.values[j] for r in [*hourly, hourly[-1]]], where="post", color="black",
                    linewidth=1.5, alpha=0.6, label="hourly" if j in (0, 2) else None)  # fmt: skip
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("simulated time (h)")
    axes[0].set_title(title)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        fail(f"--report: {exc}")
    finally:
        plt.close(fig)


def _start_run(address: str, request, instance: str | None = None) -> str:
    import grpc

    from services.cli.channel import client_channel as open_channel
    from twin.twin.v1 import twin_pb2_grpc

    with open_channel(address, instance) as channel:
        try:
            reply = twin_pb2_grpc.TwinServiceStub(channel).Start(request, timeout=300)
        except grpc.RpcError as exc:
            rpc_failed("start", address, exc)
    return reply.run_id


@app.command()
def status(
    addresses: Annotated[
        list[str] | None,
        typer.Argument(help="host:port of services to check (default: those of `twin up`)"),
    ] = None,
    wait: Annotated[
        str | None, typer.Option(help="check again until all serve, for at most this long")
    ] = None,
) -> None:
    """Health of services (grpc.health.v1, over TLS when TWIN_GRPC_TLS_* say so); exit
    status 1 unless every one is SERVING."""
    from services.launcher import default_addresses, probe
    from services.runtime.config import ConfigError

    named = {a: a for a in addresses} if addresses else default_addresses()
    deadline = time.monotonic() + (seconds("--wait", wait or None) or 0.0)
    try:
        while True:
            states = {name: probe(address) for name, address in named.items()}
            if all(p.status == "SERVING" for p in states.values()):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    except ConfigError as exc:
        fail(str(exc))
    table = Table(title="services")
    table.add_column("service")
    table.add_column("address", no_wrap=True)
    table.add_column("health")
    table.add_column("instance", no_wrap=True)  # TWIN_INSTANCE_ID set: others are OTHER_TWIN
    for name, address in named.items():
        table.add_row(name, address, states[name].status, states[name].instance_id or "")
    Console().print(table)
    if any(p.status != "SERVING" for p in states.values()):
        raise typer.Exit(1)


db_app = typer.Typer(help="The history database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(inventory_app, name="inventory")
app.add_typer(gateway_app, name="gateway")
app.command("replay")(replay_cmd)
app.command("whatif")(whatif)


@db_app.command("migrate")
def db_migrate(
    url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL/TimescaleDB conninfo or URL", envvar="TWIN_DATABASE_URL"),
    ] = None,
) -> None:
    """Apply the pending schema migrations (TimescaleDB features when the extension is
    available, plain PostgreSQL tables otherwise)."""
    from services.historian.migrate import MigrationError, migrate

    if not url:
        fail("no database: pass --url or set TWIN_DATABASE_URL")
    try:
        applied = migrate(url)
    except MigrationError as exc:
        fail(str(exc))
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

    from services.cli.channel import client_channel as open_channel
    from twin.history.v1 import history_pb2_grpc

    with open_channel(address) as channel:
        try:
            return getattr(history_pb2_grpc.HistoryServiceStub(channel), method)(
                request, timeout=60
            )
        except grpc.RpcError as exc:
            rpc_failed(method, address, exc)


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

    rows: list[tuple[str, ...]] = []
    token = ""
    while True:
        reply = _history_call(
            address, "ListRuns", history_pb2.ListRunsRequest(site_id=site, page_token=token)
        )
        for r in reply.runs:
            rows.append((
                r.run_id,
                r.site_id,
                r.scenario,
                r.started_at.ToDatetime().isoformat(timespec="seconds") + "Z",
                f"{r.dt_s:g}",
                f"{r.horizon_s:g}",
                r.status,
                str(r.steps_stored),
            ))  # fmt: skip
        token = reply.next_page_token
        if not token:
            break
    table = Table(title="runs")
    columns = ("run", "site", "scenario", "started", "dt (s)", "horizon (s)", "status", "steps")
    for i, column in enumerate(columns):
        # Ids and times are copied into other commands: never cut or wrapped, whatever the
        # terminal width (the other columns wrap instead).
        whole = column in ("run", "started")
        width = max([len(column), *(len(row[i]) for row in rows)]) if whole else None
        table.add_column(column, no_wrap=whole, min_width=width)
    for row in rows:
        table.add_row(*row)
    print_whole(table)


@history_app.command("query")
def history_query(
    metrics: Annotated[list[str], typer.Argument(help="site_series columns, e.g. facility_w")],
    run: Annotated[str, typer.Option(help="run id (see `twin history runs`)")],
    bucket: Annotated[str, typer.Option(help="bucket width, e.g. 1m, 1h; 0 = raw")] = "1h",
    agg: Annotated[str, typer.Option(help="avg, min, max, last, sum or pNN")] = "avg",
    start: Annotated[
        str | None, typer.Option("--from", "--start", help="simulated start, e.g. 0s, 6h")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", "--end", help="simulated end (exclusive), e.g. 24h"),
    ] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
    plot: Annotated[Path | None, typer.Option(help="also plot the series to this PNG")] = None,
    limit: Annotated[int, typer.Option(help="rows at most (all pages up to this)")] = 100_000,
) -> None:
    """One run's site series, bucketed (default hourly averages) or raw."""
    from twin.history.v1 import history_pb2

    bucket_s = seconds("--bucket", bucket, allow_zero=True) or 0.0
    aggregate, percentile = _aggregate(agg)
    request = history_pb2.QueryRequest(
        run_id=run,
        metrics=metrics,
        bucket_s=bucket_s,
        aggregate=aggregate,
        percentile=percentile,
        page_size=10_000,
    )
    if (start_s := seconds("--from", start, allow_zero=True)) is not None:
        request.start_s = start_s
    if (end_s := seconds("--to", end, allow_zero=True)) is not None:
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


def _metric_list(values: list[str] | None) -> list[str]:
    """``--metrics a,b --metrics c`` -> [a, b, c]."""
    return [m.strip() for v in values or [] for m in v.split(",") if m.strip()]


@history_app.command("export")
def history_export(
    run: Annotated[str, typer.Argument(help="run id (see `twin history runs`)")],
    out: Annotated[Path, typer.Option(help="file to write (replaced atomically)")],
    format_: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    metrics: Annotated[
        list[str] | None, typer.Option(help="site_series columns (default: all)")
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", "--start", help="simulated start, e.g. 6h")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", "--end", help="simulated end (exclusive), e.g. 24h")
    ] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
) -> None:
    """One run's site series to a CSV or Parquet file (the History API's Export)."""
    from twin.history.v1 import history_pb2

    kinds = {"csv": history_pb2.EXPORT_FORMAT_CSV, "parquet": history_pb2.EXPORT_FORMAT_PARQUET}
    if format_ not in kinds:
        fail(f"--format: {format_!r} is not one of csv, parquet")
    request = history_pb2.ExportRequest(
        run_id=run, metrics=_metric_list(metrics), format=kinds[format_]
    )
    for option, text, field in (("--from", from_, "start_s"), ("--to", to, "end_s")):
        if (value := seconds(option, text, allow_zero=True)) is not None:
            setattr(request, field, value)
    size = export_to_file(address, request, out)
    console.print(f"wrote {out} ({size:,} bytes)")


def export_to_file(address: str, request, out: Path) -> int:
    """Stream ``Export`` into ``out`` atomically: a temp file beside it, renamed when the
    stream has ended, so a failed export never leaves a partial file. Returns its size."""
    import tempfile

    import grpc

    from services.cli.channel import client_channel as open_channel
    from twin.history.v1 import history_pb2_grpc

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f, open_channel(address) as channel:
            stub = history_pb2_grpc.HistoryServiceStub(channel)
            try:
                for chunk in stub.Export(request, timeout=600):
                    f.write(chunk.data)
                    size += len(chunk.data)
            except grpc.RpcError as exc:
                rpc_failed("Export", address, exc)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600: give it a normal file's mode
        os.replace(tmp, out)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return size


@history_app.command("compare")
def history_compare(
    run_a: Annotated[str, typer.Argument(help="baseline run id")],
    run_b: Annotated[str, typer.Argument(help="run compared with it")],
    metrics: Annotated[
        list[str] | None, typer.Option(help="site_series columns (default: the main KPIs)")
    ] = None,
    address: Annotated[str, typer.Option(help="historian gRPC address")] = HISTORY_ADDRESS,
) -> None:
    """Two runs side by side: each metric's average, min, max and energy, and B - A."""
    from twin.history.v1 import history_pb2

    reply = _history_call(
        address,
        "CompareRuns",
        history_pb2.CompareRunsRequest(run_a=run_a, run_b=run_b, metrics=_metric_list(metrics)),
    )
    table = Table(title=f"A = {run_a} ({reply.a.steps} steps), B = {run_b} ({reply.b.steps})")
    for column in ("metric", "", "A", "B", "B - A", "B / A - 1"):
        table.add_column(column, justify="left" if column in ("metric", "") else "right")
    for sa, sb, d in zip(reply.a.metrics, reply.b.metrics, reply.deltas, strict=True):
        figures = [("avg", sa.avg, sb.avg, d.avg), ("min", sa.min, sb.min, d.min)]
        figures.append(("max", sa.max, sb.max, d.max))
        if d.HasField("energy_mwh"):
            figures.append(("MWh", sa.energy_mwh, sb.energy_mwh, d.energy_mwh))
        for i, (what, a, b, delta) in enumerate(figures):
            rel = f"{b / a - 1:+.2%}" if a else "-"
            name = sa.metric if i == 0 else ""
            table.add_row(name, what, f"{a:.6g}", f"{b:.6g}", f"{delta:+.6g}", rel)
    Console().print(table)


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
