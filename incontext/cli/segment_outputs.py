"""``incontext segment``'s output files: label maps, overlays and uncertainty maps.

2D queries get a PNG label map, NIfTI queries a NIfTI on the query's exact grid (and a
PNG for 2D NIfTI); ``--overlays`` and ``--uncertainty`` add PNG previews (three
orthogonal slices for volumes) and, for NIfTI, the uncertainty volume.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from incontext.cli import CLIError
from incontext.io import LoadedImage, file_kind, write_nifti_like, write_png
from incontext.io.files import case_name

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212]], dtype=np.float32)


def output_stem(query: Path) -> str:
    """Output name stem: the query's case name (:func:`incontext.io.files.case_name`: the
    nnU-Net ``_0000`` channel suffix removed, NIfTI and 2D images alike, as nnU-Net names
    its predictions)."""
    return case_name(query)


def planned_outputs(query: Path, out: Path, ndim: int, args: argparse.Namespace) -> list[Path]:
    stem = output_stem(query)
    nifti = file_kind(query) == "nifti"
    paths = []
    if nifti:
        paths.append(out / f"{stem}.nii.gz")
    if ndim == 2:
        paths.append(out / f"{stem}.png")
    if args.overlays:
        paths.append(out / f"{stem}_overlay.png")
    if args.uncertainty:
        paths.append(out / f"{stem}_uncertainty.png")
        if nifti:
            paths.append(out / f"{stem}_uncertainty.nii.gz")
    return paths


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.rint(scaled * 255).astype(np.uint8)


def overlay_rgb(image: np.ndarray, mask: np.ndarray, labels: Sequence[int],
                alpha: float = 0.45) -> np.ndarray:
    """Grey image (any range) + label map -> (H, W, 3) uint8 with coloured labels."""
    grey = _to_uint8(image).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for i, value in enumerate(labels):
        sel = mask == value
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * PALETTE[i % len(PALETTE)]
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def _centre(mask: np.ndarray) -> np.ndarray:
    fg = np.argwhere(mask != 0)
    return fg.mean(axis=0).round().astype(int) if fg.size else np.array(mask.shape) // 2


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    extra = ((0, 0),) if panels[0].ndim == 3 else ()
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 2), *extra))
                           for p in panels], axis=1)


def _volume_overlay(volume: np.ndarray, mask: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Three orthogonal slices through the foreground centre (volume centre if empty)."""
    centre = _centre(mask)
    grey = _to_uint8(volume)
    return _side_by_side([overlay_rgb(np.take(grey, centre[a], axis=a),
                                      np.take(mask, centre[a], axis=a), labels)
                          for a in range(3)])


def _uncertainty_png(unc: np.ndarray) -> np.ndarray:
    """(L, ...) std in [0, 0.5] -> uint8 (255 = 0.5, the largest possible), max over labels."""
    top = unc.max(axis=0) if unc.shape[0] else np.zeros(unc.shape[1:])
    return np.rint(np.clip(top / 0.5, 0, 1) * 255).astype(np.uint8)


def label_dtype(labels: Sequence[int]) -> type:
    """The smallest unsigned type for label maps holding ``labels`` (PNG: 8 or 16 bit)."""
    top = max(labels)
    return np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32


def check_label_range(labels: Sequence[int], ndim: int) -> None:
    """CLIError before any work when ``labels`` cannot be stored in the output files."""
    if min(labels) < 0:
        raise CLIError(f"label values must be >= 0, got {min(labels)} (0 is background)")
    if ndim == 2 and max(labels) > 65535:
        raise CLIError(f"label value {max(labels)} does not fit a PNG label map (at most "
                       "65535); choose smaller values with --labels or relabel the supports")


def write_outputs(query: LoadedImage, mask: np.ndarray, uncertainty: np.ndarray,
                  labels: list[int], out: Path, args: argparse.Namespace) -> None:
    stem = output_stem(query.path)
    ow = args.overwrite
    nii = query.nifti
    dtype = label_dtype(labels)
    if nii is not None:
        write_nifti_like(out / f"{stem}.nii.gz", mask.reshape(nii.data.shape), nii, dtype=dtype,
                         overwrite=ow)
    if query.ndim == 2:
        write_png(out / f"{stem}.png", mask.astype(dtype), overwrite=ow)
    if args.overlays:
        rgb = (overlay_rgb(query.data, mask, labels) if query.ndim == 2
               else _volume_overlay(query.data, mask, labels))
        write_png(out / f"{stem}_overlay.png", rgb, overwrite=ow)
    if args.uncertainty:
        if query.ndim == 2:
            write_png(out / f"{stem}_uncertainty.png", _uncertainty_png(uncertainty),
                      overwrite=ow)
        else:
            unc8, centre = _uncertainty_png(uncertainty), _centre(mask)
            write_png(out / f"{stem}_uncertainty.png",
                      _side_by_side([np.take(unc8, centre[a], axis=a) for a in range(3)]),
                      overwrite=ow)
        if nii is not None:
            data = uncertainty[0] if len(labels) == 1 else np.moveaxis(uncertainty, 0, -1)
            shape = nii.data.shape + (() if len(labels) == 1 else (len(labels),))
            write_nifti_like(out / f"{stem}_uncertainty.nii.gz",
                             data.reshape(shape).astype(np.float32), nii, dtype=np.float32,
                             overwrite=ow)
