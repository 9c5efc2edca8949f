"""JAX's persistent compilation cache, shared by every process of the twin on a host.

Compiling the coupled model takes seconds per program (the rollout, the initial state,
each domain's step); the cache keeps the compiled executables on disk, keyed by the
program, its shapes and the JAX/XLA version, so a second ``twin simulate`` of the same
layout, or the four domain services of ``twin up``, load them instead of compiling.

``TWIN_COMPILATION_CACHE_DIR`` names the folder (``RuntimeConfig.compilation_cache_dir``);
unset or empty: ``$XDG_CACHE_HOME/ai-factory-twin/jax`` (``~/.cache/...``); ``off``: no
cache. A folder that was asked for and cannot be used stops the process with one line
naming the variable; the default one that cannot be made (a read-only home in a
container) only turns the cache off.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from services.runtime.config import ConfigError

VARIABLE = "TWIN_COMPILATION_CACHE_DIR"
OFF = "off"

log = logging.getLogger(__name__)


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "ai-factory-twin" / "jax"


def resolve(setting: str | None) -> Path | None:
    """The folder a setting names (``None`` or blank: the default; ``off``: none)."""
    if setting is None or not setting.strip():
        return default_dir()
    if setting.strip().lower() == OFF:
        return None
    return Path(setting.strip()).expanduser()


def _usable(path: Path) -> str | None:
    """Why ``path`` cannot hold the cache (made here if missing), or None."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"{str(path)!r} is not a folder"
    except OSError as exc:
        return f"cannot create {str(path)!r}: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{str(path)!r} is not writable"
    return None


def enable(setting: str | None) -> Path | None:
    """Point JAX's persistent cache at the folder ``setting`` names, before anything is
    compiled; returns the folder, or None when the cache is off. Every executable is
    written, however quick its compile: the small ones are loaded faster than compiled
    too. Raises ConfigError naming the variable when an asked-for folder is unusable."""
    import jax

    path = resolve(setting)
    if path is not None and (problem := _usable(path)) is not None:
        if setting is not None and setting.strip():
            raise ConfigError(VARIABLE, problem)
        log.warning("compilation cache off: %s (set %s)", problem, VARIABLE)
        path = None
    if path is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path
