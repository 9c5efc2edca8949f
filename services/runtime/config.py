"""Service configuration from ``TWIN_*`` environment variables.

Plain pydantic rather than pydantic-settings: the mapping from variables to fields is six
lines, and owning it lets every error name the variable the operator actually set
(``TWIN_GRPC_ADDRESS: ...``) instead of a field name they never typed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.runtime.redact import redact

ENV_PREFIX = "TWIN_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")

# A site id becomes a subject token, part of a stream name and of a KV bucket name: the
# intersection of what the three accept (no dots, wildcards, spaces or slashes).
SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# A twin instance id travels in gRPC metadata and in error messages: short and plain.
INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message starts with the variable name."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def blank_to_none(value: Any) -> Any:
    """An empty variable means unset: Helm templates render absent values as ""."""
    return None if isinstance(value, str) and not value.strip() else value


def readable_file(value: Any, *, pem: bool = False) -> Path | None:
    """The path of a file that exists and is readable now, not at the first handshake:
    a missing secret mount fails the start-up, not the first connection an hour later."""
    if (value := blank_to_none(value)) is None:
        return None
    path = Path(str(value).strip())
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"{str(path)!r} is not a readable file")
    if pem and b"-----BEGIN " not in path.read_bytes():
        raise ValueError(f"{str(path)!r} holds no PEM data")
    return path


def host_port(value: str) -> str:
    match = _HOST_PORT_RE.match(value.strip())
    if not match or int(match["port"]) > 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 0.0.0.0:50051 or [::]:0)")
    return value.strip()


def check_instance_id(value: str) -> str:
    value = value.strip()
    if not INSTANCE_RE.match(value):
        raise ValueError(
            f"{value[:80]!r} is not an instance id (letters, digits, '.', '_' or '-', "
            "at most 64 characters)"
        )
    return value


class EnvConfig(BaseModel):
    """A model whose field ``foo_bar`` is read from ``TWIN_FOO_BAR`` by ``from_env``, with
    every error (field or cross-field) reported as a ConfigError naming the variable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def env_name(cls, field: str) -> str:
        return ENV_PREFIX + field.upper()

    @classmethod
    def invalid(cls, field: str, problem: str) -> PydanticCustomError:
        """A cross-field error for a model validator: ``from_env`` names ``field``'s variable
        (a model-level error has no location of its own)."""
        return PydanticCustomError("config", "{problem}", {"field": field, "problem": problem})

    def require_both(self, first: str, second: str) -> None:
        """Both fields set, or neither: the error names the one that is missing."""
        a, b = getattr(self, first) is not None, getattr(self, second) is not None
        if a != b:
            missing, present = (second, first) if a else (first, second)
            raise self.invalid(missing, f"required when {self.env_name(present)} is set")

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
            ctx = error.get("ctx") or {}
            field = str(error["loc"][0]) if error["loc"] else str(ctx.get("field", "?"))
            # Name what the operator set: the variable, or the keyword when overridden.
            from_env = field in cls.model_fields and field not in overrides
            variable = cls.env_name(field) if from_env else field
            problem = error["msg"].removeprefix("Value error, ")
            raise ConfigError(variable, problem) from exc

    @classmethod
    def read(cls, field: str, environ: Mapping[str, str] | None = None) -> Any:
        """One field from ``environ`` (default ``os.environ``), checked as ``from_env``
        checks it, the others left at their defaults: for code that needs one setting
        where the environment is not a service's to validate whole (the launcher, site
        loading in the CLI). Not for fields that need another (``nats_user``).
        Raises ConfigError naming the variable."""
        env = os.environ if environ is None else environ
        name = cls.env_name(field)
        return getattr(cls.from_env({name: env[name]} if name in env else {}), field)


PEM_FILES = (
    "nats_tls_ca_file",
    "nats_tls_cert_file",
    "nats_tls_key_file",
    "grpc_tls_cert_file",
    "grpc_tls_key_file",
    "grpc_tls_client_ca_file",
)


