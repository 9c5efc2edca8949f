"""grpcio's own generated stubs (health, reflection) with their methods typed: each stub
sets its methods in ``__init__`` from an untyped channel, so a type checker sees none of
them. These functions return the real stub; only its static type is narrowed."""

from __future__ import annotations

from typing import Protocol, cast

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

HealthRequest = health_pb2.HealthCheckRequest
HealthResponse = health_pb2.HealthCheckResponse


class AioHealth(Protocol):
    Check: aio.UnaryUnaryMultiCallable[HealthRequest, HealthResponse]
    Watch: aio.UnaryStreamMultiCallable[HealthRequest, HealthResponse]


class Health(Protocol):
    Check: grpc.UnaryUnaryMultiCallable[HealthRequest, HealthResponse]
    Watch: grpc.UnaryStreamMultiCallable[HealthRequest, HealthResponse]


class Reflection(Protocol):
    ServerReflectionInfo: grpc.StreamStreamMultiCallable[
        reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    ]


def aio_health(channel: aio.Channel) -> AioHealth:
    return cast(AioHealth, health_pb2_grpc.HealthStub(channel))


def health(channel: grpc.Channel) -> Health:
    return cast(Health, health_pb2_grpc.HealthStub(channel))


def reflection(channel: grpc.Channel) -> Reflection:
    return cast(Reflection, reflection_pb2_grpc.ServerReflectionStub(channel))
