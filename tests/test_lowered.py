"""Lowered programs kept on disk (twin_core/lowered.py): read back, they give the same
bits as the program traced afresh; a different call is a different file; a damaged file
or the cache turned off falls back to tracing."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import SMALL

from twin_core import build_params, init_state, load_drivers, load_site
from twin_core import lowered as lowered_mod
from twin_core.lowered import flag
from twin_core.rollout import run_jit


@pytest.fixture
def cache(tmp_path: Path):
    """The compilation cache pointed at a fresh folder for one test, then restored."""
    before = (
        flag("jax_enable_compilation_cache"),
        flag("jax_compilation_cache_dir"),
    )
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    yield tmp_path / lowered_mod.FOLDER
    jax.config.update("jax_enable_compilation_cache", before[0])
    jax.config.update("jax_compilation_cache_dir", before[1])


@pytest.fixture(scope="module")
def small_params():
    site = load_site(SMALL)
    return build_params(site, load_drivers(site), horizon_s=600.0, dt=10.0, host=True)


def same(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def test_a_kept_program_gives_the_bits_of_a_fresh_trace(cache, small_params, monkeypatch):
    p = small_params
    s0 = lowered_mod.compiled(init_state, "init_state", p)(p)
    assert same(s0, init_state(p))
    first = lowered_mod.compiled(run_jit, "rollout", p, s0, n_records=6, every=6, trace=None)
    kept = sorted(f.name for f in cache.iterdir())
    assert [name.split("-")[0] for name in kept] == ["init_state", "rollout"]

    def no_tracing(*_args, **_kw):
        raise AssertionError("traced again")

    monkeypatch.setattr(lowered_mod, "_export", no_tracing)
    again = lowered_mod.compiled(run_jit, "rollout", p, s0, n_records=6, every=6, trace=None)
    reference = run_jit(p, s0, 6, 6)
    assert same(first(p, s0), reference) and same(again(p, s0), reference)
    assert sorted(f.name for f in cache.iterdir()) == kept


def test_other_static_arguments_or_precision_are_another_program(cache, small_params):
    p = small_params
    s0 = init_state(p)
    lowered_mod.compiled(run_jit, "rollout", p, s0, n_records=6, every=6, trace=None)
    lowered_mod.compiled(run_jit, "rollout", p, s0, n_records=3, every=12, trace=None)
    site = load_site(SMALL)
    p64 = build_params(site, load_drivers(site), horizon_s=600.0, dt=10.0, dtype=np.float64)
    s64 = init_state(p64)
    out = lowered_mod.compiled(run_jit, "rollout", p64, s64, n_records=3, every=12, trace=None)
    assert len(list(cache.iterdir())) == 3
    assert same(out(p64, s64), run_jit(p64, s64, 3, 12))


def test_a_damaged_file_is_lowered_again_with_a_warning(cache, small_params, caplog):
    p = small_params
    lowered_mod.compiled(init_state, "init_state", p)
    (path,) = cache.iterdir()
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a program")
    with caplog.at_level(logging.WARNING, logger="twin_core.lowered"):
        s0 = lowered_mod.compiled(init_state, "init_state", p)(p)
    assert same(s0, init_state(p))
    assert [r.getMessage().startswith(f"{path}: unreadable (") for r in caplog.records] == [True]
    assert b"not a program" not in path.read_bytes()  # written anew, whole


def test_with_the_cache_off_nothing_is_kept(cache, small_params):
    jax.config.update("jax_enable_compilation_cache", False)  # the folder still named
    assert lowered_mod.folder() is None
    p = small_params
    assert same(lowered_mod.compiled(init_state, "init_state", p)(p), init_state(p))
    assert not cache.exists()
