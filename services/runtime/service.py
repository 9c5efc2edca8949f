"""The lifetime of a service process: config → logging → NATS → gRPC → run → shutdown.

Resources are entered on an ``AsyncExitStack`` and released in reverse: the NATS
connection is entered first, so it is drained last, after the gRPC server has stopped
and the service's own tasks and callbacks have finished with the bus. Shutdown (SIGTERM,
SIGINT, ``request_shutdown()`` or a crashed task) runs:

  health NOT_SERVING → server.stop(grace) → service callbacks, LIFO → nc.drain()
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack, suppress
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.runtime import bus, metrics
from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.grpc_server import GrpcServer
from services.runtime.log import setup_logging
from services.runtime.tls import grpc_server_credentials, nats_connect_options

log = logging.getLogger(__name__)

Setup = Callable[["Service"], Awaitable[None]]
Callback = Callable[[], Awaitable[None]]
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServiceFailed(RuntimeError):
    """A background task of the service crashed; the service shut down because of it."""


async def connect_bus(
    config: RuntimeConfig,
    *,
    name: str,
    on_disconnect: Callback,
    on_reconnect: Callback,
    reconnect_wait_s: float = 1.0,
    max_reconnect_attempts: int = -1,
    connect_timeout_s: float = 2.0,
    connect_deadline_s: float = 30.0,
    inbox_prefix: str | None = None,
) -> NATS:
    """``bus.connect`` with the config's servers, credentials and TLS. ``inbox_prefix``
    (``_INBOX.<identity>``): where replies come; the bus permissions let each identity
    read its own prefix only (services/bus_permissions.py)."""
    options = nats_connect_options(config)
    if inbox_prefix is not None:
        options["inbox_prefix"] = inbox_prefix
    return await bus.connect(
        config.nats_servers or [bus.DEFAULT_NATS_URL],
        name=name,
        on_disconnect=on_disconnect,
        on_reconnect=on_reconnect,
        reconnect_wait_s=reconnect_wait_s,
        max_reconnect_attempts=max_reconnect_attempts,
        connect_timeout_s=connect_timeout_s,
        connect_deadline_s=connect_deadline_s,
        **options,
    )


def _inbox_prefix(service: str) -> str | None:
    """``_INBOX.<service>``: the reply subjects the service's NATS identity may read."""
    return f"_INBOX.{service}" if re.fullmatch(r"[A-Za-z0-9_-]+", service) else None


