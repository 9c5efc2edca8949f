"""npm packages the tests need (buf, PGlite with TimescaleDB), installed on a clean clone."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ensure_installed(*paths: str) -> None:
    """Run `npm ci` once if any of ``paths`` (relative to node_modules) is missing; a file
    lock keeps pytest-xdist workers from installing at the same time. Skips without npm."""

    def present() -> bool:
        return all((ROOT / "node_modules" / p).exists() for p in paths)

    if present():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {', '.join(paths)}")
    lock = Path(tempfile.gettempdir()) / (
        "twin-npm-ci-" + hashlib.sha1(str(ROOT).encode()).hexdigest()[:12] + ".lock"
    )
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if not present():
                subprocess.run(
                    [npm, "ci", "--silent", "--no-audit", "--no-fund"],
                    cwd=ROOT,
                    check=True,
                    timeout=600,
                )
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    assert present(), f"npm ci did not install {', '.join(paths)}"
