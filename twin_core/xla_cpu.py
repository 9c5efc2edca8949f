"""XLA's CPU code generation: 512-bit vectors where the CPU has them.

XLA compiles for 256-bit vectors by default, even on a CPU with AVX-512 (older Intel
parts lowered their clock on wide instructions). The model's per-rack work is long runs
of elementwise arithmetic over the racks, and on the AVX-512 CPUs this project is
measured on, 512-bit vectors make Fairwater's every-rack step about a third faster
(bench/model.py; README "Benchmarks"). On a CPU without AVX-512 the preference has no
effect, and accelerators do not read it.

The option travels in ``XLA_FLAGS``, which XLA reads once, when JAX first starts its CPU
backend: it is set when ``twin_core`` is imported (before anything is compiled) and is
inherited by every process the twin starts, so they all compile alike. A width already
in ``XLA_FLAGS`` is kept: ``--xla_cpu_prefer_vector_width=256`` restores XLA's default.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OPTION = "--xla_cpu_prefer_vector_width"
WIDTH_BITS = 512


def prefer_wide_vectors(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add the vector-width option to ``XLA_FLAGS`` unless one is there already."""
    flags = environ.get("XLA_FLAGS", "")
    if OPTION not in flags:
        environ["XLA_FLAGS"] = f"{flags} {OPTION}={WIDTH_BITS}".strip()
