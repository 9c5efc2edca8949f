"""The CLI's gRPC channels: ``open_channel`` with its configuration errors (a bad
``TWIN_GRPC_TLS_*`` variable) turned into one ``error:`` line instead of a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from services.cli.errors import fail


@contextmanager
def client_channel(address: str, instance_id: str | None = None) -> Iterator[grpc.Channel]:
    """Every call names ``instance_id`` (default ``TWIN_INSTANCE_ID``) when one is given:
    a service of another twin refuses it."""
    from services.runtime.channels import open_channel
    from services.runtime.config import ConfigError

    try:
        channel = open_channel(address, instance_id=instance_id)
    except ConfigError as exc:
        fail(str(exc))
    with channel:
        yield channel
