"""``grpc.aio`` server bootstrap: servicers, health, reflection, interceptors, binding.

Health follows the gRPC convention: the empty service name ("") is the process as a whole
(a liveness probe), each registered service name is that service being able to serve (a
readiness probe; the service runtime turns it NOT_SERVING while the bus is away). On
shutdown every name reports NOT_SERVING before the server stops accepting calls, so load
balancers and probes see the drain before connections are refused.

With TLS credentials the main port speaks TLS only (mutual TLS when they require client
certificates). ``health_address`` adds a plaintext port that serves grpc.health.v1 and
nothing else, from the same health servicer: kubelet gRPC probes cannot speak TLS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.runtime.interceptors import default_interceptors

log = logging.getLogger(__name__)

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE = reflection.SERVICE_NAME
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

S = TypeVar("S")


class _RecordingServer:
    """Stands in for the server while a generated ``add_XServicer_to_server`` runs, to
    learn the full service name it registers (needed for health and reflection)."""

    def __init__(self, server: aio.Server) -> None:
        self._server = server
        self.names: list[str] = []

    # Generated code of grpcio >= 1.63 registers each service through both methods below:
    # record a name once, or reflection lists every service twice.
    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        handlers = tuple(handlers)
        for handler in handlers:
            if callable(name := getattr(handler, "service_name", None)):
                self._record(cast(str, name()))  # grpc.ServiceRpcHandler.service_name
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        self._record(service_name)
        # grpc.aio.Server has it (grpcio >= 1.63); typeshed's grpcio stubs do not.
        self._server.add_registered_method_handlers(  # pyright: ignore[reportAttributeAccessIssue]
            service_name, handlers
        )

    def _record(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._server, attr)


class GrpcServer:
    """A ``grpc.aio`` server with health, reflection and the runtime interceptors.

    Add servicers, then ``await start()`` (returns the bound port), then ``await stop()``.
    ``credentials``: TLS on the main port (None: plaintext). ``health_address``: also
    serve health alone, in plaintext, there (``health_port`` once started).
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        *,
        interceptors: Sequence[aio.ServerInterceptor] | None = None,
        options: Sequence[tuple[str, Any]] = (),
        reflection_enabled: bool = True,
        credentials: grpc.ServerCredentials | None = None,
        health_address: str | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.address = address
        self.instance_id = instance_id
        self.credentials = credentials
        self.health_address = health_address
        self.health_port: int | None = None
        self._health_server: aio.Server | None = None
        self.server = aio.server(
            interceptors=list(
                default_interceptors(instance_id) if interceptors is None else interceptors
            ),
            # No SO_REUSEPORT: a second process on a taken port must fail, not share it.
            options=[("grpc.so_reuseport", 0), *options],
        )
        self.health = HealthServicer()
        self.reflection_enabled = reflection_enabled
        self.services: list[str] = []  # application services, in registration order
        self.port: int | None = None
        self._stopped = False

    def add_servicer(
        self, add_to_server: Callable[[S, Any], None], servicer: S, *, name: str | None = None
    ) -> list[str]:
        """Register ``servicer`` with its generated ``add_XServicer_to_server``; returns the
        service name(s) it registered (learned from the registration, or ``name``)."""
        if self.port is not None:
            raise RuntimeError("add servicers before start()")
        recorder = _RecordingServer(self.server)
        add_to_server(servicer, recorder)
        names = [name] if name else recorder.names
        if not names:
            raise ValueError(f"could not learn the service name of {servicer!r}; pass name=")
        self.services += [n for n in names if n not in self.services]
        return names

    async def start(self, serving: bool = True) -> int:
        """Add health and reflection, bind, start; return the port actually bound."""
        if self.port is not None:
            return self.port
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        exposed = [*self.services, HEALTH_SERVICE]
        if self.reflection_enabled:
            exposed.append(REFLECTION_SERVICE)
            reflection.enable_server_reflection(exposed, self.server)
        port = _bind(self.server, self.address, self.credentials)
        if self.health_address is not None:
            # No interceptors: probes every few seconds would flood the access log.
            self._health_server = aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = _bind(self._health_server, self.health_address, None, "health")
        await self.set_serving(serving)
        await self.health.set(HEALTH_SERVICE, SERVING)
        await self.server.start()
        if self._health_server is not None:
            await self._health_server.start()
            log.info(
                "gRPC health listening (plaintext)",
                extra={"address": self.health_address, "port": self.health_port},
            )
        self.port = port
        log.info(
            "gRPC server listening",
            extra={"address": self.address, "port": port, "tls": self.credentials is not None},
        )
        return port

    async def set_serving(self, serving: bool, service: str | None = None) -> None:
        """Report SERVING/NOT_SERVING for one service, or for all of them and "" when
        ``service`` is None. Ignored once shutdown has begun."""
        status = SERVING if serving else NOT_SERVING
        for name in ["", *self.services] if service is None else [service]:
            await self.health.set(name, status)

    async def stop(self, grace_s: float = 5.0, *, announce_s: float = 0.0) -> None:
        """NOT_SERVING everywhere (permanently), then let in-flight calls finish for up to
        ``grace_s`` while refusing new ones, then cancel what is left.

        ``announce_s``: keep answering (health checks included) that long after turning
        NOT_SERVING, so that polling probes and load balancers see it before the port
        closes; watchers (Health.Watch) see it at once either way.
        """
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        if announce_s > 0 and self.port is not None:
            await asyncio.sleep(announce_s)
        log.info("gRPC server stopping", extra={"grace_s": grace_s})
        await self.server.stop(grace_s)
        if self._health_server is not None:  # last: probes see NOT_SERVING through the grace
            await self._health_server.stop(0)
        log.info("gRPC server stopped")


def _bind(
    server: aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    what: str = "server",
) -> int:
    """Add a (secure) port; the port bound, or OSError."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpc raises RuntimeError when the bind fails
        raise OSError(f"cannot bind gRPC {what} to {address}: {exc}") from exc
    if not port:
        raise OSError(f"cannot bind gRPC {what} to {address}")
    return port
