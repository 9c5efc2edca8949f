"""A local PostgreSQL from the ``pgserver`` wheel, for ``twin up`` and the tests.

The data folder is temporary (removed on close); the server listens on a Unix socket in
it, so a restart after a crash (same folder) gives the same URL and keeps the data.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path


class PostgresError(RuntimeError):
    """The server did not start (again)."""


class LocalPostgres:
    """``with LocalPostgres() as pg: pg.url``; ``running``, ``restart()``, ``log_path``."""

    def __init__(self, start_timeout_s: float = 30.0) -> None:
        self.start_timeout_s = start_timeout_s
        self.data = Path(tempfile.mkdtemp(prefix="twin-pg-"))
        self.log_path = self.data / "log"
        self._server = None
        self.url = ""

    def start(self) -> LocalPostgres:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set, ..."
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import get_server

        self._server = get_server(self.data, cleanup_mode="stop")
        self.url = self._server.get_uri()
        return self

    @property
    def pid(self) -> int | None:
        info = None if self._server is None else self._server._postmaster_info
        return None if info is None else info.pid

    @property
    def running(self) -> bool:
        """The postmaster process exists (a stopped one counts: it may be continued; a
        zombie does not: where nothing reaps orphans, a killed postmaster stays one)."""
        import psutil

        info = None if self._server is None else self._server._postmaster_info
        if info is None or info.process is None:
            return False
        try:
            return info.process.is_running() and info.process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def restart(self) -> None:
        """Start the postmaster again on the same folder (after it died). The backends of
        a killed postmaster hold its shared memory for a moment: retry until they left."""
        assert self._server is not None
        if not self.running:  # pg_ctl would take the pid of a zombie for a live server
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                with self._server._lock:
                    self._server.ensure_postgres_running()
                return
            except Exception as exc:  # pg_ctl failures come as several exception types
                if time.monotonic() > deadline:
                    raise PostgresError(f"PostgreSQL did not start again: {exc}") from exc
                time.sleep(0.5)

    def close(self) -> None:
        try:
            if self._server is not None:
                self._server.cleanup()
        finally:
            shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
