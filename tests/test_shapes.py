"""The array annotations are checked in the test run (``--jaxtyping-packages`` in the pytest
addopts): a pytree built with a wrong shape or dtype is refused, on the host and while a
step is traced (monolithic and under vmap), and merging changes R and C consistently.
pyright (basic mode, [tool.pyright]) finds no error in twin_core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import F64, ROOT, small_site
from jaxtyping import TypeCheckError

from twin_core import coupling
from twin_core.batch import STATE_AXES, stack_params
from twin_core.compress import compress
from twin_core.coupling import Boundary, TwinState
from twin_core.drivers import load_drivers
from twin_core.params import build_params
from twin_core.pytree import build, replace

MIXED = {  # two rack types: per-rack properties are stored per rack, not once
    "halls": [
        {"name": "a", "cdus": 2, "racks_per_cdu": 4, "rack_type": "GB200_NVL72"},
        {"name": "b", "cdus": 1, "racks_per_cdu": 3, "rack_type": "GB300_NVL72"},
    ],
    "workload.training.0.racks": 7,
}


def boundary(racks: int, cdus: int, **changes) -> Boundary:
    values = {
        "tcs_supply_c": np.full(cdus, 30.0),
        "rack_cap_w": np.ones((racks, cdus)),
        "rack_ac_w": np.ones((racks, cdus)),
        "heat_liquid_w": np.zeros(cdus),
        "heat_air_w": np.asarray(0.0),
        "cooling_w": np.asarray(0.0),
        "supply_limit_w": np.asarray(1e30),
        "meter_w": np.asarray(0.0),
    }
    return Boundary(**(values | changes))


@pytest.fixture(scope="module")
def params():
    site = small_site(MIXED)
    return build_params(site, load_drivers(site), horizon_s=120, dt=1.0, dtype=F64, host=True)


def zeros_state(p) -> TwinState:
    """A state of the right structure and shapes without compiling ``init_state``."""
    shapes = jax.eval_shape(coupling.init_state, p)
    return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)


def test_the_test_run_checks_annotations():
    wrapped = Boundary.__init__.__globals__["__name__"] == "jaxtyping._decorator"
    assert wrapped, "run pytest with pyproject.toml's addopts (--jaxtyping-packages=twin_core,...)"


def test_a_consistent_boundary_is_accepted():
    boundary(4, 3)
    boundary(4, 3, rack_ac_w=jnp.ones((4, 3)))  # jax arrays as well as NumPy


@pytest.mark.parametrize(
    "changes",
    [
        {"rack_ac_w": np.ones((4, 2))},  # C disagrees with tcs_supply_c
        {"rack_cap_w": np.ones((3, 4))},  # (C, R) instead of (R, C)
        {"heat_air_w": np.zeros(3)},  # a vector where a scalar belongs
        {"meter_w": 0.0},  # not an array
        {"tcs_supply_c": np.full(3, 30, np.int32)},  # wrong dtype
    ],
    ids=["dims", "transposed", "rank", "python-float", "dtype"],
)
def test_a_wrong_boundary_is_refused(changes):
    with pytest.raises(TypeCheckError):
        boundary(4, 3, **changes)


def test_psu_loss_is_stored_rack_by_cdu(params):
    cp = params.compute
    racks, cdus = np.shape(cp.mask)
    assert racks != cdus
    assert np.shape(cp.psu_loss) == (racks, cdus, 3)
    with pytest.raises(TypeCheckError):
        replace(cp, psu_loss=np.swapaxes(np.asarray(cp.psu_loss), 0, 1))


def test_the_check_runs_while_a_step_is_traced(params):
    s = zeros_state(params)
    jax.eval_shape(coupling.coupled_step, params, s)  # traced, and every pytree checked
    racks, cdus = np.shape(params.compute.mask)
    # A boundary that slipped past its own check (built as JAX rebuilds pytrees) is caught
    # where a step builds its inputs from it.
    fields = {name: getattr(s.boundary, name) for name in Boundary.__dataclass_fields__}
    bad = build(Boundary, **(fields | {"rack_cap_w": jnp.zeros((racks, cdus + 1))}))
    with pytest.raises(TypeCheckError, match="ComputeInputs"):
        jax.eval_shape(coupling.coupled_step, params, replace(s, boundary=bad))


def test_the_check_sees_one_variant_under_vmap(params):
    merged = compress(params)
    variants = stack_params([merged, merged])
    s = zeros_state(merged)
    states = jax.tree.map(lambda x: jnp.stack([x, x]), s)
    states = replace(states, step=s.step)
    step = jax.vmap(coupling.coupled_step, in_axes=(0, STATE_AXES), out_axes=(STATE_AXES, 0))
    out_state, _ = jax.eval_shape(step, variants, states)
    assert out_state.compute.die_c.shape == (2, *np.shape(merged.compute.gpu_weight))


def test_merging_changes_racks_and_cdus_consistently():
    site = small_site()
    params = build_params(site, load_drivers(site), horizon_s=120, dt=1.0, dtype=F64, host=True)
    merged = compress(params)  # every replace() inside is checked
    r, c = np.shape(params.compute.mask)
    r2, c2 = np.shape(merged.compute.mask)
    assert (r2, c2) != (r, c)
    assert np.shape(merged.power.rack_max_ac_w) == (r2, c2)
    assert np.shape(merged.cooling.tcs_c) == (c2,)
    # Merged params with the full layout's power params: caught where they meet (Boundary).
    with pytest.raises(TypeCheckError, match="Boundary"):
        jax.eval_shape(coupling.init_state, replace(merged, power=params.power))


def test_pyright_finds_no_error_in_the_model():
    pyright = Path(sys.executable).parent / "pyright"
    if not pyright.exists():
        pytest.skip("pyright is not installed (the dev extra: pip install -e '.[dev]')")
    done = subprocess.run(
        [str(pyright), "--pythonpath", sys.executable, "--outputjson"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYRIGHT_PYTHON_IGNORE_WARNINGS": "1"},
    )
    report = json.loads(done.stdout)
    errors = [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report["generalDiagnostics"]
        if d["severity"] == "error"
    ]
    assert not errors, "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] > 10
