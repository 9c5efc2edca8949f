"""The console as a child process (``twin serve console``): what ``twin up``, the tests
and the benchmark start beside a twin."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from typing import BinaryIO


class ConsoleStartError(RuntimeError):
    """The console did not serve; the message names why and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def new_token() -> str:
    return secrets.token_urlsafe(24)


class ConsoleProcess:
    """``with ConsoleProcess(twin_address, ...) as console: console.url``."""

    def __init__(
        self,
        twin_address: str,
        *,
        history_address: str | None = None,
        instance_id: str | None = None,
        token: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        log_path: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.host, self.port = host, port or free_port(host)
        self.token = token
        self.log_path = log_path
        self.env = {
            **os.environ,
            **(env or {}),
            "TWIN_CONSOLE_ADDRESS": f"{host}:{self.port}",
            "TWIN_CONSOLE_TWIN_ADDRESS": twin_address,
            "TWIN_CONSOLE_HISTORY_ADDRESS": history_address or "",
            "TWIN_CONSOLE_TOKEN": token or "",
            "TWIN_INSTANCE_ID": instance_id or "",
        }
        self.process: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 30.0) -> None:
        if self.log_path:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        command = [sys.executable, "-m", "services.cli", "serve", "console"]
        self.process = subprocess.Popen(
            command, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise ConsoleStartError(
                    f"console exited with status {code} (log: {self.log_path or 'stderr'})"
                )
            if self.health() is not None:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ConsoleStartError(f"console not serving on {self.url} after {timeout_s:g} s")
            time.sleep(0.1)

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=2) as reply:
                return json.loads(reply.read())
        except OSError:
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            with suppress(OSError):
                self._log.close()
            self._log = None

    def __enter__(self) -> ConsoleProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
