"""The console's settings, from ``TWIN_CONSOLE_*`` (and ``TWIN_INSTANCE_ID``) variables."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from services.runtime.config import EnvConfig, blank_to_none, check_instance_id, host_port


class ConsoleConfig(EnvConfig):
    """Each field ``foo`` is read from ``TWIN_FOO``."""

    console_address: str = Field(
        default="127.0.0.1:8080", description="host:port the console's HTTP server binds"
    )
    console_twin_address: str = Field(
        default="127.0.0.1:50051",
        description="the twin service's gRPC address (TwinService, WhatIfService)",
    )
    console_history_address: str | None = Field(
        default=None,
        description="the History API's gRPC address; None: the twin service's (it serves "
        "the History API when it has a database)",
    )
    console_token: SecretStr | None = Field(
        default=None,
        description="bearer token of operators (run control, what-if studies); None: the "
        "console is read-only",
    )
    instance_id: str | None = Field(
        default=None, description="the twin instance every gRPC call names"
    )

    @field_validator("console_address", "console_twin_address", "console_history_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else host_port(value)

    @field_validator("console_history_address", "console_token", "instance_id", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return blank_to_none(value)

    @field_validator("console_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (a guessable token is no lock)")
        return value

    @field_validator("instance_id")
    @classmethod
    def _instance(cls, value: str | None) -> str | None:
        return None if value is None else check_instance_id(value)

    @property
    def history_address(self) -> str:
        return self.console_history_address or self.console_twin_address

    @property
    def host(self) -> str:
        return self.console_address.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.console_address.rpartition(":")[2])
