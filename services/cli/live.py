"""The live twin: ``twin up`` (everything started here and a run, supervised; with
``--duration`` the run's history reported at its end), ``twin serve`` (one service) and
``twin status`` (the services' health)."""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from services.cli.errors import console, fail, rpc_failed, seconds
from services.cli.extras import need
from services.cli.history import export_to_file, history_call
from services.cli.tables import clock
from services.runtime.redact import redact


def serve(
    service: Annotated[
        str,
        typer.Argument(help="compute, cooling, power, energy, twin, historian, gateway or console"),
    ],
):
    """Run one service (configured by TWIN_* environment variables)."""
    if service == "gateway":  # no model in it: skip importing JAX
        from services.gateway.service import main as gateway_main

        raise typer.Exit(gateway_main())
    if service == "console":  # the web console: no model in it either
        from services.console.service import main as console_main

        raise typer.Exit(console_main())
    from services.serve import OPTIONAL, SERVICES
    from services.serve import serve as run_service

    if service not in SERVICES + OPTIONAL:
        fail(f"service: {service!r} is not one of {', '.join(SERVICES + OPTIONAL)}")
    raise typer.Exit(run_service(service))


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
    plant: Annotated[
        bool,
        typer.Option(
            help="also run a plant emulator of the site (`twin plant`) and the "
            "gateway reading it: a live twin tracking a plant"
        ),
    ] = False,
    truth: Annotated[Path | None, typer.Option(help="with --plant: the plant's truth file")] = None,
    web: Annotated[
        bool, typer.Option("--console/--no-console", help="serve the web console")
    ] = True,
    console_port: Annotated[
        int, typer.Option(help="the web console's port on 127.0.0.1; 0 = a free port")
    ] = 0,
    prometheus_targets: Annotated[
        Path | None,
        typer.Option(
            help="write the services' /metrics addresses here (Prometheus file_sd JSON) "
            "while the twin is up"
        ),
    ] = None,
) -> None:
    """Start a local twin: nats-server, PostgreSQL, every service, and a run; the twin is
    supervised (a dead service or server is restarted); Ctrl-C stops it all.
    With --duration the run ends by itself: the history of the run is queried, printed
    (and written to --report DIR), and everything stops."""
    import signal as signals
    import tempfile
    import threading

    from services import scrape_targets
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
    if report is not None:
        need("matplotlib", "plot", "--report")  # before the run, not after it
    if duration is not None and paused:
        fail("--paused: not with --duration")
    if speed is None:
        speed = 0.0 if duration is not None else 1.0
    if speed < 0:
        fail("--speed: must be >= 0")
    if truth is not None and not plant:
        fail("--truth: needs --plant")
    if plant and speed == 0:
        fail("--plant: the plant runs in real time: give --speed > 0")
    if plant and os.environ.get("TWIN_NATS_URL"):
        fail("--plant: needs the twin's own nats-server (TWIN_NATS_URL is set)")
    if not 0 <= console_port <= 65535:
        fail(f"--console-port: {console_port} is not 0 or a port from 1 to 65535")
    if prometheus_targets is not None and not prometheus_targets.resolve().parent.is_dir():
        fail(f"--prometheus-targets: {prometheus_targets.resolve().parent} is not a folder")
    if not 0 <= base_port <= 65535 - 5:
        fail(f"--base-port: {base_port} is not 0 or a port from 1 to {65535 - 5}")
    path = Path(scenario)
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
    logs = log_dir or report or Path(tempfile.gettempdir()) / f"twin-{instance}"
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
    emulator = _plant(scenario, logs, truth, step_s, speed, addresses, base_port) if plant else None
    twin = LocalTwin(
        site.name,
        addresses,
        metrics_addresses=free_addresses(names=list(addresses)),  # each its own /metrics
        env=data_env,
        log_path=str(logs / "services.log"),
        nats_log_path=str(logs / "nats-server.log"),
        ready_timeout_s=ready_s,
        instance_id=instance,
        supervise=True,
        **(_plant_options(emulator, ready_s) if emulator else {}),
        on_event=lambda line: (
            None  # the failure itself is the command's last line (below)
            if line.startswith("error: ")
            else console.print(f"  {line}", highlight=False, soft_wrap=True)
        ),
    )
    try:
        twin.__enter__()
    except (TwinStartError, KeyboardInterrupt) as exc:
        if emulator is not None:
            emulator.stop()
        if isinstance(exc, KeyboardInterrupt):
            fail("interrupted while starting; everything stopped")
        fail(f"twin did not start: {exc}")
    stack = ExitStack()  # the web console, stopped before the twin
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
        scrape = ", ".join(f"{name} {a}" for name, a in twin.metrics_addresses.items())
        if prometheus_targets is not None:
            scrape_targets.write(prometheus_targets, twin.metrics_addresses, instance)
            scrape += f" (Prometheus file_sd: {prometheus_targets})"
        if web:
            web_console = _console(twin, console_port, logs)
            stack.callback(web_console.stop)
        if duration is None:
            Console().print(
                f"twin {site.name} up (instance {instance}): run {run_id}\n"
                f"  gRPC: {ports}\n  nats: {redact(twin.nats_url or '')}\n"
                + (f"  console: {web_console.url}#token={web_console.token}\n" if web else "")
                + f"  metrics: {scrape}\n"
                f"  grpcurl -plaintext {address} list\n"
                f"  grpcurl -plaintext {address} twin.twin.v1.TwinService/GetSnapshot\n"
                + (_plant_lines(emulator, site.name, twin.nats_url or "") if emulator else "")
                + "Ctrl-C stops everything.",
                soft_wrap=True,
                highlight=False,
            )
            stop.wait()
        else:
            console.print(f"  gRPC: {ports}\n  metrics: {scrape}", highlight=False, soft_wrap=True)
            if web:
                console.print(f"  console: {web_console.url}", highlight=False, soft_wrap=True)
            console.print(f"twin {site.name}: run {run_id}, {duration} at dt {dt} ({steps} steps)")
            # A paced run may legitimately take a while per step: never stall-fail faster.
            patience = max(stall_s, 3 * step_s / speed) if speed > 0 else stall_s
            if _wait_for_step(address, run_id, steps, stop, patience, instance, twin):
                _history_report(twin.addresses["historian"], run_id, steps, step_s, report, stop)
        if twin.failure:
            fail(twin.failure)
    finally:
        stack.close()
        if prometheus_targets is not None:  # its targets leave Prometheus with the twin
            prometheus_targets.unlink(missing_ok=True)
        if emulator is not None:  # first: it publishes to the twin's nats-server
            emulator.stop()
        twin.close()
    Console().print("stopped")


