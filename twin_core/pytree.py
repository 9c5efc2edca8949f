"""Frozen dataclasses registered as JAX pytrees (the jax-md / diffrax convention)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax

T = TypeVar("T")


def static(default: Any = dataclasses.MISSING) -> Any:
    """A field that is part of the tree structure (shapes, flags), not a traced leaf."""
    return dataclasses.field(default=default, metadata={"static": True})


def pytree(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose non-static fields are pytree children."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    return jax.tree_util.register_dataclass(cls)


def replace(obj: T, **changes: Any) -> T:
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]
