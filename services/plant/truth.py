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
from typing import Any, NamedTuple

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
        self._step = jax.jit(step_and_read)
        self._steps = jax.jit(steps_and_reads, static_argnums=2)
        c = self.params.compute
        self.layout = layout(self.site, np.asarray(c.mask), np.asarray(c.gpus))
        # What the signals need of the params, which the step does not change (fouling
        # changes only the CDUs' UA).
        cdus, slots = np.nonzero(np.asarray(c.mask).T > 0)  # CDU-major, as Layout.racks
        self._racks = (slots, cdus)
        self._gpu_weight = np.asarray(c.gpu_weight, np.float64)
        self._gpu_weight_sum = np.maximum(self._gpu_weight.sum(-1), 1e-9)
        self._tcs_c = np.asarray(self.params.cooling.tcs_c, np.float64)[: self.layout.cdus]
        self._dist_loss = float(self.params.power.dist_loss_coeff)
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
        self.state, read = self._step(self.params, self.state)
        self.step += 1
        signals = self.signals(Readout(*jax.device_get(read)))
        self.energy_mj += signals["gpu_power_w"] * self.dt * 1e3
        return signals

    def advance_many(self, n: int) -> list[dict[str, np.ndarray]]:
        """``n`` intervals in one compiled loop (one dispatch and one transfer, not ``n``);
        the true signals at the end of each. The values of ``n`` ``advance()`` calls (to
        rounding: XLA may fuse the loop differently), for a plant without fouling (whose UA
        changes between steps)."""
        if self._fouling:
            return [self.advance() for _ in range(n)]
        self.state, reads = self._steps(self.params, self.state, n)
        host = Readout(*jax.device_get(reads))
        out = []
        for k in range(n):
            self.step += 1
            signals = self.signals(Readout(*(leaf[k] for leaf in host)))
            self.energy_mj += signals["gpu_power_w"] * self.dt * 1e3
            out.append(signals)
        return out

    def signals(self, r: Readout) -> dict[str, np.ndarray]:
        slots, cdus = self._racks
        rack_w = np.asarray(r.rack_ac_w, np.float64)[slots, cdus]
        gpu_share = float(r.gpu_power_w) / max(float(r.ac_total_w), 1.0)
        gpu_w = np.repeat(rack_w * gpu_share / self._gpus_of_rack, self._gpus_of_rack)
        die = (np.asarray(r.die_c, np.float64) * self._gpu_weight).sum(-1) / self._gpu_weight_sum
        gpu_c = np.repeat(die[slots, cdus], self._gpus_of_rack)
        n = self.layout.cdus
        supply = np.asarray(r.tcs_supply_c, np.float64)[:n]
        ret = supply + np.asarray(r.heat_liquid_w, np.float64)[:n] / self._tcs_c
        it_w = float(r.it_w)
        scalar = lambda x: np.array([float(x)])  # noqa: E731
        return {
            "cdu_supply_c": supply,
            "cdu_return_c": ret,
            "ambient_c": scalar(r.ambient_c),
            "rack_power_w": rack_w,
            "gpu_power_w": gpu_w,
            "gpu_temp_c": gpu_c,
            "meter_power_w": scalar(r.meter_w),
            # the UPS feeds the IT load and the distribution losses after it
            "ups_output_w": scalar(it_w + self._dist_loss * it_w**2),
        }


class Readout(NamedTuple):
    """The leaves of the state and outputs the signals are made of: one transfer to the
    host per step instead of the whole state."""

    rack_ac_w: Any
    gpu_power_w: Any
    ac_total_w: Any
    die_c: Any
    tcs_supply_c: Any
    heat_liquid_w: Any
    it_w: Any
    ambient_c: Any
    meter_w: Any


def step_and_read(params, state):
    """One coupled step; the new state and its readout."""
    state, o = coupled_step(params, state)
    c = o.compute
    read = Readout(
        c.rack_ac_w,
        c.gpu_power_w,
        c.ac_total_w,
        state.compute.die_c,
        state.cooling.tcs_supply_c,
        c.heat_liquid_w,
        o.power.it_w,
        o.drivers.ambient_c,
        o.power.meter_w,
    )
    return state, read


def steps_and_reads(params, state, n: int):
    """``n`` coupled steps; the last state and the readout of each step, stacked."""
    return jax.lax.scan(lambda st, _: step_and_read(params, st), state, length=n)


def warm_up(plant: TruePlant) -> None:
    """Compile the step now (a discarded step), so that the first paced step is on time."""
    jax.block_until_ready(plant._step(plant.params, plant.state))
