"""How every ``twin`` command reports: ``console`` (stderr) and ``fail`` (one line, exit 2)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and a non-zero exit; never a traceback."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)
