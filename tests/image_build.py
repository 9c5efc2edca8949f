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


# `make test` sets EARLY: the build starts in the background with the session (the
# controller's configure), overlapping the other tests, instead of when the container
# tests' turn comes; STARTED tells the workers where its result will be.
EARLY, STARTED = "TWIN_IMAGE_BUILD_EARLY", "TWIN_IMAGE_BUILD_STATE"


def _build_env() -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "IMAGE": TAG, "JAX_VARIANT": "cpu"}


def start_early(state: Path) -> None:
    """Starts image/build.sh in the background when EARLY is set and the tools are here;
    its output goes to ``state``/log, its exit status to ``state``/rc when it ends."""
    usable = all(shutil.which(tool) for tool in TOOLS) and os.geteuid() == 0
    if os.environ.get(EARLY) != "1" or not usable:
        return
    state.mkdir(parents=True, exist_ok=True)
    for name in ("rc", "log"):
        (state / name).unlink(missing_ok=True)
    (state / "started").write_text(f"{time.time()}\n")
    script = 'sh image/build.sh > "$0/log" 2>&1; echo $? > "$0/rc.tmp"; mv "$0/rc.tmp" "$0/rc"'
    subprocess.Popen(
        ["sh", "-c", script, str(state)], cwd=ROOT, env=_build_env(), start_new_session=True
    )
    os.environ[STARTED] = str(state)


def _wait_for_early(state: Path, timeout_s: float) -> float:
    """The early build's wall time, once it has ended; its output on failure."""
    deadline = time.monotonic() + timeout_s
    while not (state / "rc").exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"image/build.sh still running after {timeout_s:.0f} s")
        time.sleep(1.0)
    started = float((state / "started").read_text())
    if (state / "rc").read_text().strip() != "0":
        log = (state / "log").read_text(errors="replace")
        raise AssertionError(f"image/build.sh failed:\n{log[-4000:]}")
    return (state / "rc").stat().st_mtime - started


def build_image(timeout_s: float = 1200) -> tuple[str, float]:
    """The image's tag and the build's wall time (s); the build's output on failure."""
    tools_or_skip()
    if state := os.environ.get(STARTED):
        return TAG, _wait_for_early(Path(state), timeout_s)
    start = time.monotonic()
    result = subprocess.run(
        ["sh", str(ROOT / "image" / "build.sh")],
        cwd=ROOT,
        env=_build_env(),
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
