"""Atomic file output: write to a temporary file beside the target, then rename.

A crash or Ctrl-C while writing leaves the previous file (or no file) in place,
never a half-written one. :func:`check_output_folder` tells, before any work, whether
files can be written where a command was asked to put them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class OutputFolderError(ValueError):
    """An output folder that cannot be created or written to; the message names it."""


def check_output_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path if files can be written in it; else OutputFolderError.

    A missing folder is fine when its nearest existing parent is a writable folder (the
    writers create it later); nothing is created here. Writability is tested by creating
    and removing a temporary file, so read-only mounts are caught too.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            raise OutputFolderError(f"{folder}: is a file, not a folder")
        raise OutputFolderError(f"{folder}: cannot be created, {existing} is a file")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".incontext-write-check.")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if existing == folder:
            raise OutputFolderError(f"{folder}: output folder is not writable ({reason})") from None
        raise OutputFolderError(f"{folder}: output folder cannot be created in {existing} "
                                f"({reason})") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None],
                 keep_suffix: bool = False) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` and rename it to ``path``.

    ``keep_suffix`` gives the temporary file ``path``'s suffix (for writers that pick
    the format from it). The file gets the permissions of the file it replaces, else the
    usual ones (umask), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp"
    if keep_suffix:
        suffix += ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
