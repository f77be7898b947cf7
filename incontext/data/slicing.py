"""One subject -> preprocessed 2D slices (MegaMedical conventions), with input checks.

Per subject: intensities normalised by modality on the whole image/volume; then per 2D
slice zero-pad to a square and resize (anti-aliased linear for images, nearest for masks).
3D volumes give, along each axis, the middle slice ("midslice") and for each label the
slice with the most foreground ("maxslice"), or every slice with foreground ("all").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_recipes.base import DatasetInfo, RecipeError, Subject
from incontext.preprocessing import (
    PreprocessingError,
    normalize_intensity,
    pad_to_square,
    resize_image,
    resize_mask_nearest,
)

SLICE_MODES = ("midslice", "maxslice", "all")
IMAGE_DTYPES = ("uint8", "float16")


def parse_slices(slices: str | Sequence[str]) -> tuple[str, ...]:
    """``"midslice,maxslice"`` / ``"all"`` -> validated, sorted tuple of modes."""
    items = slices.split(",") if isinstance(slices, str) else list(slices)
    modes = tuple(sorted({s.strip().lower() for s in items if s.strip()}))
    bad = [m for m in modes if m not in SLICE_MODES]
    if bad or not modes:
        raise ValueError(f"slices: unknown mode(s) {bad or items}; "
                         f"use a comma list of {SLICE_MODES}")
    return modes


def _describe(subject: Subject) -> str:
    return ", ".join(subject.source_files) or f"subject {subject.subject_id!r}"


def check_subject(subject: Subject, info: DatasetInfo) -> dict[str, np.ndarray]:
    """Raise RecipeError naming the files for bad input; return masks as bool arrays."""
    where = _describe(subject)
    image = np.asarray(subject.image)
    if image.ndim != info.dims:
        raise RecipeError(f"{where}: expected a {info.dims}D image, got shape {image.shape}")
    if image.size == 0 or min(image.shape) == 0:
        raise RecipeError(f"{where}: empty image {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise RecipeError(f"{where}: image dtype {image.dtype} is not numeric")
    names = list(subject.masks)
    missing = [n for n in info.label_names if n not in subject.masks]
    extra = [n for n in names if n not in info.label_names]
    if missing or extra:
        raise RecipeError(f"{where}: mask labels {names} do not match the dataset's "
                          f"{info.label_names} (missing {missing}, unexpected {extra})")
    masks = {}
    for name in info.label_names:
        mask = np.asarray(subject.masks[name])
        if mask.shape != image.shape:
            raise RecipeError(f"{where}: image shape {image.shape} but mask {name!r} "
                              f"shape {mask.shape}")
        if mask.dtype != bool:
            values = np.unique(mask)
            if not set(values.tolist()) <= {0, 1}:
                shown = ", ".join(str(v) for v in values[:6])
                raise RecipeError(f"{where}: mask {name!r} has unexpected values [{shown}] "
                                  "(expected 0/1)")
            mask = mask.astype(bool)
        masks[name] = mask
    if subject.spacing is not None and len(subject.spacing) < info.dims:
        raise RecipeError(f"{where}: spacing {subject.spacing} has fewer than {info.dims} values")
    return masks


def choose_slices(masks: np.ndarray, shape: Sequence[int], modes: Sequence[str]
                  ) -> list[tuple[int, int, np.ndarray]]:
    """3D: [(axis, index, selected (L+1,) bool)] sorted by axis then index.

    ``masks`` is (L, X, Y, Z) bool. ``selected[0]``: midslice; ``selected[1 + l]``: picked
    for label l (its maxslice, or any slice with its foreground under "all").
    """
    n_labels = masks.shape[0]
    picked: dict[tuple[int, int], np.ndarray] = {}

    def mark(axis: int, index: int, column: int) -> None:
        picked.setdefault((axis, index), np.zeros(n_labels + 1, dtype=bool))[column] = True

    for axis in range(3):
        if "midslice" in modes:
            mark(axis, int(shape[axis]) // 2, 0)
        other = tuple(a + 1 for a in range(3) if a != axis)
        counts = masks.sum(axis=other)  # (L, n_axis)
        for label in range(n_labels):
            if not counts[label].any():
                continue
            if "all" in modes:
                for index in np.flatnonzero(counts[label]):
                    mark(axis, int(index), 1 + label)
            if "maxslice" in modes:
                mark(axis, int(np.argmax(counts[label])), 1 + label)
    return [(a, i, sel) for (a, i), sel in sorted(picked.items())]


def _to_storage(image: np.ndarray, dtype: str) -> np.ndarray:
    image = np.clip(image, 0.0, 1.0)
    if dtype == "uint8":
        return np.rint(image * 255.0).astype(np.uint8)
    return image.astype(np.float16)


def slice_subject(subject: Subject, info: DatasetInfo, size: int = 128,
                  slices: Sequence[str] = ("maxslice", "midslice"),
                  dtype: str = "uint8") -> dict[str, np.ndarray]:
    """Check, normalise, slice and resize one subject -> per-slice arrays (see index format)."""
    masks_by_name = check_subject(subject, info)
    where = _describe(subject)
    try:
        norm = normalize_intensity(subject.image, info.modality, info.ct_window, what=where)
    except PreprocessingError as exc:
        raise RecipeError(str(exc)) from None
    masks = np.stack([masks_by_name[n] for n in info.label_names])  # (L, *shape)
    shape = norm.shape
    spacing = (np.asarray(subject.spacing[: info.dims], dtype=np.float64)
               if subject.spacing is not None else np.full(info.dims, np.nan))
    if info.dims == 2:
        plan = [(-1, 0, np.ones(len(info.label_names) + 1, dtype=bool))]
    else:
        plan = choose_slices(masks, shape, slices)
    images, out_masks, planes, indices, selected, spacings = [], [], [], [], [], []
    for axis, index, sel in plan:
        if axis < 0:
            img2, m2, sp2 = norm, masks, spacing
        else:
            img2 = np.take(norm, index, axis=axis)
            m2 = np.take(masks, index, axis=axis + 1)
            sp2 = np.delete(spacing, axis)
        side = max(img2.shape)
        images.append(_to_storage(resize_image(pad_to_square(img2), size), dtype))
        out_masks.append(resize_mask_nearest(pad_to_square(m2.astype(np.uint8)), size))
        planes.append(0 if axis < 0 else axis + 1)
        indices.append(index)
        selected.append(sel)
        spacings.append(sp2 * side / size)
    n = len(plan)
    colour = _colour_slices(subject, info, norm.shape, size, dtype, where) if n else None
    mask_arr = (np.stack(out_masks) if n else np.zeros((0, masks.shape[0], size, size))).astype(
        np.uint8)
    orig_shape = list(shape) + [0] * (3 - len(shape))
    orig_spacing = list(spacing) + [np.nan] * (3 - len(spacing))
    store = np.uint8 if dtype == "uint8" else np.float16
    out = {
        "images": np.stack(images) if n else np.zeros((0, size, size), dtype=store),
        "masks": mask_arr,
        "plane": np.asarray(planes, dtype=np.uint8),
        "slice_index": np.asarray(indices, dtype=np.int32),
        "selected": np.asarray(selected, dtype=np.uint8).reshape(n, len(info.label_names) + 1),
        "foreground": mask_arr.reshape(n, mask_arr.shape[1], -1).sum(-1).astype(np.int32),
        "orig_shape": np.tile(np.asarray(orig_shape, dtype=np.int32), (n, 1)),
        "orig_spacing": np.tile(np.asarray(orig_spacing, dtype=np.float32), (n, 1)),
        "spacing": np.asarray(spacings, dtype=np.float32).reshape(n, 2),
    }
    if colour is not None:
        out["colour"] = colour
    return out


def _colour_slices(subject: Subject, info: DatasetInfo, shape: tuple[int, ...], size: int,
                   dtype: str, where: str) -> np.ndarray | None:
    """(1, 3, size, size) R, G, B of a colour 2D subject, each channel normalised, padded and
    resized like the grey image; None for grey subjects and volumes."""
    colour = getattr(subject, "colour", None)
    if colour is None or info.dims != 2:
        return None
    colour = np.asarray(colour)
    if colour.ndim != 3 or colour.shape[-1] != 3 or colour.shape[:2] != tuple(shape):
        raise RecipeError(f"{where}: colour image of shape {colour.shape} does not match the "
                          f"grey image {tuple(shape)} (expected (H, W, 3))")
    channels = []
    for c in range(3):
        try:
            norm = normalize_intensity(colour[..., c], info.modality, info.ct_window, what=where)
        except PreprocessingError as exc:
            raise RecipeError(str(exc)) from None
        channels.append(_to_storage(resize_image(pad_to_square(norm), size), dtype))
    return np.stack(channels)[None]
