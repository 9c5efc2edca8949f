"""The runtime shared by every service: configuration, logging, the bus (NATS, JetStream,
KV), protobuf codecs, the gRPC server bootstrap and the service lifetime.

Modules, one responsibility each:
  config        RuntimeConfig from TWIN_* variables; errors name the variable
  log           one-line logging setup; request id in every line
  nats_server   a local nats-server with JetStream (tests, ``twin up``)
  bus           connect with reconnect, subjects, idempotent stream/consumer/KV, fetch
  codec         encode; decode that skips and counts garbled payloads
  interceptors  gRPC request-id and access-log interceptors
  grpc_server   grpc.aio server with health and reflection
  service       Service / serve / run: AsyncExitStack lifetime, graceful SIGTERM
"""

from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.grpc_server import GrpcServer
from services.runtime.log import setup_logging
from services.runtime.service import Service, ServiceFailed, run, serve

__all__ = [
    "ConfigError",
    "GrpcServer",
    "RuntimeConfig",
    "Service",
    "ServiceFailed",
    "run",
    "serve",
    "setup_logging",
]
