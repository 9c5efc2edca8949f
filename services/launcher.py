"""Start a whole twin on this machine: a local nats-server (unless TWIN_NATS_URL names
one), a local PostgreSQL (unless TWIN_DATABASE_URL names one) and every service as its own
process; supervise them (optional); stop them all cleanly.

Every twin has an instance id (``TWIN_INSTANCE_ID`` for its services): each service
reports it on every gRPC response and refuses calls naming another instance, and
readiness counts only services that report this twin's id, so a second twin on the same
host can never be mistaken for the first.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.interceptors import INSTANCE_KEY
from services.runtime.nats_server import NatsServer, NatsServerError
from services.runtime.postgres import LocalPostgres, PostgresError
from services.runtime.reaper import Reaper
from services.serve import SERVICES

log = logging.getLogger("twin.launcher")

BASE_PORT = 50051  # twin on 50051, then compute, cooling, power, energy
ORDER = ("twin", *[s for s in SERVICES if s != "twin"])  # historian last: 50056


class TwinStartError(RuntimeError):
    """The twin did not start; the message is one line naming what and where its log is."""


class TwinStartTimeout(TwinStartError, TimeoutError):
    """Services were not serving within the ready timeout."""


class PortInUse(TwinStartError, OSError):
    """A port the twin needs is taken (by another twin, or anything else)."""


def _setting(field: str) -> Any:
    """A ``TWIN_*`` setting of the services (an existing NATS or database), read and
    checked here as each service will read it: a bad value stops ``twin up`` first."""
    try:
        return RuntimeConfig.read(field)
    except ConfigError as exc:
        raise TwinStartError(str(exc)) from None


def new_instance_id() -> str:
    return uuid.uuid4().hex[:12]


def default_addresses(host: str = "127.0.0.1", base: int = BASE_PORT) -> dict[str, str]:
    return {name: f"{host}:{base + i}" for i, name in enumerate(ORDER)}


def free_addresses(host: str = "127.0.0.1", names: Sequence[str] = ORDER) -> dict[str, str]:
    """A free loopback port per service name (tests and benchmarks run several twins at
    once), all held open together so that no two names get the same port."""
    sockets = []
    try:
        for _ in names:
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        ports = [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    return {name: f"{host}:{port}" for name, port in zip(names, ports, strict=True)}


def check_ports(addresses: dict[str, str]) -> None:
    """Raise PortInUse naming the first address that cannot be bound now. SO_REUSEADDR as
    gRPC does: a port in TIME_WAIT after a previous twin is free, a listening one is not."""
    for name, address in addresses.items():
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, int(port)))
            except OSError as exc:
                raise PortInUse(
                    f"port {address} ({name}) is in use ({exc.strerror}): another twin may be "
                    "running; use --base-port 0 for free ports"
                ) from None


@dataclass(frozen=True)
class Probe:
    """A health check's answer: the status, and the instance id the service reported."""

    status: str  # SERVING, NOT_SERVING, UNREACHABLE, or OTHER_TWIN (another instance's)
    instance_id: str | None = None


def _reported_instance(metadata: object) -> str | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == INSTANCE_KEY:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


def probe(address: str, timeout_s: float = 1.0, instance_id: str | None = None) -> Probe:
    """grpc.health.v1 of the service at ``address``; with ``instance_id``, a service that
    does not report that instance is OTHER_TWIN (over TLS when the ``TWIN_GRPC_TLS_*``
    client variables say so)."""
    from services.runtime.channels import open_channel

    try:
        with open_channel(address, instance_id=instance_id) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            # The generated stub sets Check in __init__ from an untyped channel: unseen.
            check = stub.Check  # pyright: ignore[reportAttributeAccessIssue]
            reply, call = check.with_call(health_pb2.HealthCheckRequest(), timeout=timeout_s)
    except grpc.RpcError as exc:
        reported = _reported_instance(exc.initial_metadata())  # type: ignore[attr-defined]
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and reported != instance_id:  # type: ignore[attr-defined]
            return Probe("OTHER_TWIN", reported)
        return Probe("UNREACHABLE", reported)
    reported = _reported_instance(call.initial_metadata())
    if instance_id is not None and reported != instance_id:
        return Probe("OTHER_TWIN", reported)
    return Probe(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), reported)


