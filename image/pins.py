"""Print the image's Python requirements pinned to the versions installed here.

The image installs the project's runtime dependencies (pyproject.toml, and its dask extra) offline
from wheels downloaded on this machine; pinning them to this environment's versions makes the
containers run the very releases the tests run (the distributed history is compared
bit for bit with the monolithic rollout of this process).
Usage: python image/pins.py > image/wheels/constraints.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wanted(req: Requirement, extras: frozenset[str]) -> bool:
    envs = [{"extra": e} for e in extras] or [{"extra": ""}]
    return req.marker is None or any(req.marker.evaluate(env) for env in envs)


def closure(requirements: list[str]) -> dict[str, str]:
    """name -> installed version for every requirement, transitively, with environment
    markers evaluated for this interpreter and the requirements' extras followed."""
    pins: dict[str, str] = {}
    todo = [Requirement(line) for line in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req = todo.pop()
        key = (_key(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        pins[key[0]] = dist.version
        for line in dist.requires or ():
            sub = Requirement(line)
            if _wanted(sub, key[1]):
                todo.append(sub)
    return pins


def main() -> None:
    try:
        project = tomllib.loads(PYPROJECT.read_text())["project"]
        # the dask extra too: the what-if service runs studies on the chart's study workers
        runtime = [*project["dependencies"], *project["optional-dependencies"]["dask"]]
        pins = closure(runtime)
    except metadata.PackageNotFoundError as exc:
        sys.exit(f"image/pins.py: {exc.name} is not installed in {sys.prefix}")
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
