"""A pytree packed per dtype inside a compiled function comes back leaf for leaf."""

import jax
import jax.numpy as jnp
import numpy as np

from services.host_packing import HostPacking


def test_a_tree_of_mixed_dtypes_and_shapes_comes_back_exactly_in_one_array_per_dtype():
    tree = {
        "racks": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) / 7,
        "meter": jnp.float32(3.5),
        "step": jnp.int32(41),
        "open": jnp.array([True, False]),
        "nested": (jnp.full((1, 2, 2), -0.25, jnp.float32), jnp.zeros(0, jnp.float32)),
    }
    packing = HostPacking.of(jax.eval_shape(lambda: tree))
    packed = jax.jit(packing.pack)(tree)
    assert [(a.dtype, a.shape) for a in packed] == [
        (jnp.float32, (6 + 1 + 4 + 0,)),
        (jnp.bool_, (2,)),
        (jnp.int32, (1,)),
    ]  # dtypes in the order the flattened tree first meets them
    back = packing.unpack(packed)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(tree), strict=True):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, np.asarray(want))
