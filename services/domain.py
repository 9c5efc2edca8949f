"""One domain of the coupled model as a service runs it: its own subsystem state, the
boundary values it needs from the other domains, and its live commands.

The scheme is the monolithic one (``twin_core.coupling``): for coupling interval ``k`` a
domain reads what its peers published at the end of ``k - 1`` (interval 0 reads the
initial boundary every domain computes identically), advances with the same node
function, and publishes its own boundary values.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from services.host_packing import HostPacking
from twin_core import NO_LIMIT as BIG
from twin_core import (
    Layout,
    Params,
    Site,
    build_params,
    contract,
    coupling,
    layout_of,
    load_drivers,
    set_param,
)
from twin_core.contract import Equipment
from twin_core.coupling import Boundary
from twin_core.pytree import replace

DOMAINS = contract.DOMAINS
OWNS, NEEDS = contract.OWNS, contract.NEEDS
NODES = {
    "compute": coupling.compute_node,
    "cooling": coupling.cooling_node,
    "power": coupling.power_node,
    "energy": coupling.energy_node,
}
# A live twin runs open-ended: drivers cover a year and wrap; spare failure slots take
# failures and repairs applied at run time without changing array shapes (no recompile).
LIVE_HORIZON_S = 365 * 86400.0
FAILURE_SLOTS = 16
FAILURE_FIELDS = ("kind", "index", "start_s", "end_s")


def owned_parts(domain: str, state: Any, outputs: Any) -> dict[str, np.ndarray]:
    """The boundary values ``domain`` publishes after a step, as host arrays."""
    fields = contract.BOUNDARY_FIELD
    return {name: np.asarray(fields[name].read(state, outputs)) for name in OWNS[domain]}


def published_step(domain: str, p: Params, s: Any, b: Boundary, k: Any) -> tuple[Any, Any]:
    """One interval of ``domain`` and all that its service publishes of it: the new state,
    and (outputs, the interval's drivers, the boundary values it owns). Compiled as one
    function, so a tick costs one dispatch and one device-to-host copy."""
    s, outputs = NODES[domain](p, s, b, k)
    fields = contract.BOUNDARY_FIELD
    parts = {name: fields[name].read(s, outputs) for name in OWNS[domain]}
    return s, (outputs, coupling.drivers_at(p, k), parts)


@dataclass
class DomainModel:
    """The subsystem ``domain`` of ``site``, stepped one coupling interval at a time."""

    site: Site
    domain: str
    dt: float = 1.0
    dtype: Any = jnp.float32
    horizon_s: float = LIVE_HORIZON_S
    params: Params = field(init=False)
    state: Any = field(init=False)
    initial: Boundary = field(init=False)
    step: int = field(init=False, default=0)
    # Live changes in the order made ("path" or "path[i,j]" -> value), replayed on restore.
    settings: dict[str, Any] = field(init=False, default_factory=dict)
    # Live mode: the state as it would be had no reading replaced any of it (stepped
    # beside ``state`` once a reading has), for the model's own values (``modelled``).
    open_loop: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"domain: {self.domain!r} is not one of {', '.join(DOMAINS)}")
        lay = layout_of(self.site, "rack")
        lay = Layout(lay.cdus, lay.racks, lay.gpus, lay.jobs, lay.pools, FAILURE_SLOTS)
        self.params = build_params(
            self.site,
            load_drivers(self.site),
            horizon_s=self.horizon_s,
            dt=self.dt,
            dtype=self.dtype,
            pad_to=lay,
        )
        if self.domain == "compute":  # operator caps per rack, settable without recompiling
            caps = jnp.full(self.params.compute.mask.shape, BIG, self.dtype)
            self.params = set_param(self.params, "compute.operator_cap_w", caps)
        s0 = coupling.jit_init_state(self.params)
        self.state = getattr(s0, self.domain)
        self.initial = s0.boundary
        self._boundary = s0.boundary  # the boundary of the latest step
        self._step = jax.jit(NODES[self.domain])
        # What a step publishes comes to the host packed: one copy per dtype, not per leaf.
        publish = functools.partial(published_step, self.domain)
        shapes = jax.eval_shape(publish, self.params, self.state, self.initial, jnp.int32(0))
        self._output_shapes = shapes[1][0]  # (outputs, drivers, owned parts)
        self._published_packing = HostPacking.of(shapes[1])
        self._unpack = self._published_packing.unpack
        # The parameters and the boundary go in packed too: one argument per dtype.
        self._boundary_packing = HostPacking.of(self.initial)
        self._params_packing = HostPacking.of(self.params)
        self._published_step = self._compiled_step(self._params_packing)
        self._packed_params: tuple[Params, Any] | None = None  # (params, packed on device)
        self._drivers = jax.jit(coupling.drivers_at)
        # The drivers of the latest interval stepped: (interval, the params, drivers).
        self._last_drivers: tuple[int, Params, coupling.Drivers] | None = None
        self._host_params: tuple[Params, Any] | None = None  # (params, its domain on host)

    def warm_up(self) -> None:
        """Compile the steps and the drivers now (discarded steps from the initial state
        and boundary; the published step takes its boundary packed on the host, so peers'
        values arriving later need no second compilation)."""
        k = np.int32(0)
        jax.block_until_ready(self._step(self.params, self.state, self.initial, k))
        jax.block_until_ready(self._stepped_published(self.state, self.initial, k))
        jax.block_until_ready(self._drivers(self.params, k))

    def initial_parts(self) -> dict[str, np.ndarray]:
        """The initial boundary values this domain owns (published as step -1)."""
        return {name: np.asarray(getattr(self.initial, name)) for name in OWNS[self.domain]}

    def initial_outputs(self) -> Any:
        """Zero outputs of the right structure, for the step -1 ("ready") message."""
        return jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), self._output_shapes)

    def drivers(self, step: int) -> coupling.Drivers:
        """The exogenous drivers of interval ``step`` (ambient, prices, PPA output...)."""
        if self._last_drivers is not None:
            stepped, params, drivers = self._last_drivers
            if stepped == step and params is self.params:  # computed by that interval's step
                return drivers
        return self._drivers(self.params, np.int32(step))

    def quantities(self, outputs: Any, drivers: coupling.Drivers) -> dict[str, float]:
        """The contract's quantities of this domain for a step's outputs and drivers,
        evaluated on the host in float64 (the bus carries doubles: a ratio such as the PUE
        is then exactly the ratio of the published values)."""
        o, d = _float64(outputs), _float64(drivers)
        if self._host_params is None or self._host_params[0] is not self.params:
            host = jax.tree.map(np.asarray, getattr(self.params, self.domain))
            self._host_params = (self.params, host)
        p = self._host_params[1]
        return {q.name: float(q.of(o, d, p)) for q in contract.of_domain(self.domain)}

    def boundary(self, peers: dict[str, dict[str, np.ndarray]]) -> Boundary:
        """The boundary for the next interval from the peers' published values (their
        previous interval); at interval 0 the initial boundary."""
        if self.step == 0:
            return self.initial
        values = {name: getattr(self.initial, name) for name in Boundary.__dataclass_fields__}
        for peer in NEEDS[self.domain]:
            for name, value in peers[peer].items():
                # Host arrays of the initial values' dtype: the step copies them in itself
                # (the rounding to float32 is numpy's, the same as jnp.asarray's).
                values[name] = np.asarray(value, values[name].dtype)
        return Boundary(**values)

    def advance(self, peers: dict[str, dict[str, np.ndarray]]) -> tuple[Any, dict[str, np.ndarray]]:
        """Step once; returns the outputs and the boundary values to publish, on the host
        (the interval's drivers are kept for ``drivers``)."""
        b = self.boundary(peers)
        k = np.int32(self.step)
        if self.open_loop is not None:
            self.open_loop, _ = self._step(self.params, self.open_loop, b, k)
        self.state, packed = self._stepped_published(self.state, b, k)
        outputs, drivers, parts = self._unpack(packed)
        self._last_drivers = (self.step, self.params, drivers)
        self._boundary = b
        self.step += 1
        return outputs, parts

    def _compiled_step(self, params_packing: HostPacking) -> Callable[..., tuple[Any, Any]]:
        """The step and what it publishes, compiled for parameters packed by
        ``params_packing`` and a packed boundary; returns (new state, published, packed)."""
        publish = functools.partial(published_step, self.domain)
        boundary_packing, published_packing = self._boundary_packing, self._published_packing

        def packed_step(pp: Any, s: Any, pb: Any, k: Any) -> tuple[Any, Any]:
            p = params_packing.unpack_inside(pp)
            b = boundary_packing.unpack_inside(pb)
            s, published = publish(p, s, b, k)
            return s, published_packing.pack(published)

        return jax.jit(packed_step)

    def _stepped_published(self, s: Any, b: Boundary, k: Any) -> tuple[Any, Any]:
        """The compiled step on packed parameters (packed again only once they change) and
        a packed boundary: (new state, what it publishes, packed)."""
        if self._packed_params is None or self._packed_params[0] is not self.params:
            packing = HostPacking.of(self.params)
            if packing != self._params_packing:  # a setting changed a parameter's shape
                self._params_packing = packing
                self._published_step = self._compiled_step(packing)
            packed = jax.device_put(packing.pack_on_host(self.params))
            self._packed_params = (self.params, packed)
        pb = self._boundary_packing.pack_on_host(b)
        return self._published_step(self._packed_params[1], s, pb, k)

    def assimilate(self, **values: Any) -> None:
        """Put measured values into the state (live mode); ``open_loop`` goes on without
        them."""
        if self.open_loop is None:
            self.open_loop = self.state
        self.state = replace(self.state, **values)

    def modelled(self, outputs: Any) -> dict[str, np.ndarray]:
        """The model's own values of what the live twin measures, after a step and before
        any reading replaces them, by their state-message fields: each rack's AC power
        (compute); each CDU's supply temperature from the open-loop state and its return,
        supply + rack heat / loop capacity rate (cooling). The residual monitor compares
        readings with these."""
        if self.domain == "compute":
            return {"rack_ac_model_w": np.asarray(outputs.rack_ac_w)}
        if self.domain != "cooling":
            return {}
        state = self.state if self.open_loop is None else self.open_loop
        supply = np.asarray(state.tcs_supply_c, np.float64)
        heat = np.asarray(self._boundary.heat_liquid_w, np.float64)
        rise = heat / np.asarray(self.params.cooling.tcs_c, np.float64)
        return {"tcs_supply_model_c": supply, "tcs_return_model_c": supply + rise}

    # ---------------------------------------------------------------- live commands

    def set(self, path: str, value: Any) -> None:
        """Change a parameter (e.g. ``cooling.supply_c``, or a whole per-rack array) from the
        next step."""
        self.params = set_param(self.params, path, value)
        # A whole-parameter change supersedes earlier element changes of it.
        for key in [k for k in self.settings if k == path or k.startswith(f"{path}[")]:
            del self.settings[key]
        self.settings[path] = np.asarray(value).tolist()

    def set_item(self, path: str, index: tuple[int, ...], value: float) -> None:
        """Change one element of an array parameter (a rack's cap, a job's period),
        broadcasting a parameter stored once per site to its full shape first."""
        from twin_core import get_param

        array = np.array(get_param(self.params, path))
        array[index] = value
        self.params = set_param(self.params, path, array)
        key = f"{path}[{','.join(map(str, index))}]"
        self.settings.pop(key, None)  # keep the order in which changes were made
        self.settings[key] = float(value)

    # ---------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        """Step, state and live changes (settings, failures) as bytes, to rejoin a run."""
        arrays = {f"state_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(self.state))}
        f = self.params.failures
        arrays |= {f"failures_{k}": np.asarray(getattr(f, k)) for k in FAILURE_FIELDS}
        arrays["settings"] = np.array(json.dumps(self.settings))
        arrays["step"] = np.array(self.step)
        buffer = io.BytesIO()
        # allow_pickle is savez's default, named so that no key of **arrays can bind it.
        np.savez(buffer, allow_pickle=True, **arrays)
        return buffer.getvalue()

    def restore(self, data: bytes) -> None:
        with np.load(io.BytesIO(data)) as z:
            treedef = jax.tree.structure(self.state)
            leaves = [jnp.asarray(z[f"state_{i}"]) for i in range(treedef.num_leaves)]
            self.state = treedef.unflatten(leaves)
            self.open_loop = None  # not kept: it restarts from the restored state
            self._set_failures(**{k: z[f"failures_{k}"] for k in FAILURE_FIELDS})
            for key, value in json.loads(str(z["settings"])).items():
                path, _, index = key.partition("[")
                if index:
                    self.set_item(path, tuple(int(i) for i in index[:-1].split(",")), value)
                else:
                    self.set(path, value)
            self.step = int(z["step"])

    def fail(self, equipment: str, index: int, at_s: float | None = None) -> None:
        """Take a unit out of service from ``at_s`` (default: now) until repaired."""
        f = self.params.failures
        free = np.flatnonzero(np.asarray(f.kind) < 0)
        if not free.size:
            raise ValueError(f"failures: all {FAILURE_SLOTS} failure slots are in use")
        slot = int(free[0])
        start = self.step * self.dt if at_s is None else at_s
        self._set_failures(
            kind=_with(f.kind, slot, Equipment.of(equipment)),
            index=_with(f.index, slot, index),
            start_s=_with(f.start_s, slot, start),
            end_s=_with(f.end_s, slot, BIG),
        )

    def repair(self, equipment: str, index: int) -> None:
        """End every open failure of that unit now."""
        f = self.params.failures
        now = self.step * self.dt
        open_ = (
            (np.asarray(f.kind) == Equipment.of(equipment))
            & (np.asarray(f.index) == index)
            & (np.asarray(f.end_s) > now)
        )
        self._set_failures(end_s=np.where(open_, now, np.asarray(f.end_s)))

    def _set_failures(self, **fields: Any) -> None:
        f = self.params.failures
        arrays = {k: jnp.asarray(v, getattr(f, k).dtype) for k, v in fields.items()}
        self.params = replace(self.params, failures=replace(f, **arrays))


def _float64(fields: Any) -> SimpleNamespace:
    """A flat dataclass of arrays (outputs, drivers) as float64 host arrays by field name:
    what the contract's expressions read, without a pytree round trip per step."""
    names = fields.__dataclass_fields__
    return SimpleNamespace(**{k: np.asarray(getattr(fields, k), np.float64) for k in names})


def _with(array: Any, slot: int, value: float) -> np.ndarray:
    out = np.asarray(array).copy()
    out[slot] = value
    return out
