"""The one way the CLI writes files: whole or not at all. Each file is written to a temp
file beside it and renamed over it only once it is complete, so a failed run, export or
plot never leaves a partial file (or a stray temp file) behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

# What a file holds: bytes, text (UTF-8), or a callback that writes into the open file.
Content = bytes | str | Callable[[BinaryIO], object]


def write_atomic(path: Path, content: Content) -> int:
    """Replace ``path`` with ``content``; returns its size in bytes. Its folder must exist."""
    return write_all_atomic({path: content})[path]


def write_all_atomic(files: Mapping[Path, Content], make_dirs: bool = False) -> dict[Path, int]:
    """Write every file, then rename them all into place: when one fails (an exception in
    a callback included), none is replaced and the temp files are removed. With
    ``make_dirs``, missing folders are created, and removed again on failure. Returns the
    size of each file."""
    created = _make_dirs({path.parent for path in files}) if make_dirs else []
    staged: dict[Path, str] = {}
    sizes: dict[Path, int] = {}
    done = False
    try:
        for path, content in files.items():
            staged[path], sizes[path] = _write_temp(path, content)
        for path, tmp in staged.items():
            os.replace(tmp, path)
        done = True
    finally:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        if not done:
            _remove_empty(created)
    return sizes


def _write_temp(path: Path, content: Content) -> tuple[str, int]:
    """A complete, synced temp file beside ``path`` (same file system, so the rename is
    atomic) with a normal file's mode; returns its name and size."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode())
            elif isinstance(content, bytes):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp, size


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):  # deepest first; only those left empty
        with contextlib.suppress(OSError):
            folder.rmdir()


def _make_dirs(folders: set[Path]) -> list[Path]:
    """Create the missing ``folders`` (and their parents); the ones created, outermost first."""
    created: list[Path] = []
    for folder in sorted(folders):
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for p in reversed(missing):
            p.mkdir(exist_ok=True)
            created.append(p)
    return created
