"""Keeping XLA from copying a computation into every kernel that reads it.

XLA fuses a cheap elementwise producer into each of its consumers, so a chain of dozens
of operations whose results are read by several kernels is computed once per kernel. On a
CPU that is a large share of Fairwater's every-rack step: the rack power-smoothing chain
(about 60 operations per rack) was redone in six kernels. XLA's CPU pipeline drops
``optimization_barrier`` before fusing, but it does not fuse across a conditional, so
``computed_once`` puts the computation in one. Both branches are the same function, so
the predicate (the first element of the first argument compared with itself, which XLA
cannot fold) decides nothing: the results are those of ``fn`` whatever it is.

Under ``vmap`` with batched arguments JAX turns the conditional into a select of the two
branches; XLA merges the identical branches and the computation is fused as before (a few
selects more). Gradients go through ``fn`` itself (the conditional's own derivative
recomputes the chain many times over).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def computed_once(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, its results stored once for all the kernels that read them."""

    @jax.custom_jvp
    def once(*args: Any) -> Any:
        first = jnp.ravel(jax.tree.leaves(args)[0])[0]
        return jax.lax.cond(first == first, fn, fn, *args)

    @once.defjvp
    def _(primals: tuple, tangents: tuple) -> tuple[Any, Any]:
        return jax.jvp(fn, primals, tangents)

    return once(*args)
