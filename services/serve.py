"""Process entry points: ``twin serve compute|cooling|power|energy|twin``."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

from services.runtime import bus, compilation_cache, metrics, run, xla_threads
from services.runtime.config import ConfigError, RuntimeConfig
from twin_core.contract import DOMAINS

if TYPE_CHECKING:
    from services.runtime.service import Service

# The model's modules (JAX) are imported by the setups that run it: the historian never
# loads them, and six processes starting on a small machine share its cores.

SERVICES = (*DOMAINS, "twin", "historian")
# Served on request, not by LocalTwin: the field gateway needs a point map; the web
# console (HTTP, no gRPC) is started by `twin up` beside the others.
OPTIONAL = ("gateway", "console")
# The services that compile the model (the twin: what-if studies); not the historian.
MODEL_SERVICES = (*DOMAINS, "twin")


def one_xla_thread_for_domains(name: str) -> None:
    """A domain's step is one small compiled call a tick: on one XLA thread
    (xla_threads.py). The twin service keeps the default: its what-if batches use every
    core."""
    if name in DOMAINS:
        xla_threads.use_one_thread()


def domain_setup(domain: str):
    async def setup(svc: Service) -> None:
        import jax.numpy as jnp

        from services.domain_service import add_to_server
        from services.node import CoSimNode

        # TWIN_X64=1 runs the model in float64 (checks against the monolithic rollout).
        dtype = jnp.float64 if svc.config.x64 else jnp.float32
        node = CoSimNode(svc.nats, svc.config.site, domain, dtype, js=svc.js)
        await node.start()
        svc.create_task(node.run())
        add_to_server(domain, svc.grpc, node)

    return setup


async def twin_setup(svc: Service) -> None:
    from services.clock import Clock
    from services.twin_service import TwinServicer
    from twin.twin.v1 import twin_pb2_grpc

    await bus.declare_all(svc.js, svc.config.site)
    kv = await bus.declare_run_bucket(svc.js, svc.config.site)
    clock = Clock(svc.nats, svc.config.site, kv, svc.config.run_stall_timeout_s)
    await clock.start()
    # Deviation detection: readings against the model, events on twin.<site>.events.
    from services.monitor.residuals import MonitorConfig, parse_noise
    from services.monitor.service import MonitorNode

    config = MonitorConfig(noise=parse_noise(svc.config.monitor_noise))  # TWIN_MONITOR_NOISE
    monitor = MonitorNode(svc.nats, svc.config.site, lambda: clock.run_id, config)
    await monitor.start()
    clock.deviations = monitor.monitor.open_deviations
    # Prometheus reads the snapshot GetSnapshot returns, at each scrape.
    svc.add_metrics(lambda: metrics.snapshot_samples(clock.snapshot(), clock.limits))
    svc.add_metrics(lambda: [(metrics.MONITOR_EVENTS, {"site": clock.site_id}, monitor.published)])
    svc.grpc.add_servicer(twin_pb2_grpc.add_TwinServiceServicer_to_server, TwinServicer(clock))
    # What-if studies run on this process's JAX; stored in history when a database is set.
    from services import whatif_service
    from services.whatif_store import StudyStore

    default_site = None
    if svc.config.scenario:  # TWIN_SCENARIO: what studies that name no scenario run on
        from services.scenario import site_by_name_or_file
        from twin_core.site import SiteError

        try:
            default_site = site_by_name_or_file(svc.config.scenario, "TWIN_SCENARIO")
        except SiteError as exc:
            raise ConfigError("TWIN_SCENARIO", str(exc)) from None
    store = StudyStore(svc.config.database_url)
    whatif = whatif_service.add_to_server(svc.grpc, store, default_site)
    # Calibrations on the same JAX, one model at a time with the studies.
    from services import calibration_service
    from services.calibration_store import CalibrationStore

    calibrations = CalibrationStore(svc.config.database_url)
    calibration_service.add_to_server(svc.grpc, calibrations, default_site, whatif.lock)
    if url := svc.config.database_url:
        # The History API here too, so one address (e.g. a Kubernetes Service) reaches the
        # clock, what-if and history; it only reads, the historian owns the schema.
        from services.historian import history_service

        history_service.add_to_server(svc.grpc, url)
    svc.on_shutdown(clock.stop)


async def historian_setup(svc: Service) -> None:
    from services.historian import history_service
    from services.historian.measurements import MeasurementConfig, MeasurementWriter
    from services.historian.migrate import migrate
    from services.historian.writer import HistorianWriter, WriterConfig

    url = svc.config.database_url
    if not url:
        raise ConfigError("TWIN_DATABASE_URL", "required by the historian")
    await asyncio.to_thread(migrate, url)  # idempotent: applies only what is pending
    await bus.declare_stream(svc.js, svc.config.site)
    config = WriterConfig(site=svc.config.site, database_url=url)
    writer = HistorianWriter(svc.js, config)
    svc.create_task(writer.run())
    # The site's telemetry -> measurements, on its own durable consumer.
    measured = MeasurementConfig(site=svc.config.site, database_url=url)
    measurements = MeasurementWriter(svc.js, measured)
    svc.create_task(measurements.run())
    stats = {"states": writer.stats, "measurements": measurements.stats}
    svc.add_metrics(lambda: metrics.historian_samples(stats, time.time()))
    history_service.add_to_server(svc.grpc, url)  # the History API (twin history ...)


SETUPS = {"twin": twin_setup, "historian": historian_setup}


def serve(name: str) -> int:
    if name not in SERVICES + OPTIONAL:
        raise ValueError(f"service: {name!r} is not one of {', '.join(SERVICES + OPTIONAL)}")
    if name == "gateway":  # field telemetry: its own config (TWIN_POINT_MAP), no JAX
        from services.gateway.service import main

        return main()
    if name == "console":  # HTTP over the twin's gRPC APIs, no JAX
        from services.console.service import main as console_main

        return console_main()
    one_xla_thread_for_domains(name)  # before JAX's CPU client starts
    try:  # before any array exists; read alone, as the whole config is read only in run()
        x64 = RuntimeConfig.read("x64")
    except ConfigError:
        x64 = False  # run() reports the variable and exits 2
    if x64:
        import jax

        jax.config.update("jax_enable_x64", True)
    try:  # before anything is compiled: the model's services load it from there when warm
        if name in MODEL_SERVICES:
            compilation_cache.enable(RuntimeConfig.read("compilation_cache_dir"))
    except ConfigError as exc:  # an asked-for folder that cannot be used, as run() says it
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(name, SETUPS.get(name) or domain_setup(name))
