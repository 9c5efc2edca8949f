"""The CLI's optional features: a command whose extra is not installed (the container
image has none) says which extra it lacks, in one line."""

from __future__ import annotations

import pytest
import typer

from services.cli import extras


def test_a_missing_module_names_its_extra(capsys) -> None:
    with pytest.raises(typer.Exit) as exit_info:
        extras.need("no_such_module_xyz", "plot", "--png")
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err
    assert " ".join(err.split()) == (
        "error: --png needs no_such_module_xyz, not installed: pip install 'ai-factory-twin[plot]'"
    )


def test_an_installed_module_passes() -> None:
    assert extras.installed("yaml") and not extras.installed("no_such_module_xyz")
    extras.need("yaml", "plot", "--png")  # returns: nothing to report