class RuntimeConfig(EnvConfig):
    """What every service reads at start-up. Services may subclass it to add fields; each
    field ``foo_bar`` is read from ``TWIN_FOO_BAR``."""

    site: str = Field(
        default="fairwater-wi", description="site id: subject token, stream/KV prefix"
    )
    nats_url: str | None = Field(
        default=None, description="NATS server URL(s), comma separated; None: not configured"
    )
    grpc_address: str = Field(default="127.0.0.1:0", description="host:port to bind; port 0: any")
    scenario: str | None = Field(default=None, description="site file (path or name)")
    data_dir: Path | None = Field(
        default=None,
        description="folder of weather/series files client sites may name (+ scenarios/)",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    shutdown_grace_s: float = Field(
        default=5.0, ge=0, le=600, description="grace for in-flight RPCs"
    )
    # NATS security: user/password or an nkey, optionally over (mutual) TLS.
    nats_user: str | None = Field(default=None, description="NATS user (with nats_password)")
    nats_password: SecretStr | None = Field(
        default=None, description="NATS password (with nats_user)"
    )
    nats_nkey_seed_file: Path | None = Field(
        default=None, description="user nkey seed file (SU...)"
    )
    nats_tls_ca_file: Path | None = Field(
        default=None, description="CA to verify NATS; implies TLS"
    )
    nats_tls_cert_file: Path | None = Field(
        default=None, description="client cert for NATS mutual TLS"
    )
    nats_tls_key_file: Path | None = Field(default=None, description="key of nats_tls_cert_file")
    # gRPC server TLS; a client CA makes it mutual.
    grpc_tls_cert_file: Path | None = Field(default=None, description="server cert; set: TLS only")
    grpc_tls_key_file: Path | None = Field(default=None, description="key of grpc_tls_cert_file")
    grpc_tls_client_ca_file: Path | None = Field(
        default=None, description="set: clients must present a certificate signed by this CA"
    )
    health_address: str | None = Field(
        default=None, description="host:port for plaintext grpc.health.v1 only (kubelet probes)"
    )
    metrics_address: str | None = Field(
        default=None,
        description="host:port for Prometheus /metrics (plain HTTP); None: no endpoint",
    )
    instance_id: str | None = Field(
        default=None,
        description="the twin instance this service belongs to (set by `twin up`): reported "
        "in the gRPC metadata of every response; calls naming another instance are refused",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB conninfo or URL: the historian's (required), "
        "the twin's History API and stored studies; None: no database",
    )
    x64: bool = Field(
        default=False,
        description="run the model in float64 (checks against the monolithic rollout)",
    )
    compilation_cache_dir: str | None = Field(
        default=None,
        description="JAX's persistent compilation cache: a folder, or off; None: "
        "$XDG_CACHE_HOME/ai-factory-twin/jax (services/runtime/compilation_cache.py)",
    )
    run_stall_timeout_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="seconds a run may make no progress before it fails; None: the clock's "
        "default (300 s)",
    )
    monitor_noise: str | None = Field(
        default=None,
        description="the residual monitor's noise, one sigma per quantity "
        "(supply_temperature_c=0.05,rack_power_w=300); None: estimated from the readings",
    )

    @field_validator("monitor_noise")
    @classmethod
    def _noise(cls, value: str | None) -> str | None:
        from services.monitor.residuals import parse_noise

        parse_noise(value)  # a ValueError naming the quantity
        return value

    @field_validator(
        "nats_user",
        "nats_password",
        "health_address",
        "metrics_address",
        "instance_id",
        "database_url",
        "compilation_cache_dir",
        "run_stall_timeout_s",
        "monitor_noise",
        mode="before",
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return blank_to_none(value)

    @field_validator("x64", mode="before")
    @classmethod
    def _x64(cls, value: Any) -> Any:
        return False if blank_to_none(value) is None else value

    @field_validator(*PEM_FILES, mode="before")
    @classmethod
    def _pem_file(cls, value: Any) -> Path | None:
        return readable_file(value, pem=True)

    @field_validator("nats_nkey_seed_file", mode="before")
    @classmethod
    def _nkey_seed(cls, value: Any) -> Path | None:
        # Checked here: nats-py would only fail at connect, with a less telling error.
        path = readable_file(value)
        if path is not None and not path.read_bytes().strip().startswith(b"SU"):
            raise ValueError(f"{str(path)!r} holds no user nkey seed (SU...)")
        return path

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: Any) -> Path | None:
        if (value := blank_to_none(value)) is None:
            return None
        path = Path(str(value).strip())
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} is not a folder")
        return path

    @field_validator("health_address", "metrics_address")
    @classmethod
    def _health_address(cls, value: str | None) -> str | None:
        return None if value is None else host_port(value)

    @model_validator(mode="after")
    def _security(self) -> Self:
        self.require_both("nats_user", "nats_password")
        if self.nats_nkey_seed_file is not None and self.nats_user is not None:
            raise self.invalid(
                "nats_nkey_seed_file",
                f"cannot be combined with {self.env_name('nats_user')}/"
                f"{self.env_name('nats_password')}",
            )
        self.require_both("nats_tls_cert_file", "nats_tls_key_file")
        self.require_both("grpc_tls_cert_file", "grpc_tls_key_file")
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise self.invalid(
                "grpc_tls_client_ca_file",
                f"requires {self.env_name('grpc_tls_cert_file')} and "
                f"{self.env_name('grpc_tls_key_file')} (mutual TLS is TLS first)",
            )
        taken = {"grpc_address": self.grpc_address}
        for field in ("health_address", "metrics_address"):
            address = getattr(self, field)
            if address is None or address.endswith(":0"):  # port 0: a free one each
                continue
            for other, used in taken.items():
                if address == used:
                    raise self.invalid(field, f"must differ from {self.env_name(other)}")
            taken[field] = address
        return self

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, value: str | None) -> str | None:
        return None if value is None else check_instance_id(value)

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
                shown = redact(url)
                raise ValueError(f"{shown!r} is not a NATS URL (e.g. nats://127.0.0.1:4222)")
        return value.strip()

    @field_validator("grpc_address")
    @classmethod
    def _grpc_address(cls, value: str) -> str:
        return host_port(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level

    def __repr_args__(self) -> Any:
        # The URLs may carry a password (nats://user:password@host): never in a repr.
        for name, value in super().__repr_args__():
            secret = name in ("nats_url", "database_url") and value
            yield name, redact(value) if secret else value

    @property
    def nats_servers(self) -> list[str]:
        """The NATS URLs as a list (empty when not configured)."""
        if self.nats_url is None:
            return []
        return [part.strip() for part in self.nats_url.split(",")]
