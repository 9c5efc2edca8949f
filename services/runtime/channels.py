"""gRPC client channels, secure or plaintext as the ``TWIN_GRPC_TLS_*`` client variables say.

Every client of the twin's services (the CLI, health checks, test pods) opens its channel
here, so that turning TLS on for the servers is one set of variables for the clients too:

  TWIN_GRPC_TLS_CA_FILE           use TLS, trust this CA
  TWIN_GRPC_TLS_CLIENT_CERT_FILE  present this certificate (mutual TLS), with ..._KEY_FILE
  TWIN_GRPC_TLS_CLIENT_KEY_FILE
  TWIN_GRPC_TLS_SERVER_NAME       the name to verify instead of the target's host
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import grpc
from grpc import aio
from pydantic import Field, field_validator, model_validator

from services.runtime.config import EnvConfig, blank_to_none, readable_file
from services.runtime.tls import grpc_channel_credentials


class GrpcClientConfig(EnvConfig):
    """The client side of gRPC TLS; each field ``foo`` is read from ``TWIN_FOO``."""

    grpc_tls_ca_file: Path | None = Field(None, description="use TLS, trust this CA")
    grpc_tls_client_cert_file: Path | None = Field(None, description="client certificate")
    grpc_tls_client_key_file: Path | None = Field(None, description="key of the client cert")
    grpc_tls_server_name: str | None = Field(None, description="name to verify, not the host")

    @field_validator(
        "grpc_tls_ca_file", "grpc_tls_client_cert_file", "grpc_tls_client_key_file", mode="before"
    )
    @classmethod
    def _file(cls, value: Any) -> Path | None:
        return readable_file(value, pem=True)

    @field_validator("grpc_tls_server_name", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return blank_to_none(value)

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


def open_channel(
    address: str,
    environ: Mapping[str, str] | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A sync channel to ``address``: TLS when ``TWIN_GRPC_TLS_CA_FILE`` or a client
    certificate is set in ``environ`` (default ``os.environ``), plaintext otherwise.
    Raises ConfigError naming the variable."""
    config = GrpcClientConfig.from_env(environ)
    all_options = [*config.channel_options(), *options]
    if (credentials := config.credentials()) is None:
        return grpc.insecure_channel(address, options=all_options)
    return grpc.secure_channel(address, credentials, options=all_options)


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
