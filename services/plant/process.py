"""``twin plant`` as a child process of ``twin up --plant``: started once the twin's
nats-server (with its MQTT listener) is up, ready when its point map is written."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.plant.pointmap import PASSWORD_ENV


class PlantStartError(RuntimeError):
    """The plant did not start; one line naming its log."""


@dataclass
class PlantProcess:
    scenario: str
    folder: Path  # point map, truth record and log go here
    truth: Path | None = None
    dt_s: float = 1.0
    speed: float = 1.0
    poll_s: float = 5.0
    # The Redfish password the plant and the gateway share (the gateway reads it from
    # PASSWORD_ENV; it is never written to the point map).
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    process: subprocess.Popen | None = None

    @property
    def pointmap(self) -> Path:
        return self.folder / "plant-pointmap.yaml"

    @property
    def truth_record(self) -> Path:
        return self.folder / "plant-truth.json"

    @property
    def log(self) -> Path:
        return self.folder / "plant.log"

    def gateway_env(self) -> dict[str, str]:
        return {"TWIN_POINT_MAP": str(self.pointmap), PASSWORD_ENV: self.password}

    def start(self, mqtt_port: int, timeout_s: float = 120.0) -> None:
        self.pointmap.unlink(missing_ok=True)
        command = [
            sys.executable, "-m", "services.cli", "plant", self.scenario,
            "--dt", f"{self.dt_s:g}s", "--speed", f"{self.speed:g}",
            "--mqtt", f"127.0.0.1:{mqtt_port}", "--poll", f"{self.poll_s:g}s",
            "--pointmap-out", str(self.pointmap), "--truth-out", str(self.truth_record),
        ]  # fmt: skip
        if self.truth is not None:
            command += ["--truth", str(self.truth)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, PASSWORD_ENV: self.password},
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not self.pointmap.exists():
            code = self.process.poll()
            if code is not None:
                last = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                raise PlantStartError(
                    f"the plant exited with status {code}: {''.join(last)} (log: {self.log})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PlantStartError(f"the plant was not serving after {timeout_s:g} s "
                                      f"(log: {self.log})")  # fmt: skip
            time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
