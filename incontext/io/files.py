"""File names, formats, query listing and atomic writes."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

from incontext.atomic import atomic_write as _atomic_write
from incontext.io.errors import ImageReadError, OutputExistsError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Files that commonly sit next to images and are skipped silently when listing a folder.
_IGNORED_SUFFIXES = (".json", ".txt", ".md", ".csv", ".yaml", ".yml", ".db", ".ini")


def file_kind(path: str | os.PathLike) -> str | None:
    """``"nifti"`` for .nii/.nii.gz, ``"raster"`` for 2D image formats, else None."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(IMAGE_SUFFIXES):
        return "raster"
    return None


def strip_image_suffix(name: str | os.PathLike) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one suffix)."""
    name = Path(name).name
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES + NIFTI_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def case_name(path: str | os.PathLike) -> str:
    """A file's case name: its stem without the image suffix and without nnU-Net's
    ``_0000`` channel suffix (how ``segment`` names outputs and ``evaluate`` pairs files)."""
    stem = strip_image_suffix(path)
    if stem.endswith("_0000") and len(stem) > 5:
        stem = stem[:-5]
    return stem


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def list_image_files(spec: str | os.PathLike, what: str = "query") -> list[Path]:
    """A file, a folder or a glob pattern -> sorted image files of one kind.

    Folders are listed non-recursively; hidden files and common side-car files
    (.json, .txt, ...) are skipped. Other unsupported files, and a mix of NIfTI and
    2D raster files, raise :class:`ImageReadError` naming the files.
    """
    spec_str = str(spec)
    path = Path(spec_str)
    if _has_glob(spec_str) and not path.exists():
        candidates = [Path(p) for p in sorted(glob.glob(spec_str)) if Path(p).is_file()]
        if not candidates:
            raise ImageReadError(f"{what} {spec_str}: the pattern matches no files")
        source = f"pattern {spec_str}"
    elif path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file()
                            and not p.name.startswith("."))
        candidates = [p for p in candidates if not p.name.lower().endswith(_IGNORED_SUFFIXES)]
        if not candidates:
            raise ImageReadError(f"{what} folder {path}: contains no image files")
        source = f"folder {path}"
    elif path.is_file():
        candidates = [path]
        source = str(path)
    else:
        raise ImageReadError(f"{what} {spec_str}: no such file, folder or matching pattern")
    unsupported = [p for p in candidates if file_kind(p) is None]
    if unsupported:
        raise ImageReadError(
            f"{what} {source}: unsupported file format: {unsupported[0]}"
            + (f" (and {len(unsupported) - 1} more)" if len(unsupported) > 1 else "")
            + f"; supported: {', '.join(IMAGE_SUFFIXES + NIFTI_SUFFIXES)}")
    kinds = {file_kind(p) for p in candidates}
    if len(kinds) > 1:
        nifti = next(p for p in candidates if file_kind(p) == "nifti")
        raster = next(p for p in candidates if file_kind(p) == "raster")
        raise ImageReadError(
            f"{what} {source}: mixed formats, NIfTI ({nifti.name}) and 2D images "
            f"({raster.name}); put them in separate folders and run once per kind")
    return candidates


def check_writable(path: Path, overwrite: bool) -> None:
    """Raise OutputExistsError if ``path`` is a folder, or exists and ``overwrite`` is False."""
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a folder, not a file; choose another output name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists already (use --overwrite to replace it)")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *,
                 overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (atomic on one filesystem;
    :func:`incontext.atomic.atomic_write`), never replacing an existing file unless
    ``overwrite``. The temporary file keeps ``path``'s suffix (writers pick the format
    from it).
    """
    path = Path(path)
    check_writable(path, overwrite)

    def write_then_check(tmp: Path) -> None:
        write(tmp)
        if not overwrite and path.exists():
            raise OutputExistsError(f"{path}: output appeared while writing; not replaced")

    return _atomic_write(path, write_then_check, keep_suffix=True)
