"""gRPC client channels, secure or plaintext as the ``TWIN_GRPC_TLS_*`` client variables say.

Every client of the twin's services (the CLI, health checks, test pods) opens its channel
here, so that turning TLS on for the servers is one set of variables for the clients too:

  TWIN_GRPC_TLS_CA_FILE           use TLS, trust this CA
  TWIN_GRPC_TLS_CLIENT_CERT_FILE  present this certificate (mutual TLS), with ..._KEY_FILE
  TWIN_GRPC_TLS_CLIENT_KEY_FILE
  TWIN_GRPC_TLS_SERVER_NAME       the name to verify instead of the target's host
  TWIN_INSTANCE_ID                name this twin instance on every call: a service of
                                  another twin refuses it (FAILED_PRECONDITION)
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import grpc
from grpc import aio
from pydantic import Field, field_validator, model_validator

from services.runtime.config import EnvConfig, blank_to_none, check_instance_id, readable_file
from services.runtime.interceptors import INSTANCE_KEY
from services.runtime.tls import grpc_channel_credentials


class GrpcClientConfig(EnvConfig):
    """The client side of gRPC TLS; each field ``foo`` is read from ``TWIN_FOO``."""

    grpc_tls_ca_file: Path | None = Field(None, description="use TLS, trust this CA")
    grpc_tls_client_cert_file: Path | None = Field(None, description="client certificate")
    grpc_tls_client_key_file: Path | None = Field(None, description="key of the client cert")
    grpc_tls_server_name: str | None = Field(None, description="name to verify, not the host")
    instance_id: str | None = Field(None, description="the twin instance every call names")

    @field_validator(
        "grpc_tls_ca_file", "grpc_tls_client_cert_file", "grpc_tls_client_key_file", mode="before"
    )
    @classmethod
    def _file(cls, value: Any) -> Path | None:
        return readable_file(value, pem=True)

    @field_validator("grpc_tls_server_name", "instance_id", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return blank_to_none(value)

    @field_validator("instance_id")
    @classmethod
    def _instance(cls, value: str | None) -> str | None:
        return None if value is None else check_instance_id(value)

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        self.require_both("grpc_tls_client_cert_file", "grpc_tls_client_key_file")
        if self.grpc_tls_server_name is not None and not self.tls:
            raise self.invalid(
                "grpc_tls_server_name",
                f"applies to TLS only: set {self.env_name('grpc_tls_ca_file')}",
            )
        return self

    @property
    def tls(self) -> bool:
        return self.grpc_tls_ca_file is not None or self.grpc_tls_client_cert_file is not None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls:
            return None
        return grpc_channel_credentials(
            self.grpc_tls_ca_file, self.grpc_tls_client_cert_file, self.grpc_tls_client_key_file
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.grpc_tls_server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.grpc_tls_server_name)]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _NameInstance(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``x-twin-instance`` to every call's metadata."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id

    def _details(self, d: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(d.metadata or ()), (INSTANCE_KEY, self.instance_id)]
        return _CallDetails(
            d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def open_channel(
    address: str,
    environ: Mapping[str, str] | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    instance_id: str | None = None,
) -> grpc.Channel:
    """A sync channel to ``address``: TLS when ``TWIN_GRPC_TLS_CA_FILE`` or a client
    certificate is set in ``environ`` (default ``os.environ``), plaintext otherwise.
    Every call names ``instance_id`` (default ``TWIN_INSTANCE_ID``) when one is given.
    Raises ConfigError naming the variable."""
    config = GrpcClientConfig.from_env(environ)
    all_options = [*config.channel_options(), *options]
    if (credentials := config.credentials()) is None:
        channel = grpc.insecure_channel(address, options=all_options)
    else:
        channel = grpc.secure_channel(address, credentials, options=all_options)
    if instance := instance_id or config.instance_id:
        return grpc.intercept_channel(channel, _NameInstance(instance))
    return channel


def open_aio_channel(
    address: str,
    environ: Mapping[str, str] | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> aio.Channel:
    """``open_channel`` for ``grpc.aio``."""
    config = GrpcClientConfig.from_env(environ)
    all_options = [*config.channel_options(), *options]
    if (credentials := config.credentials()) is None:
        return aio.insecure_channel(address, options=all_options)
    return aio.secure_channel(address, credentials, options=all_options)
