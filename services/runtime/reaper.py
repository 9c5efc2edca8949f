"""What a local twin leaves behind when its launcher is killed, stopped and removed.

``twin up`` (any ``LocalTwin``) starts nats-server, PostgreSQL and six services and stops
them when it ends. Killed outright (SIGKILL, the kernel's out-of-memory killer) it cannot:
they would go on holding ports, memory and their temporary folders, and the next
``twin up`` would fail on a taken port. So each launcher starts this small process
beside it:

- Its standard input is a pipe whose write end only the launcher holds. The kernel closes
  that end when the launcher ends, however it ends, and this process reads end-of-file.
- A launcher that stops its twin itself writes ``done`` first; this process then exits
  and touches nothing.
- Otherwise it stops what the launcher last recorded in a JSON file (rewritten whenever
  it starts a process): the services first (SIGTERM: they drain their NATS connections),
  then the servers (nats-server SIGTERM, the PostgreSQL postmaster SIGINT: its fast
  shutdown), SIGKILL for anything left after a grace period, then the folders.
- Each process is recorded with its start time, so a pid the system has since given to
  another process is left alone.

It runs in its own session, so a Ctrl-C meant for the launcher does not reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

DONE = b"done\n"
GRACE_S = 15.0  # per stage, as LocalTwin's own stop


class Reaper:
    """The launcher's side: ``record`` after each start, ``release`` after a clean stop."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="twin-reaper-", suffix=".json")
        os.close(fd)
        self.path = Path(name)
        self.record([], [], [])
        self._process = subprocess.Popen(
            [sys.executable, "-m", "services.runtime.reaper", str(self.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def record(
        self, services: Sequence[int], servers: Sequence[tuple[int, int]], folders: Sequence[str]
    ) -> None:
        """What to stop if the launcher dies: service pids, (server pid, the signal that
        stops it) and the folders to remove."""
        stages = [[(pid, signal.SIGTERM) for pid in services], servers]
        entries = [[_identity(pid, sig) for pid, sig in stage] for stage in stages]
        state = {"stages": [[e for e in stage if e] for stage in entries], "folders": list(folders)}
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(state))
        partial.replace(self.path)  # whole or not at all: the reaper may read it any time

    def release(self) -> None:
        """The twin is stopped: the reaper exits without touching anything."""
        stdin = self._process.stdin
        assert stdin is not None
        with contextlib.suppress(OSError):  # a reaper already gone has nothing to do
            stdin.write(DONE)
            stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(10)
        self.path.unlink(missing_ok=True)


def _identity(pid: int, sig: int) -> list[float] | None:
    """[pid, signal, start time] of a live process; None when it is gone already."""
    try:
        return [pid, int(sig), psutil.Process(pid).create_time()]
    except psutil.Error:
        return None


def _live(entry: list[float]) -> psutil.Process | None:
    pid, _, started = entry
    try:
        process = psutil.Process(int(pid))
        return process if process.create_time() == started else None  # else: a reused pid
    except psutil.Error:
        return None


def reap(state: dict) -> None:
    """Stop each stage's processes (waiting up to ``GRACE_S``), kill what is left, then
    remove the folders."""
    for stage in state["stages"]:
        processes = []
        for entry in stage:
            if (process := _live(entry)) is not None:
                with contextlib.suppress(psutil.Error):
                    process.resume()  # a paused process would not act on the signal
                    process.send_signal(int(entry[1]))
                    processes.append(process)
        alive = _wait_gone(processes, GRACE_S)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        _wait_gone(alive, GRACE_S)
    for folder in state["folders"]:
        shutil.rmtree(folder, ignore_errors=True)


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``timeout_s``. An exited process
    that its parent has not reaped yet (a zombie) counts as gone: it holds nothing."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(path: str) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end counts
    released = sys.stdin.buffer.read() == DONE  # blocks until the launcher ends
    state_file = Path(path)
    if not released:
        with contextlib.suppress(OSError, ValueError):
            reap(json.loads(state_file.read_text()))
    state_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
