"""computed_once: fn's values, computed in one conditional XLA does not fuse across;
differentiated and vmapped it is fn itself."""

import jax
import jax.numpy as jnp
import numpy as np

from twin_core.fusion import computed_once


def chain(a, b):
    x = a
    for _ in range(20):
        x = jnp.maximum(x * 1.01 + b, a - 0.5)
    return x, x * 2.0


def read_thrice(a, b, once=True):
    x, y = computed_once(chain, a, b) if once else chain(a, b)
    return x + 1.0, y * 3.0, x * y


def fused(a, b):
    return read_thrice(a, b, once=False)


A = jnp.linspace(-1.0, 1.0, 800, dtype=jnp.float32).reshape(8, 100)
B = jnp.linspace(0.0, 1.0, 800, dtype=jnp.float32).reshape(8, 100)


def compiled_text(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text() or ""


def test_the_chain_is_one_conditional_read_by_the_kernels_not_copied_into_each():
    once, copied = compiled_text(read_thrice, A[0], B[0]), compiled_text(fused, A[0], B[0])
    assert once.count("conditional(") == 1 and "conditional(" not in copied
    # Fused, the chain's 20 maxima are copied into each of the 3 kernels that read it; once,
    # they are in the conditional's two (identical) branches, one of which runs.
    assert copied.count(" maximum(") == 3 * 20
    assert once.count(" maximum(") == 2 * 20


def test_values_are_the_chains_to_rounding_and_gradients_and_vmap_exactly():
    got, want = jax.jit(read_thrice)(A[0], B[0]), jax.jit(fused)(A[0], B[0])
    for g, w in zip(got, want, strict=True):  # fused kernels may contract a*b+c into an FMA
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-6, atol=1e-6)

    def loss(a, b, once):
        return jnp.sum(read_thrice(a, b, once)[2])

    grads = jax.grad(loss, argnums=(0, 1))(A[0], B[0], True)
    plain = jax.grad(loss, argnums=(0, 1))(A[0], B[0], False)
    for g, w in zip(grads, plain, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    batched, plain_batched = jax.jit(jax.vmap(read_thrice))(A, B), jax.jit(jax.vmap(fused))(A, B)
    for g, w in zip(batched, plain_batched, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
