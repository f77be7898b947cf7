"""Smaller copies of an index: chosen splits, at most K slices of a split, colour dropped.

For moving an index where space is short (a lent GPU machine, a laptop) or for a quick
experiment on part of a pool. Every dataset group keeps its attributes and log; the rows
kept are those of the chosen splits, in index order, the first K of a capped split.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from incontext.data.index_format import (
    PER_SLICE,
    SPLITS,
    IndexFormatError,
    decode_strings,
    open_h5,
    read_group_meta,
    temporary_output,
    write_root_attrs,
)

ROW_ARRAYS = (*PER_SLICE, "colour")


def subset_rows(split: np.ndarray, splits: Sequence[str],
                max_slices: Mapping[str, int]) -> np.ndarray:
    """Row numbers kept: every row of ``splits`` in index order, the first K of a capped split.

    split: (N,) split codes (0 train, 1 val, 2 test). Returns sorted (M,) int64.
    """
    keep = []
    for name in splits:
        rows = np.flatnonzero(split == SPLITS.index(name))
        if name in max_slices:
            rows = rows[:max_slices[name]]
        keep.append(rows)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def _check_options(splits: Sequence[str], max_slices: Mapping[str, int]) -> None:
    unknown = [s for s in [*splits, *max_slices] if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; splits are {', '.join(SPLITS)}")
    if not splits:
        raise ValueError("no split chosen")
    bad = {k: v for k, v in max_slices.items() if int(v) < 0}
    if bad:
        raise ValueError(f"slice caps must be 0 or more, got {bad}")
    outside = [k for k in max_slices if k not in splits]
    if outside:
        raise ValueError(f"slice cap for split(s) {outside} that are not kept")


def _copy_rows(src: h5py.Dataset, dst_group: h5py.Group, name: str, rows: np.ndarray) -> None:
    try:
        data = src[rows] if rows.size else np.zeros((0, *src.shape[1:]), src.dtype)
    except OSError as exc:  # a damaged chunk of the input
        raise IndexFormatError(f"{src.file.filename}: {src.name} cannot be read ({exc}); the "
                               "file is damaged (see `incontext index validate`)") from None
    kwargs = {}
    if src.chunks is not None and data.shape[0] > 0:
        kwargs = {"chunks": (1, *src.chunks[1:]) if src.ndim >= 3 else True,
                  "compression": src.compression, "compression_opts": src.compression_opts}
    out = dst_group.create_dataset(name, data=data, **kwargs)
    for key, value in src.attrs.items():
        out.attrs[key] = value


def subset_index(src: str | os.PathLike, out: str | os.PathLike, *,
                 splits: Sequence[str] = SPLITS, max_slices: Mapping[str, int] | None = None,
                 drop_colour: bool = False) -> Path:
    """Write a copy of index ``src`` to ``out`` (atomically) with fewer rows.

    ``splits``: the splits kept; ``max_slices``: split -> at most this many slices of it per
    dataset (the first in index order, so the same rows every time); ``drop_colour``: leave
    out the stored R, G, B (the grey images stay). Raises ``IndexFormatError`` naming the
    file when a dataset would be left without slices.
    """
    src, out = Path(src), Path(out)
    max_slices = dict(max_slices or {})
    _check_options(splits, max_slices)
    if out.exists() and out.resolve() == src.resolve():
        raise IndexFormatError(f"{out}: output is also the input")
    tmp = temporary_output(out)
    try:
        with open_h5(src) as fin, h5py.File(tmp, "w") as fout:
            write_root_attrs(fout)
            root = fout.create_group("datasets")
            for key in sorted(fin["datasets"]):
                _subset_group(src, fin["datasets"][key], root.create_group(key), splits,
                              max_slices, drop_colour)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _subset_group(path: Path, gin: h5py.Group, gout: h5py.Group, splits: Sequence[str],
                  max_slices: Mapping[str, int], drop_colour: bool) -> None:
    read_group_meta(path, gin)  # a malformed group fails here, naming the input
    rows = subset_rows(gin["split"][()], splits, max_slices)
    if rows.size == 0:
        raise IndexFormatError(f"{path}: dataset {gin.name.rsplit('/', 1)[-1]!r} has no slices "
                               f"in split(s) {', '.join(splits)} within the caps")
    for key, value in gin.attrs.items():
        gout.attrs[key] = value
    for name, ds in gin.items():
        if name == "colour" and drop_colour:
            continue
        if name in ROW_ARRAYS:
            _copy_rows(ds, gout, name, rows)
        else:
            gin.copy(ds, gout, name=name)
    if "n_subjects" in gout.attrs:
        gout.attrs["n_subjects"] = len(set(decode_strings(gout["subject"][()]).tolist()))
