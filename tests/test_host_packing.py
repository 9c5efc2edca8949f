"""A pytree packed per dtype inside a compiled function comes back leaf for leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_arguments_packed_on_the_host_are_cut_back_into_the_tree_inside_the_function():
    tree = {
        "ua": np.linspace(0.5, 3.0, 6, dtype=np.float32).reshape(3, 2),
        "dt": np.float32(0.25),
        "kind": np.array([2, 0, 7], np.int32),
    }
    packing = HostPacking.of(jax.eval_shape(lambda: tree))
    packed = packing.pack_on_host(tree)
    assert [(a.dtype, a.shape) for a in packed] == [(np.float32, (7,)), (np.int32, (3,))]
    inside = jax.jit(lambda pp: packing.unpack_inside(pp))(packed)
    assert jax.tree.structure(inside) == jax.tree.structure(tree)
    for got, want in zip(jax.tree.leaves(inside), jax.tree.leaves(tree), strict=True):
        assert got.dtype == want.dtype and got.shape == np.shape(want)
        np.testing.assert_array_equal(np.asarray(got), want)
    # a function of the packed arguments computes what it does of the tree
    total = jax.jit(lambda pp: jnp.sum(packing.unpack_inside(pp)["ua"]) * 2)(packed)
    assert float(total) == float(np.sum(tree["ua"]) * 2)


def test_packing_on_the_host_rounds_to_the_packings_dtype_and_names_a_leaf_of_another_shape():
    packing = HostPacking.of({"a": jax.ShapeDtypeStruct((2,), jnp.float32)})
    (packed,) = packing.pack_on_host({"a": np.array([0.1, 1 / 3])})  # float64 in
    assert packed.dtype == np.float32
    np.testing.assert_array_equal(packed, np.array([0.1, 1 / 3], np.float32))
    with pytest.raises(ValueError) as err:
        packing.pack_on_host({"a": np.zeros(3)})
    assert str(err.value) == "leaf 0: shape (3,) is not the packing's (2,)"
