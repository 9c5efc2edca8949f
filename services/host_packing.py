"""A pytree's leaves passed between the host and a compiled function as one flat array
per dtype.

A compiled step that returns dozens of small arrays costs a host copy per leaf (a few
microseconds each), which is a large share of a bus tick when the step itself takes tens
of microseconds. Packing the leaves inside the compiled function into one array per
dtype makes it one copy per dtype; the host then cuts each leaf out as a view.

The same holds for arguments: each leaf of a compiled function's arguments is flattened,
checked and handed over on every call (about half a microsecond each; a domain's
parameters have over a hundred). Packed on the host once per set of values, they are one
argument per dtype, cut into the leaves again inside the function by static slices,
which XLA fuses into their readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class HostPacking:
    """Where each leaf of a pytree of a given structure lies in the packed arrays."""

    treedef: Any
    dtypes: tuple[np.dtype, ...]  # one packed array per dtype, in this order
    places: tuple[tuple[int, int, int, tuple[int, ...]], ...]  # (array, start, size, shape)

    @classmethod
    def of(cls, shapes: Any) -> HostPacking:
        """The packing of trees shaped like ``shapes`` (e.g. from ``jax.eval_shape``)."""
        leaves, treedef = jax.tree.flatten(shapes)
        dtypes: list[np.dtype] = []
        filled: list[int] = []
        places = []
        for leaf in leaves:
            dtype = np.dtype(leaf.dtype)
            if dtype not in dtypes:
                dtypes.append(dtype)
                filled.append(0)
            group = dtypes.index(dtype)
            size = int(np.prod(leaf.shape, dtype=np.int64))
            places.append((group, filled[group], size, tuple(leaf.shape)))
            filled[group] += size
        return cls(treedef, tuple(dtypes), tuple(places))

    def pack(self, tree: Any) -> tuple[jax.Array, ...]:
        """Inside a compiled function: the leaves, raveled and joined per dtype."""
        leaves = self.treedef.flatten_up_to(tree)
        groups: list[list[jax.Array]] = [[] for _ in self.dtypes]
        for leaf, (group, *_) in zip(leaves, self.places, strict=True):
            groups[group].append(jnp.ravel(leaf))
        return tuple(jnp.concatenate(parts) for parts in groups)  # every dtype has a leaf

    def unpack(self, packed: tuple[Any, ...]) -> Any:
        """On the host: the tree again, each leaf a view into its packed array's copy."""
        return self.unpack_inside(tuple(np.asarray(array) for array in packed))

    def pack_on_host(self, tree: Any) -> tuple[np.ndarray, ...]:
        """On the host: the leaves, raveled and joined per dtype (``unpack_inside`` cuts
        them out again). Raises ValueError naming the leaf whose shape is not the
        packing's."""
        leaves = self.treedef.flatten_up_to(tree)
        groups: list[list[np.ndarray]] = [[] for _ in self.dtypes]
        for i, (leaf, (group, _, _, shape)) in enumerate(zip(leaves, self.places, strict=True)):
            array = np.asarray(leaf, self.dtypes[group])
            if array.shape != shape:
                raise ValueError(f"leaf {i}: shape {array.shape} is not the packing's {shape}")
            groups[group].append(array.ravel())
        return tuple(np.concatenate(parts) for parts in groups)

    def unpack_inside(self, packed: tuple[Any, ...]) -> Any:
        """The tree again from packed arrays: inside a compiled function from
        ``pack_on_host``'s, or on the host (``unpack``) as views."""
        leaves = [
            packed[group][start : start + size].reshape(shape)
            for group, start, size, shape in self.places
        ]
        return self.treedef.unflatten(leaves)
