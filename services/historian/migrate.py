"""Apply the numbered SQL migrations in services/historian/migrations (see its README.md).

`migrate(conninfo)` creates the `timescaledb` extension when the server offers it, then
applies every pending version in order and records it in `schema_migrations`; running it
again applies nothing. It then checks the tables against the quantities contract
(``schema.schema_problems``) and fails naming the first column the contract needs.

Only simple statements in autocommit mode with explicit
BEGIN/COMMIT and parameterized queries are used (no COPY, no pipelines), so it also works
through the PGlite socket server used by the tests for TimescaleDB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import LiteralString, cast

import psycopg

from services.historian.schema import schema_problems

MIGRATIONS = Path(__file__).with_name("migrations")
NO_TRANSACTION = "-- migrate: no-transaction"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(timescale|plain))?\.sql$")
_LOCK_KEY = 0x7477696E  # "twin": one migrator at a time per database


class MigrationError(RuntimeError):
    """A migration failed; the message names the file and the statement."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path | None  # None: this version has nothing to run on this backend

    @property
    def label(self) -> str:
        return self.path.name if self.path else f"{self.version:04d}_{self.name} (no-op)"


def discover(directory: Path, backend: str) -> list[Migration]:
    """The migrations for `backend` ('timescale' or 'plain'), by version. For each version
    the file without a backend suffix is used, else the one for `backend`; a version that
    exists only for the other backend is a no-op here (still recorded)."""
    by_version: dict[int, dict[str | None, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path.name}: not a migration file name (NNNN_name[.variant].sql)"
            )
        version, name, variant = int(match[1]), match[2], match[3]
        if names.setdefault(version, name) != name:
            raise MigrationError(f"{path.name}: version {version:04d} has two names")
        by_version.setdefault(version, {})[variant] = path
    migrations = []
    for version in sorted(by_version):
        files = by_version[version]
        if None in files and len(files) > 1:
            raise MigrationError(f"version {version:04d}: both a common and a variant file")
        path = files.get(None) or files.get(backend)
        migrations.append(Migration(version, names[version], path))
    return migrations


def split_statements(sql: str) -> list[str]:
    """Split a SQL script on top-level semicolons, respecting quotes, dollar quotes and
    comments. Comment-only pieces are dropped."""
    statements: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == c:
                    if sql.startswith(c * 2, end):  # doubled quote: escaped
                        end += 2
                        continue
                    break
                end += 1
            i = end + 1
        elif c == "$" and (tag := re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])):
            end = sql.find(tag[0], i + len(tag[0]))
            i = n if end < 0 else end + len(tag[0])
        elif c == ";":
            statements.append(sql[start:i])
            i += 1
            start = i
        else:
            i += 1
    statements.append(sql[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(piece: str) -> bool:
    no_comments = re.sub(r"/\*.*?\*/", "", piece, flags=re.S)
    return any(
        line.strip() and not line.strip().startswith("--") for line in no_comments.splitlines()
    )


def _short(statement: str, limit: int = 160) -> str:
    flat = " ".join(line.split("--")[0].strip() for line in statement.splitlines()).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _ensure_timescale(conn: psycopg.Connection) -> bool:
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = %s", ("timescaledb",)
    ).fetchone()
    if available:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        except psycopg.Error as exc:
            raise MigrationError(
                f"the timescaledb extension is available but cannot be created: {_one_line(exc)}"
            ) from exc
    installed = conn.execute(
        "SELECT 1 FROM pg_extension WHERE extname = %s", ("timescaledb",)
    ).fetchone()
    return installed is not None


def _run_statement(conn: psycopg.Connection, migration: Migration, statement: str) -> None:
    try:
        # The SQL of the migration files shipped with the code, never of a request: trusted
        # as a literal query.
        conn.execute(cast(LiteralString, statement))
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(
            f"migration {migration.label} failed at statement {_short(statement)!r}: {message}"
        ) from exc


def migrate(conninfo: str, directory: Path = MIGRATIONS) -> list[int]:
    """Apply the pending migrations; returns the versions applied (empty when none were)."""
    try:
        # No server-side prepared statements: the PGlite socket server shares one session
        # between connections, so psycopg's automatic "_pg3_N" names would collide.
        conn = psycopg.connect(conninfo, autocommit=True, prepare_threshold=None)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot connect to the database: {_one_line(exc)}") from exc
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, directory)
        finally:
            if not conn.closed and conn.info.transaction_status.name == "IDLE":
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection, directory: Path) -> list[int]:
    backend = "timescale" if _ensure_timescale(conn) else "plain"
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY,"
        " name text NOT NULL,"
        " backend text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = conn.execute("SELECT version, backend FROM schema_migrations").fetchall()
    applied = {version for version, _ in rows}
    others = {b for _, b in rows if b != backend}
    if others:
        raise MigrationError(
            f"the database was migrated for {sorted(others)[0]} but this server is {backend}"
        )
    done: list[int] = []
    for migration in discover(directory, backend):
        if migration.version in applied:
            continue
        sql = migration.path.read_text() if migration.path else ""
        statements = split_statements(sql)
        record = (
            "INSERT INTO schema_migrations (version, name, backend) VALUES (%s, %s, %s)",
            (migration.version, migration.name, backend),
        )
        if sql.lstrip().startswith(NO_TRANSACTION):
            # Each statement autocommits (policies, anything refused inside a transaction);
            # the statements are written to be safe to repeat should one fail midway.
            for statement in statements:
                _run_statement(conn, migration, statement)
            conn.execute(*record)
        else:
            conn.execute("BEGIN")
            try:
                for statement in statements:
                    _run_statement(conn, migration, statement)
                conn.execute(*record)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        done.append(migration.version)
    # The tables must hold every quantity the contract stores, or the historian's writes
    # would fail at the first batch: say which column is missing now.
    problems = schema_problems(conn)
    if problems:
        raise MigrationError(
            problems[0] + (f" (and {len(problems) - 1} more)" if problems[1:] else "")
        )
    return done
