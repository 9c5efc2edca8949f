"""grpc_health's ``HealthStub`` with its methods typed: the generated stub sets them in
``__init__`` from an untyped channel, so a type checker sees none of them. The functions
return the real stub; only its static type is narrowed."""

from __future__ import annotations

from typing import Protocol, cast

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse


class AioHealth(Protocol):
    Check: aio.UnaryUnaryMultiCallable[Request, Response]
    Watch: aio.UnaryStreamMultiCallable[Request, Response]


class Health(Protocol):
    Check: grpc.UnaryUnaryMultiCallable[Request, Response]
    Watch: grpc.UnaryStreamMultiCallable[Request, Response]


def aio_stub(channel: aio.Channel) -> AioHealth:
    return cast(AioHealth, health_pb2_grpc.HealthStub(channel))


def stub(channel: grpc.Channel) -> Health:
    return cast(Health, health_pb2_grpc.HealthStub(channel))
