"""Segmentation metrics for 2D binary masks: Dice, IoU, HD95 and ASSD.

Definitions follow MONAI (``DiceMetric``, ``MeanIoU``, ``compute_hausdorff_distance`` with
``percentile=95`` and ``compute_average_surface_distance`` with ``symmetric=True``); the
differences, all about empty masks, are listed in docs/metrics.md:

* Dice / IoU: an empty target with an empty prediction scores 1, an empty target with a
  non-empty prediction scores 0 (MONAI's ``ignore_empty=False``).
* HD95 / ASSD: NaN whenever the prediction or the target is empty (MONAI: NaN when both are
  empty, inf when one is). Use :func:`summarize` to average while counting such cases.

Every function takes ``pred`` and ``target`` of shape (N, H, W) (one value per mask, returned
as a float64 array of shape (N,)) or (H, W) (returns a float). Masks must be binary: bool, or
numbers that are all 0 or 1; threshold probabilities first (``prob >= 0.5``).
Surface distances are in pixels, or in mm when ``spacing`` = (dy, dx) mm per pixel is given
(one pair for all masks, or an (N, 2) array with one pair per mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "assd",
    "dice",
    "hd95",
    "iou",
    "mask_scores",
    "surface_distances",
    "summarize",
]

_STRUCTURE = ndimage.generate_binary_structure(2, 1)  # 4-connectivity, as scipy/MONAI default


def _as_binary(array: Any, what: str) -> np.ndarray:
    """Return ``array`` as a bool ndarray, or raise ValueError naming ``what``."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what}: expected a bool or numeric mask, got dtype {arr.dtype}")
    binary = arr == 1
    bad = ~(binary | (arr == 0))
    if bad.any():
        example = arr[bad].flat[0]
        raise ValueError(
            f"{what}: mask must be binary (0/1 or bool), found {int(bad.sum())} other value(s) "
            f"such as {example!r}; threshold probabilities first (e.g. prob >= 0.5)"
        )
    return binary


