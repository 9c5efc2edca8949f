"""The plant as a whole: the true model and its sensors, stepped at ``speed`` x real time,
served by the DCGM, Redfish and Modbus servers and published by the BMS client.

    plant = Plant(base_site, truth, "truth.yaml", PlantOptions(mqtt_port=1883))
    await plant.start()          # binds the servers (free ports by default), first step
    plant.pointmap_text()        # the gateway's point map for these ports
    await plant.run(stop)        # paced steps until ``stop`` is set
    await plant.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from services.plant import dcgm, redfish
from services.plant.bms import BmsPublisher
from services.plant.modbus import ModbusDevice
from services.plant.pointmap import Endpoints, render
from services.plant.sensors import Sensors
from services.plant.snapshot import Board, Snapshot
from services.plant.truth import TruePlant, warm_up
from services.plant.truthfile import Truth, get_path, resolve_truth
from twin_core.site import Site

log = logging.getLogger(__name__)


@dataclass
class PlantOptions:
    dt: float = 1.0  # simulated seconds per step
    speed: float = 1.0  # real-time factor
    host: str = "127.0.0.1"  # every server binds here
    dcgm_port: int = 0  # 0: a free port
    redfish_port: int = 0
    modbus_port: int = 0
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int | None = None  # None: no BMS publishing
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    bms_transport: str = "nats"  # what the point map tells the gateway (nats | mqtt)
    redfish_user: str = "twin-monitor"
    redfish_password: str = "plant"  # a demo plant's; the point map names only its variable
    redfish_tls: bool = False  # a self-signed certificate, written to tls_dir
    tls_dir: Path | None = None
    dcgm_fields: tuple[str, ...] = dcgm.MAPPED_FIELDS  # of dcgm.FIELDS
    dcgm_interval_s: float = 5.0  # what the point map asks of the gateway
    redfish_interval_s: float = 5.0
    modbus_interval_s: float = 1.0


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bound(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


class Plant:
    def __init__(
        self, base: Site, truth: Truth, truth_name: str, options: PlantOptions | None = None
    ) -> None:
        self.base, self.truth, self.options = base, truth, options or PlantOptions()
        self.site = resolve_truth(truth, base, truth_name)
        self.model = TruePlant(self.site, truth, self.options.dt, truth_name)
        self.sensors = Sensors(truth, self.model.layout, truth_name)
        rack_type = self.site.halls[0].rack_type
        self.board = Board(self.model.layout, f"NVIDIA {rack_type.split('_')[0]}")
        rt = self.site.rack_types[rack_type]
        self._idle_w, self._tdp_w = rt.gpu_idle_w, rt.gpu_tdp_w
        self.redfish = redfish.RedfishService(
            self.board, self.options.redfish_user, self.options.redfish_password
        )
        self.modbus: ModbusDevice | None = None
        self.bms: BmsPublisher | None = None
        self.ports: dict[str, int] = {}
        self.ca_file: str | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ stepping

    def step_once(self) -> Snapshot:
        """Advance the true model one interval and read its sensors (no servers needed)."""
        true = self.model.advance()
        t = self.model.time_s
        measured = self.sensors.read(true, t)
        span = max(self._tdp_w - self._idle_w, 1e-9)
        util = np.clip((true["gpu_power_w"] - self._idle_w) / span, 0.0, 1.0)
        snap = Snapshot(
            step=self.model.step, time_s=t, wall_s=time.time(), true=true, measured=measured,
            gpu_energy_mj=self.model.energy_mj.copy(), gpu_util=util,
        )  # fmt: skip
        self.board.snapshot = snap
        return snap

    async def run(self, stop: asyncio.Event, steps: int | None = None) -> None:
        """Step every ``dt / speed`` wall seconds until ``stop`` (or ``steps`` steps)."""
        period = self.options.dt / self.options.speed
        start, done = time.monotonic(), 0
        while not stop.is_set() and (steps is None or done < steps):
            snap = await asyncio.to_thread(self.step_once)
            done += 1
            if self.bms is not None:
                await self.bms.publish(snap)
            delay = start + done * period - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    # ------------------------------------------------------------------ servers

    async def start(self) -> None:
        """Compile, take the first step, bind the servers and connect the BMS client."""
        o = self.options
        await asyncio.to_thread(warm_up, self.model)
        await asyncio.to_thread(self.step_once)
        ssl_context = None
        if o.redfish_tls:
            from services.plant.tls import self_signed

            ssl_context, self.ca_file = self_signed(o.tls_dir, o.host)
        for name, application, port, ssl in (
            ("dcgm", dcgm.app(self.board, o.dcgm_fields), o.dcgm_port, None),
            ("redfish", redfish.app(self.redfish), o.redfish_port, ssl_context),
        ):
            runner = web.AppRunner(application, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            sock = _bound(o.host, port)
            self.ports[name] = sock.getsockname()[1]
            await web.SockSite(runner, sock, ssl_context=ssl).start()
        self.ports["modbus"] = o.modbus_port or _free_port(o.host)
        self.modbus = ModbusDevice(self.board, o.host, self.ports["modbus"])
        self._tasks.append(asyncio.create_task(self.modbus.server.serve_forever()))
        if o.mqtt_port is not None:
            self.bms = BmsPublisher(
                self.board, o.mqtt_host, o.mqtt_port, o.mqtt_username, o.mqtt_password
            )
            await self.bms.connect()
        await self._wait_modbus()

    async def _wait_modbus(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                _, writer = await asyncio.open_connection(self.options.host, self.ports["modbus"])
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.bms is not None:
            await self.bms.close()
        if self.modbus is not None:
            try:
                await asyncio.wait_for(self.modbus.server.shutdown(), 5)
            except TimeoutError:
                log.warning("Modbus server did not stop in time")
        for task in self._tasks:
            task.cancel()
        for runner in self._runners:
            await runner.cleanup()

    # ------------------------------------------------------------------ what it writes

    def endpoints(self) -> Endpoints:
        o = self.options
        scheme = "https" if o.redfish_tls else "http"
        return Endpoints(
            dcgm_url=f"http://{o.host}:{self.ports['dcgm']}/metrics",
            redfish_url=f"{scheme}://{o.host}:{self.ports['redfish']}",
            modbus_host=o.host, modbus_port=self.ports["modbus"],
            bms_transport=o.bms_transport, mqtt_host=o.mqtt_host, mqtt_port=o.mqtt_port or 1883,
            redfish_user=o.redfish_user, redfish_ca_file=self.ca_file,
            dcgm_interval_s=o.dcgm_interval_s, redfish_interval_s=o.redfish_interval_s,
            modbus_interval_s=o.modbus_interval_s,
        )  # fmt: skip

    def pointmap_text(self) -> str:
        return render(self.model.layout, self.site.name, self.endpoints())

    def truth_record(self) -> dict[str, Any]:
        """The true parameter values (and the twin's, from the base site), the sensor
        errors, the faults, and where the plant serves."""
        record = self.truth.record(self.site)
        base = self.base.model_dump(mode="json")
        record["twin_values"] = {path: get_path(base, path) for path in self.truth.overrides}
        record["dt_s"] = self.options.dt
        record["speed"] = self.options.speed
        record["endpoints"] = {k: v for k, v in vars(self.endpoints()).items()}
        return record
