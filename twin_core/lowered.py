"""Programs kept lowered on disk (``jax.export``), so that a warm start skips tracing and
lowering the model.

JAX's persistent compilation cache keeps compiled executables, but its key is the lowered
program: every process still traces and lowers the coupled model before it can look the
executable up, about 1 s of a warm ``twin simulate`` of Fairwater on a 2-core CPU. Here
the lowered program itself is kept, in ``lowered/`` beside the compilation cache, keyed
by everything that decides it: the function, the shapes, dtypes and tree structure of
its arguments, its static arguments, the model's source, JAX's version and the
precision. A warm start reads it back and compiles it, which the compilation cache turns
into a load. The results are bit-identical to the program traced afresh (tested).

With the compilation cache off (``TWIN_COMPILATION_CACHE_DIR=off``) nothing is kept; a
program that cannot be exported or a file that cannot be read back falls back to the
usual trace and lower, so this can only make a start faster.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)
FOLDER = "lowered"  # under the compilation cache's folder


def flag(name: str) -> Any:
    """A JAX configuration value (``jax.config.read`` refuses the context-manager ones)."""
    return getattr(jax.config, name)


@functools.cache
def source_digest() -> str:
    """SHA-256 of the model's source files: a changed model is a different program."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def folder() -> Path | None:
    """Where lowered programs are kept: beside the compilation cache, when it is on."""
    if not flag("jax_enable_compilation_cache"):
        return None
    cache = flag("jax_compilation_cache_dir")
    return Path(cache) / FOLDER if cache else None


def _key(name: str, tree: Any, leaves: list, static: dict[str, Any]) -> str:
    parts = [
        name,
        source_digest(),
        jax.__version__,
        importlib.metadata.version("jaxlib"),
        str(flag("jax_enable_x64")),
        jax.default_backend(),
        str(tree),
        repr(
            [
                (
                    np.shape(x),
                    str(getattr(x, "dtype", type(x))),
                    bool(getattr(x, "weak_type", False)),
                )
                for x in leaves
            ]
        ),
        repr(sorted(static.items())),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def compiled(jitted: Any, name: str, *args: Any, **static: Any) -> Callable[..., Any]:
    """``jitted`` compiled for ``args`` (its static arguments by keyword), as a function of
    the same (non-static) arguments; lowered from the kept program when there is one."""
    where = folder()
    if where is None:
        return jitted.lower(*args, **static).compile()
    leaves, tree = jax.tree.flatten(args)
    path = where / f"{name}-{_key(name, tree, leaves, static)}.bin"
    try:
        exported, out_tree = _read(path)
    except FileNotFoundError:
        exported = out_tree = None
    except Exception as exc:  # a damaged or foreign file: lower afresh
        log.warning("%s: unreadable (%s), lowering the program again", path, exc)
        exported = out_tree = None
    if exported is None:
        try:
            exported, out_tree = _export(jitted, tree, leaves, static)
            _write(path, exported, out_tree)
        except Exception as exc:  # not exportable: the usual way
            log.warning("%s: not kept lowered (%s)", name, exc)
            return jitted.lower(*args, **static).compile()
    program = jax.jit(exported.call).lower(*leaves).compile()

    def call(*call_args: Any) -> Any:
        return jax.tree.unflatten(out_tree, program(*jax.tree.leaves(call_args)))

    return call


def _export(jitted: Any, tree: Any, leaves: list, static: dict[str, Any]):
    """``jitted`` exported as a function of its argument leaves (exported programs keep
    only tree structures of JAX's own containers), and its output's tree structure."""
    out_tree: list = []

    def flat(*xs):
        out = jitted(*jax.tree.unflatten(tree, xs), **static)
        flat_out, structure = jax.tree.flatten(out)
        out_tree.append(structure)
        return flat_out

    exported = jax.export.export(jax.jit(flat))(*leaves)
    return exported, out_tree[0]


def _read(path: Path):
    # The output's tree structure is pickled: the folder is trusted as the compilation
    # cache beside it is, whose executables JAX loads and runs as they are.
    blob = path.read_bytes()
    size = int.from_bytes(blob[:8], "little")
    return jax.export.deserialize(bytearray(blob[8 : 8 + size])), pickle.loads(blob[8 + size :])


def _write(path: Path, exported: Any, out_tree: Any) -> None:
    """Written whole or not at all: a process reading it never sees half a file."""
    program = bytes(exported.serialize())
    blob = len(program).to_bytes(8, "little") + program + pickle.dumps(out_tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
