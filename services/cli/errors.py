"""How every ``twin`` command reports: ``console`` (stderr) and ``fail`` (one line, exit 2)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.text import Text

console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    # Plain text: a message echoing input such as ``[oops`` is not markup.
    line = Text.assemble(("error:", "bold red"), " ", message)
    console.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def seconds(option: str, text: str | None, allow_zero: bool = False) -> float | None:
    """A duration option in seconds (None when not given); a bad one fails naming it."""
    from twin_core.durations import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text, allow_zero=allow_zero)
    except ValueError as exc:
        fail(f"{option}: {exc}")