def _prepare(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate a pred/target pair; return (N,H,W) bool arrays and whether input was 2D."""
    p = _as_binary(pred, "pred")
    t = _as_binary(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if p.ndim == 2:
        return p[None], t[None], True
    if p.ndim != 3:
        raise ValueError(f"pred/target must be (H, W) or (N, H, W) masks, got shape {p.shape}")
    return p, t, False


def _finish(values: np.ndarray, single: bool) -> np.ndarray | float:
    return float(values[0]) if single else values


def _overlap(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    p, t, single = _prepare(pred, target)
    inter = np.logical_and(p, t).sum(axis=(1, 2), dtype=np.int64).astype(np.float64)
    p_sum = p.sum(axis=(1, 2), dtype=np.int64).astype(np.float64)
    t_sum = t.sum(axis=(1, 2), dtype=np.int64).astype(np.float64)
    return inter, p_sum, t_sum, single


def dice(pred: Any, target: Any) -> np.ndarray | float:
    """Dice = 2|P∩T| / (|P| + |T|); 1.0 when both masks are empty."""
    inter, p_sum, t_sum, single = _overlap(pred, target)
    denom = p_sum + t_sum
    out = np.ones_like(denom)
    nz = denom > 0
    out[nz] = 2.0 * inter[nz] / denom[nz]
    return _finish(out, single)


def iou(pred: Any, target: Any) -> np.ndarray | float:
    """IoU (Jaccard) = |P∩T| / |P∪T|; 1.0 when both masks are empty."""
    inter, p_sum, t_sum, single = _overlap(pred, target)
    union = p_sum + t_sum - inter
    out = np.ones_like(union)
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return _finish(out, single)


def _spacings(spacing: Any, n: int) -> list[tuple[float, float]]:
    """Normalise ``spacing`` to one (dy, dx) pair per mask."""
    if spacing is None:
        return [(1.0, 1.0)] * n
    arr = np.asarray(spacing, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2))
    elif arr.shape != (n, 2):
        raise ValueError(
            f"spacing must be (dy, dx) or an (N, 2) array with N={n}, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"spacing must be finite and positive, got {spacing!r}")
    return [(float(dy), float(dx)) for dy, dx in arr]


def _edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels (voxels): the mask minus its erosion with the face-connected cross
    (4-connected in 2D, 6 in 3D; outside the array counts as 0)."""
    structure = _STRUCTURE if mask.ndim == 2 else ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed boundary distances for one (H, W) pair: (pred->target, target->pred).

    Each array holds, for every boundary pixel of one mask, the Euclidean distance to the
    nearest boundary pixel of the other. Returns None when either mask is empty.
    """
    p, t, single = _prepare(pred, target)
    if not single:
        raise ValueError(f"surface_distances takes one (H, W) pair, got shape {p.shape}")
    (sampling,) = _spacings(spacing, 1)
    return _surface_distances(p[0], t[0], sampling)


def _surface_distances(
    p: np.ndarray, t: np.ndarray, sampling: Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed boundary distances of two masks of any (equal) dimensionality."""
    if not p.any() or not t.any():
        return None
    # Crop to the union's bounding box plus a 1-pixel margin: edges and distances are unchanged
    # (all boundary pixels lie inside), the distance transforms just get cheaper.
    union = p | t
    box = []
    for axis in range(p.ndim):
        others = tuple(a for a in range(p.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(idx[0] - 1, 0), min(idx[-1] + 2, p.shape[axis])))
    ep = _edges(p[tuple(box)])
    et = _edges(t[tuple(box)])
    dist_to_t = ndimage.distance_transform_edt(~et, sampling=sampling)
    dist_to_p = ndimage.distance_transform_edt(~ep, sampling=sampling)
    return dist_to_t[ep], dist_to_p[et]


def _per_mask(pred: Any, target: Any, spacing: Any, reduce) -> np.ndarray | float:
    p, t, single = _prepare(pred, target)
    sampling = _spacings(spacing, p.shape[0])
    out = np.full(p.shape[0], np.nan, dtype=np.float64)
    for i in range(p.shape[0]):
        dists = _surface_distances(p[i], t[i], sampling[i])
        if dists is not None:
            out[i] = reduce(*dists)
    return _finish(out, single)


def hd95(pred: Any, target: Any, spacing: Any = None) -> np.ndarray | float:
    """95th-percentile symmetric Hausdorff distance between mask boundaries.

    max(P95 of pred->target distances, P95 of target->pred distances), percentiles with
    linear interpolation (numpy default, as MONAI). NaN if either mask is empty.
    """
    return _per_mask(
        pred,
        target,
        spacing,
        lambda a, b: max(float(np.percentile(a, 95)), float(np.percentile(b, 95))),
    )


def assd(pred: Any, target: Any, spacing: Any = None) -> np.ndarray | float:
    """Average symmetric surface distance: mean of all boundary distances in both directions.

    The two directed distance sets are pooled before averaging (MONAI, DeepMind
    surface-distance). NaN if either mask is empty.
    """
    return _per_mask(pred, target, spacing, lambda a, b: float(np.concatenate([a, b]).mean()))


def mask_scores(pred: Any, target: Any, spacing: Sequence[float] | None = None
                ) -> dict[str, float]:
    """Dice, IoU, HD95 and ASSD of ONE mask pair of any dimensionality (2D image, 3D volume).

    The definitions of :func:`dice`, :func:`iou`, :func:`hd95` and :func:`assd`, with the
    boundary taken by the face-connected cross of that dimensionality (6-connected in 3D)
    and distances in ``spacing`` units (one size per axis, e.g. a NIfTI's voxel size in
    mm; default 1 = pixels). HD95 / ASSD are NaN when either mask is empty.
    """
    p = _as_binary(pred, "pred")
    t = _as_binary(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    if p.ndim < 1:
        raise ValueError("pred/target must have at least one axis")
    sampling = (1.0,) * p.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(sampling) != p.ndim or not all(np.isfinite(sampling)) or min(sampling) <= 0:
        raise ValueError(f"spacing must be {p.ndim} finite positive sizes, got {spacing!r}")
    inter = float(np.logical_and(p, t).sum())
    p_sum, t_sum = float(p.sum()), float(t.sum())
    scores = {"dice": 2 * inter / (p_sum + t_sum) if p_sum + t_sum else 1.0,
              "iou": inter / (p_sum + t_sum - inter) if p_sum + t_sum else 1.0,
              "hd95": float("nan"), "assd": float("nan")}
    dists = _surface_distances(p, t, sampling)
    if dists is not None:
        a, b = dists
        scores["hd95"] = max(float(np.percentile(a, 95)), float(np.percentile(b, 95)))
        scores["assd"] = float(np.concatenate([a, b]).mean())
    return scores


def summarize(values: Any) -> dict[str, float | int]:
    """Mean/std over the defined (non-NaN) values, with counts of all and of undefined values.

    inf is treated as a real value (it would make the mean inf); the metrics here never
    return it.
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    defined = arr[~np.isnan(arr)]
    return {
        "mean": float(defined.mean()) if defined.size else float("nan"),
        "std": float(defined.std()) if defined.size else float("nan"),
        "count": int(arr.size),
        "undefined": int(arr.size - defined.size),
    }
