"""Post-processing of label maps (2D or 3D), one label at a time.

* :func:`remove_small_components`: drop connected components under ``min_size`` pixels/voxels;
* :func:`keep_largest_component`: keep only the largest connected component of each label;
* :func:`fill_holes`: fill background holes enclosed by a label (never overwrites another label).

Connectivity is face-connectivity (4 in 2D, 6 in 3D) by default; ``full=True`` uses
8 / 26. Removed voxels become background (0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def _structure(ndim: int, full: bool) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, ndim if full else 1)


def _labels_of(mask: np.ndarray, labels: Sequence[int] | None) -> list[int]:
    if labels is not None:
        return [int(v) for v in labels if v != 0]
    return [int(v) for v in np.unique(mask) if v != 0]


def _check(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"post-processing expects a 2D or 3D label map, got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise ValueError(f"post-processing expects an integer label map, got {mask.dtype}")
    return mask


def remove_small_components(mask: np.ndarray, min_size: int, *,
                            labels: Sequence[int] | None = None, full: bool = False) -> np.ndarray:
    """Set components smaller than ``min_size`` elements to background (per label)."""
    mask = _check(mask).copy()
    if min_size <= 1:
        return mask
    for value in _labels_of(mask, labels):
        comp, n = ndimage.label(mask == value, structure=_structure(mask.ndim, full))
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())
        small = np.flatnonzero(sizes < min_size)
        small = small[small != 0]
        if small.size:
            mask[np.isin(comp, small)] = 0
    return mask


def keep_largest_component(mask: np.ndarray, *, labels: Sequence[int] | None = None,
                           full: bool = False) -> np.ndarray:
    """Keep only the largest connected component of each label (ties: the first found)."""
    mask = _check(mask).copy()
    for value in _labels_of(mask, labels):
        comp, n = ndimage.label(mask == value, structure=_structure(mask.ndim, full))
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        mask[(comp != 0) & (comp != int(np.argmax(sizes)))] = 0
    return mask


def fill_holes(mask: np.ndarray, *, labels: Sequence[int] | None = None,
               full: bool = False) -> np.ndarray:
    """Fill background holes fully enclosed by each label (other labels are left alone)."""
    mask = _check(mask).copy()
    for value in _labels_of(mask, labels):
        region = mask == value
        filled = ndimage.binary_fill_holes(region, structure=_structure(mask.ndim, full))
        mask[filled & ~region & (mask == 0)] = value
    return mask


def postprocess(mask: np.ndarray, *, largest_component: bool = False, fill: bool = False,
                min_size: int = 0, labels: Sequence[int] | None = None) -> np.ndarray:
    """Apply the selected steps in a fixed order: min size, largest component, fill holes."""
    out = _check(mask)
    if min_size and min_size > 1:
        out = remove_small_components(out, min_size, labels=labels)
    if largest_component:
        out = keep_largest_component(out, labels=labels)
    if fill:
        out = fill_holes(out, labels=labels)
    return out
