"""Credentials for the bus and for gRPC, built from the ``TWIN_*`` security variables.

Files were checked to be readable PEM when the config was read; what can still fail here
(a key that does not match its certificate, a CA file that is not a certificate) fails at
start-up too, as a ConfigError naming the variable.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import grpc

from services.runtime.config import ENV_PREFIX, ConfigError, RuntimeConfig


def read_pem(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def client_ssl_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, *, prefix: str
) -> ssl.SSLContext:
    """A client context that verifies the server (against ``ca_file``, else the system
    roots) and presents ``cert_file`` when given. ``prefix`` names the variables."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"{prefix}CA_FILE", f"not a CA certificate: {exc.reason}") from exc
    if cert_file is not None and key_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{prefix}CERT_FILE", f"certificate and key do not load: {exc.reason}"
            ) from exc
    return context


def nats_connect_options(config: RuntimeConfig) -> dict[str, Any]:
    """Keywords for nats-py's ``Client.connect``: credentials and the TLS context."""
    options: dict[str, Any] = {}
    if config.nats_user is not None and config.nats_password is not None:
        options["user"] = config.nats_user
        options["password"] = config.nats_password.get_secret_value()
    if config.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(config.nats_nkey_seed_file)
    if config.nats_tls_ca_file is not None or config.nats_tls_cert_file is not None:
        options["tls"] = client_ssl_context(
            config.nats_tls_ca_file,
            config.nats_tls_cert_file,
            config.nats_tls_key_file,
            prefix=f"{ENV_PREFIX}NATS_TLS_",
        )
    return options


def grpc_server_credentials(config: RuntimeConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC server (mutual when a client CA is set), or None for
    plaintext."""
    if config.grpc_tls_cert_file is None or config.grpc_tls_key_file is None:
        return None
    # grpc only reports a key that does not match its certificate at the first handshake
    # (and then only in its own log); ssl says so now.
    try:
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(config.grpc_tls_cert_file, config.grpc_tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{ENV_PREFIX}GRPC_TLS_CERT_FILE", f"certificate and key do not load: {exc.reason}"
        ) from exc
    client_ca = read_pem(config.grpc_tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(config.grpc_tls_key_file.read_bytes(), config.grpc_tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def grpc_channel_credentials(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> grpc.ChannelCredentials:
    """TLS credentials for a gRPC client: trust ``ca_file`` (else the system roots) and
    present ``cert_file`` when given."""
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_file),
        private_key=read_pem(key_file),
        certificate_chain=read_pem(cert_file),
    )
