"""Printing helpers shared by the commands: tables printed whole, simulated clock times."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_whole(table: Table) -> None:
    """Print ``table`` at least as wide as its content needs: on a narrow terminal the
    lines run on rather than ids being cut or the other columns squeezed to nothing."""
    out = Console()
    needed = out.measure(table).maximum
    (Console(width=needed) if needed > out.width else out).print(table, crop=False)


def clock(seconds: float) -> str:
    """Simulated time as ``[Nd ]HH:MM:SS[.fff]``."""
    days, rest = divmod(seconds, 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    text = f"{int(h):02d}:{int(m):02d}:{s:06.3f}".rstrip("0").rstrip(".")
    return f"{int(days)}d {text}" if days else text
