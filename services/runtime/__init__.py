"""The runtime shared by every service: configuration, logging, the bus (NATS, JetStream,
KV), protobuf codecs, the gRPC server bootstrap and the service lifetime.

Modules, one responsibility each:
  config        RuntimeConfig from TWIN_* variables; errors name the variable
  log           one-line logging setup; request id in every line
  nats_server   a local nats-server with JetStream (tests, ``twin up``)
  postgres      a local PostgreSQL from the pgserver wheel (tests, ``twin up``)
  reaper        stops a local twin whose launcher was killed outright
  bus           connect with reconnect, subjects, idempotent stream/consumer/KV, fetch
  codec         encode; decode that skips and counts garbled payloads
  interceptors  gRPC request-id and access-log interceptors
  grpc_server   grpc.aio server with health and reflection
  service       Service / serve / run: AsyncExitStack lifetime, graceful SIGTERM
  compilation_cache  JAX's persistent compilation cache (TWIN_COMPILATION_CACHE_DIR)
  xla_threads   one XLA CPU thread for processes of small steps (PJRT_NPROC)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it. Loaded on first use: a light module of the
# package (``redact``, ``config``) does not bring NATS, aiohttp and gRPC into a command
# that never talks to them (``twin simulate``).
_EXPORTS: dict[str, str] = {
    "ConfigError": "services.runtime.config",
    "RuntimeConfig": "services.runtime.config",
    "GrpcServer": "services.runtime.grpc_server",
    "setup_logging": "services.runtime.log",
    "Service": "services.runtime.service",
    "ServiceFailed": "services.runtime.service",
    "run": "services.runtime.service",
    "serve": "services.runtime.service",
}

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

if TYPE_CHECKING:
    from services.runtime.config import ConfigError, RuntimeConfig
    from services.runtime.grpc_server import GrpcServer
    from services.runtime.log import setup_logging
    from services.runtime.service import Service, ServiceFailed, run, serve


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'services.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
