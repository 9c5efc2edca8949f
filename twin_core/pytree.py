"""Frozen dataclasses registered as JAX pytrees (the jax-md / diffrax convention), and the
array type of their leaves.

Fields carry jaxtyping annotations with named dimensions (``Float[Array, "R C"]``):
R rack slots per CDU, C CDUs, G GPU elements per rack slot, J training jobs, P inference
pools, K failure slots, E equipment kinds; ``""`` is a scalar. ``#R`` also admits 1: a
property stored once for every rack. The test run checks them (jaxtyping's import hook,
``--jaxtyping-packages`` in pyproject.toml) whenever an instance is built, so the names
must agree within one instance.

JAX rebuilds instances itself with stand-ins for the arrays (``None`` and axis numbers in
``vmap`` specs, ``ShapeDtypeStruct`` in ``eval_shape``, variants stacked on a leading
axis): unflattening bypasses ``__init__``, so only the instances the model builds are
checked, and inside ``vmap`` those see one variant's shapes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeAlias, TypeVar, dataclass_transform, no_type_check

import jax
import numpy as np
from jax.tree_util import GetAttrKey

T = TypeVar("T")

# A leaf: a jax Array (a tracer under jit, vmap and grad) or, on the host, a NumPy array
# (``build_params(host=True)``, compress.py, batches stacked before one transfer).
Array: TypeAlias = jax.Array | np.ndarray


def static(default: Any = dataclasses.MISSING) -> Any:
    """A field that is part of the tree structure (shapes, flags), not a traced leaf."""
    return dataclasses.field(default=default, metadata={"static": True})


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field, static))
def pytree(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose non-static fields are pytree children."""
    dc: Any = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(dc)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))

    # JAX calls these on every flatten and unflatten: no_type_check keeps them out of the
    # test run's checks, which would otherwise wrap each call.
    @no_type_check
    def flatten_with_keys(obj):
        children = [(GetAttrKey(name), getattr(obj, name)) for name in data]
        return children, tuple(getattr(obj, name) for name in meta)

    @no_type_check
    def flatten(obj):
        return [getattr(obj, name) for name in data], tuple(getattr(obj, name) for name in meta)

    @no_type_check
    def unflatten(aux, children):
        return build(
            dc, **dict(zip(data, children, strict=True)), **dict(zip(meta, aux, strict=True))
        )

    jax.tree_util.register_pytree_with_keys(dc, flatten_with_keys, unflatten, flatten)
    return dc


@no_type_check
def build(cls, **fields):
    """An instance of a pytree class without ``__init__`` (so without the field checks):
    for JAX's own rebuilding and for ``vmap`` axis specs (``None``/``0`` leaves)."""
    obj = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj


def replace(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` with ``changes``, built (and checked) through ``__init__``."""
    dc: Any = obj
    return dataclasses.replace(dc, **changes)
