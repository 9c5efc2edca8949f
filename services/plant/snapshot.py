"""What the protocol servers serve: the plant's readings after its latest step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.plant.truth import Layout


@dataclass(frozen=True)
class Snapshot:
    step: int
    time_s: float  # simulated seconds since the plant started
    wall_s: float  # when the step was taken (epoch s): the readings' timestamp
    true: dict[str, np.ndarray]  # signal -> true values (truth.py)
    measured: dict[str, np.ndarray]  # signal -> what the sensors read; NaN = dropped
    gpu_energy_mj: np.ndarray  # each GPU's energy counter (true, integrated over steps)
    gpu_util: np.ndarray  # each GPU's graphics engine activity, 0..1


class Board:
    """The latest snapshot, shared by the step loop (writer) and the servers (readers,
    on the same event loop)."""

    def __init__(self, layout: Layout, model_name: str) -> None:
        self.layout = layout
        self.model_name = model_name  # the GPUs' DCGM modelName, e.g. "NVIDIA GB200"
        self.snapshot: Snapshot | None = None
