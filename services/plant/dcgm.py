"""A DCGM exporter endpoint (Prometheus text, ``GET /metrics``) for every GPU of the
plant, laid out as NVIDIA's dcgm-exporter writes it: one family per field with HELP and
TYPE lines, one sample per GPU labelled ``gpu``, ``UUID``, ``pci_bus_id``, ``device``,
``modelName`` and ``Hostname`` (the rack's host, ``rack-<slot>-<cdu>``). A dropped
reading is a missing sample, as when a GPU falls off the bus. Fields: power (W), die
temperature (degC), the energy counter (mJ, since the plant started) and graphics engine
activity (0..1); ``fields`` picks which (dcgm-exporter's counters file does the same).
"""

from __future__ import annotations

import math
import uuid

import numpy as np
from aiohttp import web

from services.plant.snapshot import Board

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus text format 0.0.4
FAMILIES = (  # name, type, help (dcgm-exporter's texts), what it reads
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temp"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
     "Total energy consumption since boot (in mJ).", "energy"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge",
     "Ratio of time the graphics engine is active.", "util"),
)  # fmt: skip


def gpu_uuid(host: str, gpu: int) -> str:
    """A stable UUID per GPU, in NVML's ``GPU-...`` form."""
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{host}.gpu{gpu}')}"


FIELDS = tuple(key for *_, key in FAMILIES)
MAPPED_FIELDS = ("power", "temp")  # the ones the twin has a quantity for (pointmap.py)


def render(board: Board, fields: tuple[str, ...] = FIELDS) -> str:
    snap = board.snapshot
    if snap is None:
        return ""
    labels = []
    for rack in board.layout.racks:
        for g in range(rack.gpus):
            labels.append(
                f'gpu="{g}",UUID="{gpu_uuid(rack.host, g)}",'
                f'pci_bus_id="00000000:{g + 1:02X}:00.0",device="nvidia{g}",'
                f'modelName="{board.model_name}",Hostname="{rack.host}"'
            )
    values: dict[str, np.ndarray] = {
        "power": snap.measured["gpu_power_w"],
        "temp": snap.measured["gpu_temp_c"],
        # counters and activity have no sensor noise; they drop out with the power reading
        "energy": np.where(np.isnan(snap.measured["gpu_power_w"]), np.nan, snap.gpu_energy_mj),
        "util": np.where(np.isnan(snap.measured["gpu_power_w"]), np.nan, snap.gpu_util),
    }
    lines: list[str] = []
    for name, kind, help_text, key in FAMILIES:
        if key not in fields:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        fmt = "{:.0f}" if key == "energy" else "{:.6f}"
        for label, value in zip(labels, values[key].tolist(), strict=True):
            if not math.isnan(value):
                lines.append(f"{name}{{{label}}} {fmt.format(value)}")
    return "\n".join(lines) + "\n"


def app(board: Board, fields: tuple[str, ...] = FIELDS) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=render(board, fields).encode(), headers={"Content-Type": CONTENT_TYPE}
        )

    application = web.Application()
    application.router.add_get("/metrics", metrics)
    return application