class Service:
    """One service process. ``async with Service(name, setup) as svc: await svc.wait()``.

    ``setup(svc)`` runs before the gRPC server starts: register servicers with
    ``svc.grpc.add_servicer``, declare JetStream objects with ``svc.js``, start loops
    with ``svc.create_task`` and register cleanup with ``svc.on_shutdown``.
    """

    def __init__(
        self,
        name: str,
        setup: Setup | None = None,
        *,
        config: RuntimeConfig | None = None,
        use_nats: bool = True,
        handle_signals: bool = True,
        announce_s: float = 0.0,
        drain_timeout_s: float = 10.0,
        nats_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.config = config if config is not None else RuntimeConfig.from_env()
        self.grpc = GrpcServer(
            self.config.grpc_address,
            credentials=grpc_server_credentials(self.config),
            health_address=self.config.health_address,
            instance_id=self.config.instance_id,
        )
        self.nc: NATS | None = None
        self.metrics: metrics.MetricsServer | None = None  # TWIN_METRICS_ADDRESS
        self.failure: BaseException | None = None
        self._setup = setup
        self._use_nats = use_nats
        self._handle_signals = handle_signals
        self._announce_s = announce_s  # NOT_SERVING shown this long before the server stops
        self._drain_timeout_s = drain_timeout_s
        self._nats_options = dict(nats_options or {})  # extra connect_bus() keywords
        self._stack = AsyncExitStack()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._signals: list[signal.Signals] = []

    # -- what setup() uses -----------------------------------------------------------

    @property
    def nats(self) -> NATS:
        """The NATS connection, for a setup of a service that uses NATS."""
        if self.nc is None:
            raise RuntimeError(f"{self.name}: no NATS connection (use_nats=False)")
        return self.nc

    @property
    def js(self) -> JetStreamContext:
        return self.nats.jetstream()

    @property
    def port(self) -> int:
        if self.grpc.port is None:
            raise RuntimeError(f"{self.name}: gRPC server not started")
        return self.grpc.port

    @property
    def metrics_port(self) -> int:
        if self.metrics is None:
            raise RuntimeError(f"{self.name}: no metrics server (TWIN_METRICS_ADDRESS)")
        return self.metrics.port

    def add_metrics(self, provider: metrics.Provider) -> None:
        """Export what ``provider`` returns at every scrape, until shutdown."""
        remove = metrics.pulled.add(provider)

        async def removed() -> None:
            remove()

        self.on_shutdown(removed)

    def on_shutdown(self, callback: Callback) -> None:
        """Run ``callback`` at shutdown: after the gRPC server stopped, before the drain
        of NATS; callbacks run in reverse order of registration."""
        self._stack.push_async_callback(callback)

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task:
        """A background task, cancelled at shutdown. If it crashes, the service shuts
        down and ``serve`` raises ServiceFailed: a half-working node is worse than a
        restarted one."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def request_shutdown(self) -> None:
        if not self._stopping.is_set():
            log.info("shutdown requested", extra={"service": self.name})
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait(self) -> None:
        """Until shutdown is requested."""
        await self._stopping.wait()

    # -- lifetime --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        if self._use_nats:
            self.nc = await connect_bus(
                self.config,
                name=f"{self.name}@{self.config.site}",
                on_disconnect=self._bus_down,
                on_reconnect=self._bus_up,
                **{"inbox_prefix": _inbox_prefix(self.name), **self._nats_options},
            )
            self._stack.push_async_callback(self._drain, self.nc)
        self._stack.push_async_callback(self._cancel_tasks)
        if self._setup is not None:
            await self._setup(self)
        ready = self.nc is None or self.nc.is_connected
        if self.config.metrics_address is not None:
            self.metrics = metrics.MetricsServer(self.config.metrics_address)
            self._stack.callback(self.metrics.close)
            log.info("metrics listening", extra={"port": self.metrics.port})
        labels = (self.name, self.config.site, self.config.instance_id or "")
        metrics.service_info.labels(*labels).set(1)
        self._stack.callback(metrics.service_info.remove, *labels)
        await self.grpc.start(serving=ready)
        self._install_signal_handlers()
        log.info(
            "service started",
            extra={"service": self.name, "site": self.config.site, "port": self.grpc.port},
        )

    async def _stop(self) -> None:
        self._stopping.set()
        try:
            await self.grpc.stop(self.config.shutdown_grace_s, announce_s=self._announce_s)
        finally:
            try:
                await self._stack.aclose()
            finally:
                # Only now: a repeated SIGTERM during the drain would otherwise take the
                # default action and end the process between two writes.
                self._remove_signal_handlers()
        log.info("service stopped", extra={"service": self.name})

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, nc: NATS) -> None:
        """Flush what was published and let subscriptions finish, then close."""
        if nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.drain(), self._drain_timeout_s)
            log.info("NATS drained", extra={"service": self.name})
        except Exception as exc:  # a bus that is already gone must not block the exit
            log.warning("NATS drain failed; closing", extra={"error": repr(exc)})
            with suppress(Exception):
                await nc.close()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self.failure is None:
            self.failure = exc
        log.error("background task crashed", extra={"task": task.get_name()}, exc_info=exc)
        self.request_shutdown()

    async def _bus_down(self) -> None:
        for name in self.grpc.services:
            await self.grpc.set_serving(False, name)

    async def _bus_up(self) -> None:
        for name in self.grpc.services:
            await self.grpc.set_serving(True, name)

    def _install_signal_handlers(self) -> None:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # e.g. Windows
                continue
            self._signals.append(sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        while self._signals:
            loop.remove_signal_handler(self._signals.pop())

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.info("signal received while stopping", extra={"signal": sig.name})
            return
        log.info("signal received", extra={"signal": sig.name, "service": self.name})
        self.request_shutdown()


async def serve(
    name: str,
    setup: Setup | None = None,
    *,
    config: RuntimeConfig | None = None,
    on_ready: Callable[[Service], Awaitable[None] | None] | None = None,
    **options: Any,
) -> None:
    """The async main of a service: start, run until SIGTERM/SIGINT (or
    ``request_shutdown()``), shut down gracefully. ``on_ready(svc)`` runs once the
    server listens (tests use it to learn the port). Raises ServiceFailed if a task
    created with ``svc.create_task`` crashed."""
    async with Service(name, setup, config=config, **options) as svc:
        if on_ready is not None and (pending := on_ready(svc)) is not None:
            await pending
        await svc.wait()
    if svc.failure is not None:
        raise ServiceFailed(f"{name}: {svc.failure!r}") from svc.failure


def run(
    name: str,
    setup: Setup | None = None,
    *,
    config_type: type[RuntimeConfig] = RuntimeConfig,
    **options: Any,
) -> int:
    """Sync entry point for ``python -m services.<name>``: config from the environment
    (a bad value: one line naming the variable, exit status 2), logging, ``serve``.
    Returns the process exit status."""
    try:
        config = config_type.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    started = False
    on_ready = options.pop("on_ready", None)

    def ready(svc: Service) -> Awaitable[None] | None:
        nonlocal started
        started = True
        return None if on_ready is None else on_ready(svc)

    try:
        asyncio.run(serve(name, setup, config=config, on_ready=ready, **options))
    except ConfigError as exc:  # found while starting: a certificate that does not load
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ServiceFailed:
        return 1  # already logged with its traceback by the task callback
    except (TimeoutError, OSError) as exc:  # NATS unreachable, port taken; or later
        what = "service failed" if started else "service could not start"
        log.error(what, extra={"service": name, "error": str(exc)})
        return 1
    return 0
