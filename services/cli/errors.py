"""How every ``twin`` command reports: ``console`` (stderr), ``fail`` (one line, exit 2) and
``rpc_failed`` (a gRPC error as one line; no twin listening said plainly)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, overload

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:  # imported where a call failed: commands that make no call skip gRPC
    import grpc

console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    # Plain text: a message echoing input such as ``[oops`` is not markup.
    line = Text.assemble(("error:", "bold red"), " ", message)
    console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def rpc_failed(what: str, address: str, exc: grpc.RpcError) -> NoReturn:
    """``no twin at ADDRESS: <reason> (is `twin up` running?)`` when nothing answers there
    (not gRPC's transport text), else ``WHAT: details (CODE)``."""
    import grpc

    code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and "connect" in details.lower():
        # "failed to connect to all addresses; last error: UNKNOWN: ipv4:...: Failed to
        # connect to remote host: Connection refused" -> "connection refused"
        reason = details.rsplit(": ", 1)[-1].strip().rstrip(".").lower() or "unreachable"
        fail(f"no twin at {address}: {reason} (is `twin up` running?)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and not details.strip():
        details = "no answer in time"
    fail(f"{what}: {details} ({code.name})")


@overload
def seconds(option: str, text: str, allow_zero: bool = False) -> float: ...
@overload
def seconds(option: str, text: str | None, allow_zero: bool = False) -> float | None: ...


def seconds(option: str, text: str | None, allow_zero: bool = False) -> float | None:
    """A duration option in seconds (None when not given); a bad one fails naming it."""
    from twin_core.durations import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text, allow_zero=allow_zero)
    except ValueError as exc:
        fail(f"{option}: {exc}")
