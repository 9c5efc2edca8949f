"""The true plant: the coupled model of the true site (truthfile.py), stepped one
interval at a time, with the fouling faults applied as they ramp, and its state read out
as the plant's measured signals (true values, before the sensors).

Signals are flat arrays, one element per sensor, with the twin entity each belongs to
(``cdu/<i>``, ``rack/<slot>/<cdu>``, ``meter``, ``weather``, ``ups/0``). Per-GPU signals
have one element per GPU of each rack (rack-major); the model runs per rack, so every
GPU of a rack has the rack's die temperature, and the rack's share of the site's GPU
power (in proportion to its AC power) split evenly over its GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from services.plant.truthfile import Fouling, Truth, TruthError, seconds
from twin_core import build_params, coupled_step, load_drivers, set_param
from twin_core.coupling import jit_init_state
from twin_core.site import Site

HORIZON_S = 365 * 86400.0  # drivers cover a year and wrap, as in the live twin


@dataclass(frozen=True)
class Rack:
    slot: int
    cdu: int
    gpus: int

    @property
    def entity(self) -> str:
        return f"rack/{self.slot}/{self.cdu}"

    @property
    def host(self) -> str:  # the rack's host name on DCGM and its Redfish chassis id
        return f"rack-{self.slot}-{self.cdu}"


@dataclass(frozen=True)
class Layout:
    """Where each signal's elements sit: entities and, for GPUs, (rack, gpu index)."""

    cdus: int
    racks: list[Rack]
    hall_of_cdu: list[str]

    def entities(self, signal: str) -> list[str]:
        if signal in ("cdu_supply_c", "cdu_return_c"):
            return [f"cdu/{i}" for i in range(self.cdus)]
        if signal == "rack_power_w":
            return [r.entity for r in self.racks]
        if signal in ("gpu_power_w", "gpu_temp_c"):
            return [r.entity for r in self.racks for _ in range(r.gpus)]
        return [{"ambient_c": "weather", "meter_power_w": "meter", "ups_output_w": "ups/0"}[signal]]


def layout(site: Site, mask: np.ndarray, gpus: np.ndarray) -> Layout:
    halls = [h.name for h in site.halls for _ in range(h.cdus)]
    racks = [
        Rack(slot, cdu, int(gpus[slot, cdu]))
        for cdu in range(mask.shape[1])
        for slot in range(mask.shape[0])
        if mask[slot, cdu] > 0
    ]
    return Layout(site.cdu_count, racks, halls)


@dataclass
class TruePlant:
    """``site`` (already the true site) stepped at ``dt``; ``advance()`` -> signals."""

    site: Site
    truth: Truth
    dt: float = 1.0
    name: str = "<truth>"  # the truth file, for messages
    step: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.params = build_params(
            self.site, load_drivers(self.site), horizon_s=HORIZON_S, dt=self.dt
        )
        self.state = jit_init_state(self.params)
        self._step = jax.jit(coupled_step)
        c = self.params.compute
        self.layout = layout(self.site, np.asarray(c.mask), np.asarray(c.gpus))
        self._base_ua = np.asarray(self.params.cooling.cdu_ua, np.float64)
        self._fouling = [f for f in self.truth.faults if isinstance(f, Fouling)]
        for i, fault in enumerate(self.truth.faults):
            if isinstance(fault, Fouling) and fault.cdu >= self.layout.cdus:
                raise TruthError(
                    f"{self.name}: faults.{i}.cdu: {fault.cdu} out of range, the site has "
                    f"{self.layout.cdus} CDU(s)"
                )
        self.energy_mj = np.zeros(sum(r.gpus for r in self.layout.racks))
        self._gpus_of_rack = np.array([r.gpus for r in self.layout.racks])

    @property
    def time_s(self) -> float:
        """Simulated seconds since the start (the state's time)."""
        return self.step * self.dt

    def ua_fraction(self, t: float) -> np.ndarray:
        """Each CDU's UA as a fraction of the true site's, at time ``t`` (fouling)."""
        frac = np.ones_like(self._base_ua)
        for f in self._fouling:
            at, ramp = seconds(f.at), seconds(f.ramp)
            done = 1.0 if ramp <= 0 else np.clip((t - at) / ramp, 0.0, 1.0)
            if t >= at:
                frac[f.cdu] *= 1.0 - (1.0 - f.ua_fraction) * done
        return frac

    def advance(self) -> dict[str, np.ndarray]:
        """One interval; the true signals at its end."""
        if self._fouling:
            ua = self._base_ua * self.ua_fraction(self.time_s)
            self.params = set_param(self.params, "cooling.cdu_ua", ua)
        self.state, out = self._step(self.params, self.state)
        self.step += 1
        signals = self.signals(self.state, out)
        self.energy_mj += signals["gpu_power_w"] * self.dt * 1e3
        return signals

    def signals(self, state, out) -> dict[str, np.ndarray]:
        host = jax.tree.map(lambda x: np.asarray(x, np.float64), (state, out))
        s, o = host
        p = self.params
        mask = np.asarray(p.compute.mask) > 0
        cdus, slots = np.nonzero(mask.T)  # CDU-major, as Layout.racks
        rack_w = o.compute.rack_ac_w[slots, cdus]
        gpu_share = o.compute.gpu_power_w / max(o.compute.ac_total_w, 1.0)
        gpu_w = np.repeat(rack_w * gpu_share / self._gpus_of_rack, self._gpus_of_rack)
        weight = np.asarray(p.compute.gpu_weight, np.float64)
        die = (s.compute.die_c * weight).sum(-1) / np.maximum(weight.sum(-1), 1e-9)
        gpu_c = np.repeat(die[slots, cdus], self._gpus_of_rack)
        supply = s.cooling.tcs_supply_c[: self.layout.cdus]
        tcs_c = np.asarray(p.cooling.tcs_c, np.float64)[: self.layout.cdus]
        ret = supply + o.compute.heat_liquid_w[: self.layout.cdus] / tcs_c
        it_w = float(o.power.it_w)
        scalar = lambda x: np.array([float(x)])  # noqa: E731
        return {
            "cdu_supply_c": supply,
            "cdu_return_c": ret,
            "ambient_c": scalar(o.drivers.ambient_c),
            "rack_power_w": rack_w,
            "gpu_power_w": gpu_w,
            "gpu_temp_c": gpu_c,
            "meter_power_w": scalar(o.power.meter_w),
            # the UPS feeds the IT load and the distribution losses after it
            "ups_output_w": scalar(it_w + float(p.power.dist_loss_coeff) * it_w**2),
        }


def warm_up(plant: TruePlant) -> None:
    """Compile the step now (a discarded step), so that the first paced step is on time."""
    jax.block_until_ready(plant._step(plant.params, plant.state))