def health(address: str, timeout_s: float = 1.0) -> str:
    """SERVING, NOT_SERVING, or UNREACHABLE for the service at ``address`` (over TLS when
    the ``TWIN_GRPC_TLS_*`` client variables say so)."""
    return probe(address, timeout_s).status


@dataclass
class LocalTwin:
    """The processes of a local twin; ``with LocalTwin(site) as twin: ...``.

    ``supervise``: restart a service, the nats-server or the PostgreSQL this twin started
    when it dies (at most ``max_restarts`` each within ``restart_window_s``); past that,
    stop everything and set ``failure``. ``on_event`` gets one line per start-up progress
    report and per restart (default: the ``twin.launcher`` logger).
    """

    site: str
    addresses: dict[str, str] = field(default_factory=default_addresses)
    nats_url: str | None = None
    database_url: str | None = None
    history: bool = True  # run the historian (a local PostgreSQL unless TWIN_DATABASE_URL)
    env: dict[str, str] = field(default_factory=dict)
    # Per service, on top of ``env``: e.g. each service's own NATS identity.
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Per service, its Prometheus /metrics address (TWIN_METRICS_ADDRESS); absent: none.
    metrics_addresses: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 120.0
    log_path: str | None = None  # the services' log lines go there (default: this stderr)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    instance_id: str = field(default_factory=new_instance_id)
    supervise: bool = False
    max_restarts: int = 5
    restart_window_s: float = 600.0
    nats_log_path: str | None = None  # kept after close when given
    on_event: Callable[[str], None] | None = None
    mqtt: bool = False  # open nats-server's MQTT listener (BMS clients publish there)
    # Optional services (the gateway) spawned after the others, each with an address in
    # ``addresses``; ``before_optional`` runs first (e.g. starts what writes their config).
    optional: tuple[str, ...] = ()
    before_optional: Callable[[LocalTwin], None] | None = None
    failure: str | None = field(default=None, init=False)
    nats: NatsServer | None = field(default=None, init=False)
    postgres: LocalPostgres | None = field(default=None, init=False)
    _log: BinaryIO | None = field(default=None, init=False)
    _stack: ExitStack = field(default_factory=ExitStack)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False)
    _closing: threading.Event = field(default_factory=threading.Event, init=False)
    failed: threading.Event = field(default_factory=threading.Event, init=False)
    _restarts: dict[str, deque] = field(default_factory=dict, init=False)
    _supervisor: threading.Thread | None = field(default=None, init=False)
    # Stops what this twin started if this process dies without stopping it (reaper.py).
    _reaper: Reaper | None = field(default=None, init=False)

    def __enter__(self) -> LocalTwin:
        try:
            metrics = {f"{name} metrics": a for name, a in self.metrics_addresses.items()}
            check_ports({**self.addresses, **metrics})  # before anything starts
            self._reaper = Reaper()
            if self.log_path:
                self._log = self._stack.enter_context(open(self.log_path, "ab"))
            self.nats_url = self.nats_url or _setting("nats_url")
            if not self.nats_url:
                try:
                    self.nats = self._stack.enter_context(
                        NatsServer(log_path=self.nats_log_path, mqtt=self.mqtt)
                    )
                except NatsServerError as exc:
                    raise TwinStartError(f"nats-server did not start: {exc}") from None
                self.nats_url = self.nats.url
                self._record()
            if self.history:
                self.database_url = self.database_url or _setting("database_url")
                if not self.database_url:
                    self.database_url = self._start_postgres()
                    self._record()
            for name in SERVICES:
                if name != "historian" or self.history:
                    self._spawn(name)
            if self.before_optional is not None:
                self.before_optional(self)
            for name in self.optional:
                self._spawn(name)
            self.wait_ready()
            if self.supervise:
                self._supervisor = threading.Thread(
                    target=self._supervise, name="twin-supervisor", daemon=True
                )
                self._supervisor.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def log_location(self) -> str:
        return self.log_path or "stderr"

    def _event(self, line: str) -> None:
        (self.on_event or log.warning)(line)

    def _start_postgres(self) -> str:
        """A local PostgreSQL from the pgserver wheel, deleted when the twin stops."""
        self.postgres = LocalPostgres()
        self._stack.callback(self.postgres.close)  # registered first: removed even on failure
        try:
            self.postgres.start()
        except Exception as exc:
            raise TwinStartError(
                f"PostgreSQL did not start: {exc} (log: {self.postgres.log_path})"
            ) from None
        return self.postgres.url

    def _record(self) -> None:
        """Tell the reaper what runs now (after each start and restart)."""
        if self._reaper is None:
            return
        servers = [(self.nats.pid, signal.SIGTERM)] if self.nats and self.nats.pid else []
        if self.postgres is not None and self.postgres.pid is not None:
            servers.append((self.postgres.pid, signal.SIGINT))  # the postmaster's fast stop
        folders = [str(self.nats.folder)] if self.nats else []
        folders += [str(self.postgres.data)] if self.postgres else []
        services = [process.pid for process in self.processes.values()]
        self._reaper.record(services, servers, folders)

    def _spawn(self, name: str) -> subprocess.Popen:
        """Start service ``name`` (again), as ``processes[name]``."""
        env = {
            **os.environ,
            **self.env,
            **self.service_env.get(name, {}),
            **({"TWIN_METRICS_ADDRESS": m} if (m := self.metrics_addresses.get(name)) else {}),
            "TWIN_SITE": self.site,
            "TWIN_NATS_URL": self.nats_url or "",
            "TWIN_GRPC_ADDRESS": self.addresses[name],
            "TWIN_INSTANCE_ID": self.instance_id,
            **({"TWIN_DATABASE_URL": self.database_url} if self.database_url else {}),
        }
        command = [sys.executable, "-m", "services.cli", "serve", name]
        out = self._log
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        self.processes[name] = process
        self._record()
        return process

    def wait_ready(self) -> None:
        """Until every service reports SERVING for this instance; progress every 5 s. Raises
        TwinStartError (a service exited, or another twin answers on its port) or
        TwinStartTimeout, each one line naming the services and the log."""
        started = time.monotonic()
        deadline = started + self.ready_timeout_s
        shown = started
        waiting = set(self.processes)
        while waiting:
            for name in sorted(waiting):
                code = self.processes[name].poll()
                if code is not None:
                    raise TwinStartError(
                        f"{name} exited with status {code} while starting "
                        f"(log: {self.log_location})"
                    )
                answer = probe(self.addresses[name], instance_id=self.instance_id)
                if answer.status == "OTHER_TWIN":
                    raise TwinStartError(
                        f"{self.addresses[name]} ({name}) is served by another twin "
                        f"(instance {answer.instance_id}), not this one ({self.instance_id})"
                    )
                if answer.status == "SERVING":
                    waiting.discard(name)
            now = time.monotonic()
            if waiting and now > deadline:
                raise TwinStartTimeout(
                    f"not serving after {self.ready_timeout_s:g} s: "
                    f"{', '.join(sorted(waiting))} (log: {self.log_location})"
                )
            if waiting and now - shown >= 5:
                shown = now
                up = sorted(set(self.processes) - waiting)
                self._event(
                    f"starting ({now - started:.0f} s): up {', '.join(up) or 'none'}; "
                    f"waiting for {', '.join(sorted(waiting))}"
                )
            if waiting:
                time.sleep(0.2)

    def restart(self, name: str) -> None:
        """Stop one service (SIGTERM) and start it again, as after a crash or a rollout."""
        with self._lock:
            self._terminate(self.processes[name])
            self._spawn(name)

    # -- supervision ---------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._closing.wait(0.5):
            with self._lock:
                if self._closing.is_set():
                    return
                try:
                    self._check_once()
                except _GiveUp as exc:
                    self.failure = str(exc)
                    self._stop_children()  # the rest (servers, folders) goes at close()
                    self._event(f"error: {exc}")
                    self.failed.set()
                    return

    def _budget(self, what: str, status: int | None, log_at: object) -> str:
        """Count a restart of ``what``; the 'k of N' text, or _GiveUp past the budget."""
        now = time.monotonic()
        times = self._restarts.setdefault(what, deque())
        while times and now - times[0] > self.restart_window_s:
            times.popleft()
        if len(times) >= self.max_restarts:
            how = "" if status is None else f" (exit status {status})"
            raise _GiveUp(
                f"{what} died{how} after {len(times)} restarts within "
                f"{self.restart_window_s:g} s; stopped the twin (log: {log_at})"
            )
        times.append(now)
        return f"restart {len(times)} of {self.max_restarts}"

    def _check_once(self) -> None:
        if self.nats is not None and not self.nats.running:
            count = self._budget("nats-server", self.nats.exit_status, self.nats.log_path)
            self._event(
                f"nats-server died (exit status {self.nats.exit_status}); restarting it on "
                f"port {self.nats.port} with its JetStream store ({count})"
            )
            try:
                self.nats.restart()
                self._record()
            except NatsServerError as exc:
                self._event(f"nats-server did not start again: {exc}")
        if self.postgres is not None and not self.postgres.running:
            count = self._budget("PostgreSQL", None, self.postgres.log_path)
            self._event(f"PostgreSQL died; restarting it on the same data ({count})")
            try:
                self.postgres.restart()
                self._record()
            except PostgresError as exc:
                self._event(str(exc))
        for name, process in list(self.processes.items()):
            code = process.poll()
            if code is not None:
                count = self._budget(name, code, self.log_location)
                self._event(f"{name} exited with status {code}; restarting it ({count})")
                self._spawn(name)

    # -- shutdown ------------------------------------------------------------------

    @staticmethod
    def _terminate(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            _wait_or_kill(process, timeout_s)

    def _stop_children(self, timeout_s: float = 15.0) -> None:
        # One SIGTERM each, all at once so they stop in parallel; a second one would land
        # mid-shutdown (see Service._stop, which keeps its handlers to the end anyway).
        for process in self.processes.values():
            if process.poll() is None:
                with_cont(process)
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for name, process in self.processes.items():
            _wait_or_kill(process, max(0.0, deadline - time.monotonic()))
            if process.returncode != 0:  # SIGTERM is answered with a clean exit 0
                self._event(f"{name} ended with {exit_status(process.returncode)} when stopped")

    def close(self) -> None:
        self._closing.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(30)
        with self._lock:
            try:
                self._stop_children()
                for server in (self.nats, self.postgres):  # a paused server would not stop
                    pid = getattr(server, "pid", None)
                    if pid is not None:
                        with suppress(OSError):
                            os.kill(pid, signal.SIGCONT)
                self._stack.close()
            finally:
                if self._reaper is not None:  # everything is stopped: nothing to reap
                    self._reaper.release()
                    self._reaper = None


class _GiveUp(Exception):
    """The restart budget of a component is spent."""


def _wait_or_kill(process: subprocess.Popen, timeout_s: float) -> None:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def exit_status(returncode: int) -> str:
    """``status 2``, or the signal's name for a process a signal ended (``SIGSEGV``)."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def with_cont(process: subprocess.Popen) -> None:
    """SIGCONT first: a stopped process would not act on SIGTERM until continued."""
    with suppress(OSError):
        process.send_signal(signal.SIGCONT)
