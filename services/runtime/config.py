"""Service configuration from ``TWIN_*`` environment variables.

Plain pydantic rather than pydantic-settings: the mapping from variables to fields is six
lines, and owning it lets every error name the variable the operator actually set
(``TWIN_GRPC_ADDRESS: ...``) instead of a field name they never typed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "TWIN_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")

# A site id becomes a subject token, part of a stream name and of a KV bucket name: the
# intersection of what the three accept (no dots, wildcards, spaces or slashes).
SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message starts with the variable name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class RuntimeConfig(BaseModel):
    """What every service reads at start-up. Services may subclass it to add fields; each
    field ``foo_bar`` is read from ``TWIN_FOO_BAR``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    site: str = Field("fairwater-wi", description="site id: subject token, stream/KV prefix")
    nats_url: str | None = Field(
        None, description="NATS server URL(s), comma separated; None: not configured"
    )
    grpc_address: str = Field("127.0.0.1:0", description="host:port to bind; port 0: any")
    scenario: str | None = Field(None, description="site file (path or name)")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    shutdown_grace_s: float = Field(5.0, ge=0, le=600, description="grace for in-flight RPCs")

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        if not SITE_RE.match(value):
            raise ValueError(
                f"{value!r} is not a site id (lowercase letters, digits, '-' or '_', "
                "starting with a letter or digit, at most 63 characters)"
            )
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for url in (part.strip() for part in value.split(",")):
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in NATS_SCHEMES or not rest:
                raise ValueError(f"{url!r} is not a NATS URL (e.g. nats://127.0.0.1:4222)")
        return value.strip()

    @field_validator("grpc_address")
    @classmethod
    def _grpc_address(cls, value: str) -> str:
        match = _HOST_PORT_RE.match(value.strip())
        if not match or int(match["port"]) > 65535:
            raise ValueError(f"{value!r} is not host:port (e.g. 0.0.0.0:50051 or [::]:0)")
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def nats_servers(self) -> list[str]:
        """The NATS URLs as a list (empty when not configured)."""
        if self.nats_url is None:
            return []
        return [part.strip() for part in self.nats_url.split(",")]

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Read the fields from ``environ`` (default ``os.environ``); keyword overrides win.

        Unknown ``TWIN_*`` variables are ignored: other services own them.
        Raises ConfigError naming the first offending variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in cls.model_fields:
            name = cls.env_name(field)
            if name in env:
                values[field] = env[name]
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "?"
            # Name what the operator set: the variable, or the keyword when overridden.
            from_env = field in cls.model_fields and field not in overrides
            variable = cls.env_name(field) if from_env else field
            problem = error["msg"].removeprefix("Value error, ")
            raise ConfigError(variable, problem) from exc
