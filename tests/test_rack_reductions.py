"""Per-CDU reductions written slot by slot (compute.fold_racks) give XLA's results."""

import jax
import jax.numpy as jnp
import numpy as np

from twin_core.compute import FOLD_ROWS, fold_racks


def test_fold_racks_matches_xla_sum_and_max_bit_for_bit():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(12, 240)) * 1e5, jnp.float32)
    summed = jax.jit(fold_racks)(x)
    peak = jax.jit(lambda a: fold_racks(a, jnp.maximum))(x)
    assert summed.shape == (240,)
    # the same additions in the same order: identical, not merely close
    np.testing.assert_array_equal(
        np.asarray(summed), np.asarray(jax.jit(jnp.sum, static_argnums=1)(x, 0))
    )
    np.testing.assert_array_equal(np.asarray(peak), np.asarray(x).max(axis=0))


def test_fold_racks_by_hand_and_past_the_unrolled_limit():
    x = jnp.asarray([[1.0, -2.0], [3.0, 5.0], [-4.0, 0.5]])
    np.testing.assert_array_equal(np.asarray(fold_racks(x)), [0.0, 3.5])
    np.testing.assert_array_equal(np.asarray(fold_racks(x, jnp.maximum)), [3.0, 5.0])
    tall = jnp.ones((FOLD_ROWS + 1, 3))
    np.testing.assert_array_equal(np.asarray(fold_racks(tall)), [FOLD_ROWS + 1.0] * 3)
    np.testing.assert_array_equal(np.asarray(fold_racks(-tall, jnp.maximum)), [-1.0] * 3)


def test_of_racks_gives_each_rack_its_workloads_entry_bit_for_bit():
    """The one-hot contraction equals the gather it replaces, under jit and vmap, and a rack
    whose workload is past the vector (idle, for a vector of the jobs) gets exactly 0."""
    from twin_core.compute import of_racks

    rng = np.random.default_rng(3)
    index = rng.integers(0, 5, size=(12, 240)).astype(np.int32)
    w = jnp.asarray(index)
    values = jnp.asarray([0.3, -1.7e-9, 4.2e7, 0.9999999, 1.0], jnp.float32)
    per_rack = jax.jit(lambda v: of_racks(w, v))(values)
    assert per_rack.dtype == jnp.float32 and per_rack.shape == (12, 240)
    np.testing.assert_array_equal(np.asarray(per_rack), np.asarray(values)[index])
    batch = jnp.stack([values, values * 3.0])
    batched = jax.jit(jax.vmap(lambda v: of_racks(w, v)))(batch)
    np.testing.assert_array_equal(np.asarray(batched), np.asarray(batch)[:, index])
    jobs_only = of_racks(w, values[:2])  # racks on workloads 2-4 are past it
    np.testing.assert_array_equal(np.asarray(jobs_only), np.where(index < 2, values[index], 0.0))
