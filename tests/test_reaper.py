"""A killed launcher's twin is stopped and removed by its reaper; a clean stop is left be."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psutil
import pytest

from services.runtime import reaper
from services.runtime.reaper import Reaper


def _sleeper(ignore_term: bool = False) -> subprocess.Popen:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(120)"
    process = subprocess.Popen(["python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "up\n"
    return process


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "twin-nats-x"
    (folder / "store").mkdir(parents=True)
    (folder / "store" / "data").write_bytes(b"1234")
    return folder


def test_a_launcher_that_dies_leaves_its_reaper_to_stop_everything_in_order(tmp_path: Path):
    service, server, paused = _sleeper(), _sleeper(), _sleeper()
    paused.send_signal(19)  # SIGSTOP: a paused service stops all the same
    folder = _folder(tmp_path)
    watch = Reaper()
    watch.record([service.pid, paused.pid], [(server.pid, 2)], [str(folder)])
    assert watch._process.stdin is not None
    watch._process.stdin.close()  # what the kernel does when the launcher is killed
    assert watch._process.wait(30) == 0
    assert service.wait(5) == -15 and paused.wait(5) == -15  # SIGTERM
    assert server.wait(5) == -2  # the server's own stop signal (SIGINT: a postmaster's)
    assert not folder.exists() and not watch.path.exists()


def test_a_clean_stop_releases_the_reaper_and_it_touches_nothing(tmp_path: Path):
    service = _sleeper()
    folder = _folder(tmp_path)
    watch = Reaper()
    watch.record([service.pid], [], [str(folder)])
    watch.release()
    assert watch._process.returncode == 0
    assert service.poll() is None and (folder / "store" / "data").read_bytes() == b"1234"
    assert not watch.path.exists()
    service.kill()


def test_a_process_deaf_to_its_signal_is_killed_and_a_reused_pid_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
):
    deaf, other = _sleeper(ignore_term=True), _sleeper()
    monkeypatch.setattr(reaper, "GRACE_S", 0.5)
    started = psutil.Process(other.pid).create_time()
    state = {
        "stages": [[[deaf.pid, 15, psutil.Process(deaf.pid).create_time()]]],
        "folders": [],
    }
    state["stages"].append([[other.pid, 15, started - 1.0]])  # recorded for an earlier process
    begin = time.monotonic()
    reaper.reap(state)
    deaf.wait(5)  # (TimeoutExpired while it runs) killed: it ignores SIGTERM
    assert time.monotonic() - begin < 5  # after the grace period, not the default 15 s
    assert other.poll() is None
    other.kill()
