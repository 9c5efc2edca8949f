"""``twin db``: the history database's schema."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.errors import console, fail

db_app = typer.Typer(help="The history database.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(
    url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL/TimescaleDB conninfo or URL", envvar="TWIN_DATABASE_URL"),
    ] = None,
) -> None:
    """Apply the pending schema migrations (TimescaleDB features when the extension is
    available, plain PostgreSQL tables otherwise)."""
    from services.historian.migrate import MigrationError, migrate

    if not url:
        fail("no database: pass --url or set TWIN_DATABASE_URL")
    try:
        applied = migrate(url)
    except MigrationError as exc:
        fail(str(exc))
    if applied:
        console.print(f"applied migrations {', '.join(f'{v:04d}' for v in applied)}")
    else:
        console.print("schema is up to date")
