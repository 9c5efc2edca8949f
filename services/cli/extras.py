"""The CLI's optional features and the extra that installs each (pyproject.toml's
[project.optional-dependencies]): the container image carries no extra, so a command there
says which one it lacks instead of failing on an import."""

from __future__ import annotations

import importlib.util

from services.cli.errors import fail


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def need(module: str, extra: str, what: str) -> None:
    """Exit with one line naming the extra when ``module`` is not installed."""
    if not installed(module):
        fail(f"{what} needs {module}, not installed: pip install 'ai-factory-twin[{extra}]'")