def _console(twin, port: int, logs: Path):
    """The web console over this twin's gRPC APIs, its operator token from
    TWIN_CONSOLE_TOKEN or new (printed in the console's URL, after the '#': the browser
    keeps it, no server logs it)."""
    from services.console.process import ConsoleProcess, ConsoleStartError, new_token

    console_process = ConsoleProcess(
        twin.addresses["twin"],
        history_address=twin.addresses.get("historian"),
        instance_id=twin.instance_id,
        token=os.environ.get("TWIN_CONSOLE_TOKEN") or new_token(),
        port=port,
        log_path=str(logs / "console.log"),
    )
    try:
        console_process.start()
    except ConsoleStartError as exc:
        fail(f"console did not start: {exc}")
    return console_process


def _plant(scenario: str, logs: Path, truth: Path | None, dt_s: float, speed: float,
           addresses: dict[str, str], base_port: int):  # fmt: skip
    """The plant emulator of ``twin up --plant`` (started once nats-server is up), and a
    gRPC address for the gateway that reads it (after the other services')."""
    import socket

    from services.plant.process import PlantProcess

    if base_port == 0:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            addresses["gateway"] = f"127.0.0.1:{sock.getsockname()[1]}"
    else:
        addresses["gateway"] = f"127.0.0.1:{base_port + len(addresses)}"
    return PlantProcess(scenario, logs, truth, dt_s, speed)


def _plant_options(emulator, ready_s: float) -> dict:
    """LocalTwin's settings for a plant: nats-server's MQTT listener, the plant started
    before the gateway, and the gateway configured with the plant's point map."""
    from services.launcher import TwinStartError
    from services.plant.process import PlantStartError

    def start(twin) -> None:
        try:
            emulator.start(twin.nats.mqtt_port, ready_s)
        except PlantStartError as exc:
            raise TwinStartError(str(exc)) from None

    return {
        "mqtt": True,
        "optional": ("gateway",),
        "before_optional": start,
        "service_env": {"gateway": emulator.gateway_env()},
    }


def _plant_lines(emulator, site: str, nats_url: str) -> str:
    return (
        f"  plant: point map {emulator.pointmap}, truth {emulator.truth_record}, "
        f"log {emulator.log}\n"
        f"  TWIN_NATS_URL={redact(nats_url)} twin gateway stats --site {site}\n"
    )


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
        reply = history_call(address, "CompareRuns", compare)
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
    rows = list(history_call(address, "Query", request).rows)
    hourly = [
        SimpleNamespace(
            time_s=r.time_s,
            values=[r.values[0] / 1e6, r.values[1] / 1e6, r.values[0] / r.values[1]],
        )
        for r in rows
    ]
    whole = history_call(
        address,
        "CompareRuns",
        history_pb2.CompareRunsRequest(run_a=run_id, run_b=run_id, metrics=metrics[:2]),
    ).a.metrics
    hours = steps * dt_s / 3600
    table = Table(title=f"run {run_id}: {hours:g} h simulated, hourly (from the History API)")
    for column in ("hour", "facility (MW)", "IT (MW)", "PUE"):
        table.add_column(column, justify="right")
    for r in hourly:
        table.add_row(clock(r.time_s), *(f"{v:.4f}" if i == 2 else f"{v:,.2f}"
                                          for i, v in enumerate(r.values)))  # fmt: skip
    facility_mwh, it_mwh = whole[0].energy_mwh, whole[1].energy_mwh
    table.add_row(
        "run", f"{facility_mwh:,.1f} MWh", f"{it_mwh:,.1f} MWh", f"{facility_mwh / it_mwh:.4f}"
    )
    Console().print(table)
    if out is not None:
        from services.cli.history_plots import report_png  # matplotlib: only when asked

        csv_path = out / "history.csv"
        export_to_file(
            address,
            history_pb2.ExportRequest(run_id=run_id, format=history_pb2.EXPORT_FORMAT_CSV),
            csv_path,
        )
        # The run at up to ~600 points (bucket averages), with the hourly values over it.
        bucket = max(1, math.ceil(steps / 600)) * dt_s
        fine = history_call(
            address,
            "Query",
            history_pb2.QueryRequest(
                run_id=run_id, metrics=metrics[:2], bucket_s=bucket, page_size=10_000
            ),
        ).rows
        png = out / "hourly.png"
        report_png(png, fine, hourly, f"run {run_id}: {hours:g} h simulated")
        Console().print(f"wrote {csv_path}, {png}")


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
