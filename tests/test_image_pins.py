"""image/pins.py: the image's requirements pinned to this environment, transitively, and
without the extras no service uses."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from importlib import metadata

from conftest import ROOT

# image/ is build tooling, no package: load the script as a module.
_spec = importlib.util.spec_from_file_location("pins", ROOT / "image" / "pins.py")
assert _spec is not None and _spec.loader is not None
pins_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pins_module)
closure = pins_module.closure


def test_closure_follows_requirements_and_their_extras() -> None:
    pins = closure(["psycopg[binary]>=3.2"])
    # psycopg needs typing-extensions; its [binary] extra adds psycopg-binary.
    assert pins["psycopg"] == metadata.version("psycopg")
    assert pins["psycopg-binary"] == metadata.version("psycopg-binary")
    assert "typing-extensions" in pins
    assert "psycopg-binary" not in closure(["psycopg>=3.2"])


def test_the_image_pins_carry_the_dask_extra_and_no_other() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "image" / "pins.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {line.split("==")[0] for line in out.splitlines()}
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert len(runtime) > 20 and {"jax", "jaxlib", "grpcio", "pyarrow"} <= names
    assert {"dask", "distributed"} <= names  # the what-if service's study workers
    assert not names & {"matplotlib", "kubernetes", "pytest"}
