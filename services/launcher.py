"""Start a whole twin on this machine: a local nats-server (unless TWIN_NATS_URL names
one) and every service as its own process; stop them all cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.nats_server import NatsServer
from services.serve import SERVICES

BASE_PORT = 50051  # twin on 50051, then compute, cooling, power, energy


def default_addresses(host: str = "127.0.0.1", base: int = BASE_PORT) -> dict[str, str]:
    order = ("twin", *[s for s in SERVICES if s != "twin"])  # historian last: 50056
    return {name: f"{host}:{base + i}" for i, name in enumerate(order)}


def free_addresses(host: str = "127.0.0.1") -> dict[str, str]:
    """A free loopback port per service (tests and benchmarks run several twins at once)."""
    sockets = []
    try:
        for _ in SERVICES:
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        ports = [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    order = ("twin", *[s for s in SERVICES if s != "twin"])
    return {name: f"{host}:{port}" for name, port in zip(order, ports, strict=True)}


def health(address: str, timeout_s: float = 1.0) -> str:
    """SERVING, NOT_SERVING, or UNREACHABLE for the service at ``address`` (over TLS when
    the ``TWIN_GRPC_TLS_*`` client variables say so)."""
    from services.runtime.channels import open_channel

    try:
        with open_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
    except grpc.RpcError:
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@dataclass
class LocalTwin:
    """The processes of a local twin; ``with LocalTwin(site) as twin: ...``."""

    site: str
    addresses: dict[str, str] = field(default_factory=default_addresses)
    nats_url: str | None = None
    database_url: str | None = None
    history: bool = True  # run the historian (a local PostgreSQL unless TWIN_DATABASE_URL)
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 60.0
    log_path: str | None = None  # the services' log lines go there (default: this stderr)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _log: BinaryIO | None = field(default=None, init=False)
    _stack: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> LocalTwin:
        try:
            self.nats_url = self.nats_url or os.environ.get("TWIN_NATS_URL")
            if not self.nats_url:
                self.nats_url = self._stack.enter_context(NatsServer()).url
            if self.history:
                self.database_url = self.database_url or os.environ.get("TWIN_DATABASE_URL")
                if not self.database_url:
                    self.database_url = self._start_postgres()
            if self.log_path:
                self._log = self._stack.enter_context(open(self.log_path, "ab"))
            for name in SERVICES:
                if name != "historian" or self.history:
                    self.processes[name] = self._spawn(name)
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_postgres(self) -> str:
        """A local PostgreSQL from the pgserver wheel, deleted when the twin stops."""
        import tempfile

        import pgserver

        data = self._stack.enter_context(tempfile.TemporaryDirectory(prefix="twin-pg-"))
        server = pgserver.get_server(data, cleanup_mode="stop")
        self._stack.callback(server.cleanup)
        return server.get_uri()

    def _spawn(self, name: str) -> subprocess.Popen:
        env = {
            **os.environ,
            **self.env,
            "TWIN_SITE": self.site,
            "TWIN_NATS_URL": self.nats_url or "",
            "TWIN_GRPC_ADDRESS": self.addresses[name],
            **({"TWIN_DATABASE_URL": self.database_url} if self.database_url else {}),
        }
        command = [sys.executable, "-m", "services.cli", "serve", name]
        out = self._log
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        waiting = set(self.processes)
        while waiting:
            for name in list(waiting):
                code = self.processes[name].poll()
                if code is not None:
                    raise RuntimeError(f"service {name} exited with status {code} at start-up")
                if health(self.addresses[name]) == "SERVING":
                    waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                raise TimeoutError(f"services not serving in time: {', '.join(sorted(waiting))}")
            time.sleep(0.2)

    def restart(self, name: str) -> None:
        """Stop one service (SIGTERM) and start it again, as after a crash or a rollout."""
        self._terminate(self.processes[name])
        self.processes[name] = self._spawn(name)

    @staticmethod
    def _terminate(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            self._terminate(process)
        self._stack.close()
