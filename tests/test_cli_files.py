"""The CLI's one atomic writer (services/cli/files.py): whole files or none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.cli.files import write_all_atomic, write_atomic


def test_a_file_is_replaced_whole_with_a_normal_mode(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text("old")
    assert write_atomic(path, "new ✓") == len("new ✓".encode())
    assert path.read_text() == "new ✓"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp left


def test_a_failing_writer_replaces_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    kept = tmp_path / "a.csv"
    kept.write_bytes(b"kept")

    def fail(f) -> None:
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_all_atomic({kept: b"replaced", tmp_path / "b.png": fail})
    assert kept.read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_folders_made_for_a_failed_write_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "out" / "deep" / "x.parquet"

    def fail(f) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_all_atomic({target: fail}, make_dirs=True)
    assert list(tmp_path.iterdir()) == []
    sizes = write_all_atomic({target: b"1234"}, make_dirs=True)
    assert sizes == {target: 4} and target.read_bytes() == b"1234"
