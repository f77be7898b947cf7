"""3D in-context segmentation, slice by slice, from a few labeled support volumes.

Pipeline for one query volume and one label value:

1. Intensities are normalised on the *whole* volume (query and each support), by
   modality, with :func:`incontext.preprocessing.normalize_intensity` -- the code
   path the task index uses, so 2D slices look like the slices the model was
   trained on. Slices are then zero-padded to a square and resized to the model's
   resolution without any further per-slice normalisation.
2. The query is cut into slices along ``axis``. Query slice ``i`` of ``n`` sits at
   relative position ``r = (i + 0.5) / n``. From each support volume that holds
   the label, the support slices are those *within its labeled extent* (first to
   last slice containing the label) whose own relative position is nearest ``r``;
   each volume contributes an equal share of ``support_size`` slices.
3. Probabilities are resized back to each slice's shape and stacked into a volume.
   With ``planes=3`` this runs along all three axes and the probabilities are
   averaged (tri-planar fusion); the uncertainty is then the standard deviation
   over all planes and ensemble members.

Default axis (:func:`choose_axis`): the axis the supports are densest in. For
anisotropic voxels (largest / smallest spacing > 1.1) that is the slice axis, the one
with the largest spacing, whose slices have the finest in-plane sampling. For
(near-)isotropic voxels, or when no spacing is known, it is the axis along which the
support volumes hold the most slices containing foreground (the largest support pool).
Ties go to the last axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from incontext.calibration import rescale_to_threshold
from incontext.ct_windows import CT_WINDOWS, resolve_window  # noqa: F401  (re-exported)
from incontext.inference import (
    SupportSetError,
    draw_support_subsets,
    label_map,
    predict_probabilities,
)
from incontext.preprocessing import (
    PreprocessingError,
    normalize_intensity,
    pad_to_square,
    resize_image,
    resize_mask_soft,
    resize_probabilities,
)
from incontext.tiling import TiledRunner, check_tiles, choose_tiles, tile_options, tiled_size
from incontext.tta import check_tta

ANISOTROPY_RATIO = 1.1
# Support slices per query slice. Every query slice costs one model pass per support
# slice, and a volume has ~100 slices, so volumes default lower than 2D (64): ~50 ms per
# (query, support) pair at 128 px on one CPU thread gives ~80 s per 100-slice volume.
DEFAULT_VOLUME_SUPPORT_SIZE = 16


class VolumeError(SupportSetError):
    """Support or query volumes that cannot be used together; the message says why."""


@dataclass
class VolumeSegmentation:
    """Result for one query volume (on the query's own grid).

    mask:          (X, Y, Z) label map (0 = background)
    probabilities: (L, X, Y, Z) mean foreground probability per label
    uncertainty:   (L, X, Y, Z) std of the probability over ensemble members and planes
    labels:        the L label values
    axes:          the slicing axes used (one, or all three for tri-planar)
    tiles:         per label, the tiling used along each of ``axes`` (1 = whole slices)
    """

    mask: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    labels: list[int]
    axes: tuple[int, ...]
    tiles: list[tuple[int, ...]] = field(default_factory=list)


def normalize_volume(volume: np.ndarray, modality: str = "other",
                     window: str | Sequence[float] | None = None,
                     what: str = "volume") -> np.ndarray:
    """Whole-volume intensity normalisation to [0, 1] (see module docstring)."""
    try:
        return normalize_intensity(volume, modality, resolve_window(window), what)
    except PreprocessingError as exc:
        raise VolumeError(str(exc)) from None


def labeled_extent(label: np.ndarray, axis: int, value: int) -> tuple[int, int] | None:
    """(first, last) slice index along ``axis`` containing ``value``, or None."""
    other = tuple(a for a in range(label.ndim) if a != axis)
    present = np.flatnonzero(np.any(label == value, axis=other))
    if present.size == 0:
        return None
    return int(present[0]), int(present[-1])


def choose_axis(support_labels: Sequence[np.ndarray],
                spacings: Sequence[Sequence[float] | None] | None = None) -> int:
    """The default slicing axis: where the supports are densest (see module docstring)."""
    known = [np.asarray(s, dtype=float)[:3] for s in (spacings or []) if s is not None
             and len(s) >= 3 and np.all(np.asarray(s[:3], dtype=float) > 0)]
    if known:
        mean = np.mean(known, axis=0)
        if mean.max() / mean.min() > ANISOTROPY_RATIO:
            return int(2 - np.argmax(mean[::-1]))  # largest spacing, ties -> last axis
    counts = np.zeros(3)
    for lab in support_labels:
        fg = np.asarray(lab) != 0
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            counts[axis] += int(np.any(fg, axis=other).sum())
    return int(2 - np.argmax(counts[::-1]))


def nearest_support_slices(n_query: int, index: int, n_support: int, extent: tuple[int, int],
                           count: int) -> list[int]:
    """The ``count`` slices of a support volume within ``extent`` nearest (in relative
    position) to query slice ``index`` of ``n_query``; sorted."""
    lo, hi = extent
    centre = (index + 0.5) / n_query * n_support - 0.5
    candidates = np.arange(lo, hi + 1)
    order = np.argsort(np.abs(candidates - centre), kind="stable")
    return sorted(int(c) for c in candidates[order[:count]])


def _model_resolution(model: nn.Module) -> int:
    return int(getattr(getattr(model, "config", None), "resolution", 128))


class _SliceCache:
    """Resized slices of one normalised volume along one axis, computed on demand."""

    def __init__(self, volume: np.ndarray, axis: int, size: int):
        self.volume, self.axis, self.size = volume, axis, size
        self._cache: dict[int, torch.Tensor] = {}

    def __call__(self, index: int) -> torch.Tensor:
        if index not in self._cache:
            sl = np.take(self.volume, index, axis=self.axis)
            self._cache[index] = torch.from_numpy(resize_image(pad_to_square(sl), self.size))
        return self._cache[index]


def _segment_axis(model, query: np.ndarray, supports: list[tuple[np.ndarray, np.ndarray]],
                  value: int, axis: int, *, size: int, support_size: int, ensemble: int,
                  seed: int, batch_size: int | None, image_caches: dict,
                  progress: Callable[[int], None] | None, tiles: int | str = 1,
                  tta: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, var) probability volumes (X, Y, Z) for one label along one axis, and the
    tiling used (``tiles="auto"``: chosen on the first group's support slices)."""
    n_q = query.shape[axis]
    usable = []
    for v, (_img, lab) in enumerate(supports):
        extent = labeled_extent(lab, axis, value)
        if extent is not None:
            usable.append((v, extent))
    mean = np.zeros(query.shape, dtype=np.float32)
    var = np.zeros(query.shape, dtype=np.float32)
    options = tile_options(tiles)
    if not usable:
        if progress:
            progress(n_q)
        return mean, var, options[0]
    n_pool_max = sum(hi - lo + 1 for _, (lo, hi) in usable)
    k = min(support_size, n_pool_max)
    share = math.ceil(k / len(usable)) * (2 if ensemble > 1 else 1)
    # Group query slices by their support pool so each group runs as one batch.
    groups: dict[tuple, list[int]] = {}
    for i in range(n_q):
        pool = tuple((v, j) for v, ext in usable
                     for j in nearest_support_slices(n_q, i, supports[v][0].shape[axis], ext,
                                                     share))
        groups.setdefault(pool, []).append(i)
    slice_shape = tuple(s for a, s in enumerate(query.shape) if a != axis)
    mean_view = np.moveaxis(mean, axis, 0)
    var_view = np.moveaxis(var, axis, 0)
    runner = TiledRunner(lambda a, b, c: predict_probabilities(model, a, b, c, batch_size,
                                                               tta=tta), size)

    def supports_at(pool: tuple, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([image_caches.setdefault((v, axis, width), _SliceCache(
            supports[v][0], axis, width))(j) for v, j in pool])
        labels = torch.stack([resize_mask_soft(pad_to_square(
            (np.take(supports[v][1], j, axis=axis) == value).astype(np.float32)), width)
            for v, j in pool])
        return images, labels

    g = options[0]
    if len(options) > 1:  # "auto": the tiling that best segments the support slices
        g, _ = choose_tiles(runner.resized, *supports_at(next(iter(groups)),
                                                         tiled_size(size, max(options))),
                            options, seed=seed)
    width = tiled_size(size, g)
    q_cache = image_caches.setdefault(("query", axis, width), _SliceCache(query, axis, width))
    for n, (pool, members) in enumerate(groups.items()):
        s_img, s_lab = supports_at(pool, width)
        q = torch.stack([q_cache(i) for i in members])
        subsets = draw_support_subsets(len(pool), min(k, len(pool)), ensemble, seed + n)
        probs = torch.stack([runner(g, q, s_img[torch.from_numpy(sub)],
                                    s_lab[torch.from_numpy(sub)])
                             for sub in subsets])  # (E, Q, w, w)
        m = probs.mean(0)
        vr = (probs - m).square().mean(0)
        m_full = resize_probabilities(m, slice_shape).numpy()
        v_full = resize_probabilities(vr, slice_shape).numpy().clip(min=0)
        for row, i in enumerate(members):
            mean_view[i] = m_full[row]
            var_view[i] = v_full[row]
        if progress:
            progress(len(members))
    return mean, var, g


def segment_volume(
    model: nn.Module,
    query: np.ndarray,
    support_images: Sequence[np.ndarray],
    support_labels: Sequence[np.ndarray],
    *,
    labels: Sequence[int] | None = None,
    axis: int | None = None,
    planes: int = 1,
    ensemble: int = 1,
    support_size: int | None = None,
    threshold: float | Sequence[float] = 0.5,
    seed: int = 0,
    batch_size: int | None = None,
    modality: str = "other",
    window: str | Sequence[float] | None = None,
    spacings: Sequence[Sequence[float] | None] | None = None,
    progress: Callable[[int], None] | None = None,
    tiles: int | str = 1,
    tta: int = 1,
) -> VolumeSegmentation:
    """Segment a 3D ``query`` from labeled support volumes, slice by slice.

    support_images / support_labels: 3D arrays (any shapes; each pair must match).
    labels: label values to segment (default: all non-zero values in the supports).
    axis: slicing axis (default :func:`choose_axis`); planes=3: all axes, averaged.
    support_size: support slices per query slice (default 16), shared equally among
    the support volumes holding the label. spacings: support voxel sizes (for the
    default axis). progress(n) is called as query slices finish
    (total = :func:`slice_steps`). tiles: 1, g > 1, "auto" or "autoG", as in
    :func:`incontext.segment`, per slice (``VolumeSegmentation.tiles`` says what was used).
    tta: 1, 2, 4 or 8 flipped/rotated copies of each slice task, averaged (:mod:`incontext.tta`).
    threshold: the foreground cut, one for all labels or one per label (in ``labels``
    order; :func:`incontext.volume_check.check_support_volumes` can choose them); with
    cuts other than 0.5 the returned probabilities are rescaled so each cut sits at 0.5.
    """
    try:
        check_tta(tta)
    except ValueError as exc:
        raise VolumeError(str(exc)) from None
    try:
        check_tiles(tiles)
    except ValueError as exc:
        raise VolumeError(str(exc)) from None
    if planes not in (1, 3):
        raise VolumeError(f"planes must be 1 or 3, got {planes}")
    if ensemble < 1:
        raise VolumeError(f"ensemble must be >= 1, got {ensemble}")
    if batch_size is not None and batch_size < 1:
        raise VolumeError(f"batch_size must be >= 1, got {batch_size}")
    cuts = [float(threshold)] if np.ndim(threshold) == 0 else [float(t) for t in threshold]
    if not cuts or any(not 0.0 < t < 1.0 for t in cuts):
        raise VolumeError(f"threshold must be in (0, 1) (one, or one per label), got {threshold}")
    query = np.asarray(query)
    if query.ndim != 3:
        raise VolumeError(f"query: expected a 3D volume, got shape {query.shape}")
    if len(support_images) != len(support_labels):
        raise VolumeError(f"{len(support_images)} support volumes but {len(support_labels)} "
                          "support labels")
    if not support_images:
        raise VolumeError("the support set is empty: give at least one labeled volume")
    for i, (img, lab) in enumerate(zip(support_images, support_labels, strict=True)):
        if np.ndim(img) != 3 or np.ndim(lab) != 3:
            raise VolumeError(f"support {i}: expected 3D image and label, got shapes "
                              f"{np.shape(img)} and {np.shape(lab)}")
        if np.shape(img) != np.shape(lab):
            raise VolumeError(f"support {i}: image shape {np.shape(img)} does not match label "
                              f"shape {np.shape(lab)}")
    if axis is not None and axis not in (0, 1, 2):
        raise VolumeError(f"axis must be 0, 1 or 2, got {axis}")
    present = sorted({int(v) for lab in support_labels for v in np.unique(lab) if v != 0})
    wanted = [int(v) for v in labels] if labels is not None else present
    missing = [v for v in wanted if v not in present]
    if missing:
        raise VolumeError(f"label value(s) {missing} occur in no support label "
                          f"(present: {present or 'none'})")
    if not wanted:
        raise VolumeError("every support label is empty: nothing to segment")
    if len(cuts) not in (1, len(wanted)):
        raise VolumeError(f"{len(cuts)} thresholds for {len(wanted)} labels: give one, or one "
                          "per label")
    if len(cuts) == 1:
        cuts = cuts * len(wanted)

    size = _model_resolution(model)
    q_norm = normalize_volume(query, modality, window, "query")
    supports = [(normalize_volume(img, modality, window, f"support {i}"),
                 np.asarray(lab).astype(np.int64))
                for i, (img, lab) in enumerate(zip(support_images, support_labels, strict=True))]
    if planes == 3:
        axes: tuple[int, ...] = (0, 1, 2)
    else:
        axes = (axis if axis is not None else choose_axis(support_labels, spacings),)
    k = support_size or DEFAULT_VOLUME_SUPPORT_SIZE
    if k < 1:
        raise VolumeError(f"support_size must be >= 1, got {k}")

    n_lab = len(wanted)
    prob = np.zeros((n_lab, *query.shape), dtype=np.float32)
    uncertainty = np.zeros((n_lab, *query.shape), dtype=np.float32)
    caches: dict = {}
    chosen: list[tuple[int, ...]] = []
    was_training = model.training
    model.eval()
    try:
        for li, value in enumerate(wanted):
            per_axis = [_segment_axis(model, q_norm, supports, value, ax, size=size,
                                      support_size=k, ensemble=ensemble, seed=seed,
                                      batch_size=batch_size, image_caches=caches,
                                      progress=progress, tiles=tiles, tta=tta)
                        for ax in axes]
            chosen.append(tuple(g for _, _, g in per_axis))
            means = np.stack([m for m, _, _ in per_axis])
            prob[li] = means.mean(axis=0)
            # total variance over planes x members = mean within-plane + between-plane
            total = np.mean([v for _, v, _ in per_axis], axis=0) + \
                ((means - prob[li]) ** 2).mean(0)
            uncertainty[li] = np.sqrt(np.clip(total, 0, None))
    finally:
        model.train(was_training)
    if any(t != 0.5 for t in cuts):  # per-label cuts: rescale so each cut sits at 0.5
        prob = np.stack([rescale_to_threshold(torch.from_numpy(p), t).numpy()
                         for p, t in zip(prob, cuts, strict=True)])
    return VolumeSegmentation(mask=label_map(prob, wanted, 0.5), probabilities=prob,
                              uncertainty=uncertainty, labels=wanted, axes=axes, tiles=chosen)


def slice_steps(shape: Sequence[int], n_labels: int, axes: Sequence[int]) -> int:
    """Progress steps :func:`segment_volume` reports for a query of ``shape`` (resolved axes)."""
    return n_labels * int(sum(shape[a] for a in axes))
