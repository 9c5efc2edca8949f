"""The twin image for the container tests: built once per test session with `make image`'s
script (image/build.sh: buildah, a cached base and cached layers, so a rebuild after a code
change takes well under a minute), or skipped naming what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TAG = "localhost/ai-factory-twin:test"
TOOLS = ("buildah", "podman", "runc")


def tools_or_skip() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (make test installs them from Debian)")
    if os.geteuid() != 0:
        pytest.skip("buildah's chroot isolation and podman's runc runtime need root here")


def build_image(timeout_s: float = 1200) -> tuple[str, float]:
    """The image's tag and the build's wall time (s); the build's output on failure."""
    tools_or_skip()
    env = {**os.environ, "PYTHON": sys.executable, "IMAGE": TAG, "JAX_VARIANT": "cpu"}
    start = time.monotonic()
    result = subprocess.run(
        ["sh", str(ROOT / "image" / "build.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"image/build.sh failed:\n{(result.stdout + result.stderr)[-4000:]}")
    return TAG, time.monotonic() - start


def podman(*args: str, timeout_s: float = 120, check: bool = True) -> str:
    """`podman --runtime runc ARGS` (crun is refused on this kind of host); its stdout."""
    result = subprocess.run(
        ["podman", "--runtime", "runc", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed:\n{result.stderr[-3000:]}")
    return result.stdout
