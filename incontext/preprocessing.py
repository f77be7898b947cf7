"""Intensity and geometry preprocessing shared by index building and inference.

One code path, so that inference sees what training saw (MegaMedical conventions):

* intensities: CT clipped to a HU window then min-max to [0, 1]; MR clipped to the
  0.5-99.5 percentiles of its non-zero voxels then min-max; anything else min-max;
* geometry: zero-pad to a square, Gaussian blur with sigma = (old / new) / 4 when
  shrinking, then linear resize for images; label masks resized per label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from incontext.ct_windows import CT_WINDOWS

MODALITIES = ("ct", "mr", "other")
DEFAULT_CT_WINDOW = CT_WINDOWS["default"]
MR_PERCENTILES = (0.5, 99.5)


class PreprocessingError(ValueError):
    """Raised for input that cannot be preprocessed (NaN, wrong shape, ...)."""


def check_finite(array: np.ndarray, what: str = "image") -> None:
    """Raise PreprocessingError naming ``what`` if ``array`` holds NaN or inf."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise PreprocessingError(f"{what}: contains {bad} NaN/inf value(s)")


def colour_channels(image: np.ndarray) -> np.ndarray | None:
    """(H,W,3|4) with channels that differ -> (H,W,3) float32 RGB; None for grey images."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        return None
    rgb = image[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return None
    return rgb.astype(np.float32)


def to_grayscale(image: np.ndarray, what: str = "image") -> np.ndarray:
    """(H,W), (H,W,3) or (H,W,4) -> (H,W) float32 (ITU-R 601 luma for colour)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 2:
        raise PreprocessingError(f"{what}: expected a 2D image, got shape {image.shape}")
    return image.astype(np.float32)


def normalize_intensity(
    image: np.ndarray,
    modality: str = "other",
    window: Sequence[float] | None = None,
    what: str = "image",
) -> np.ndarray:
    """Map raw intensities to float32 in [0, 1] by modality (see module docstring).

    ``window`` overrides the clipping range for any modality (HU for CT).
    A constant image maps to all zeros.
    """
    modality = modality.lower()
    if modality not in MODALITIES:
        raise PreprocessingError(f"{what}: unknown modality {modality!r} (use {MODALITIES})")
    image = np.asarray(image, dtype=np.float32)
    check_finite(image, what)
    if image.size == 0:
        raise PreprocessingError(f"{what}: image is empty")
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        if not lo < hi:
            raise PreprocessingError(f"{what}: window {window} must satisfy low < high")
        image = np.clip(image, lo, hi)
    elif modality == "ct":
        image = np.clip(image, *DEFAULT_CT_WINDOW)
    elif modality == "mr":
        nonzero = image[image != 0]
        if nonzero.size:
            lo, hi = np.percentile(nonzero, MR_PERCENTILES)
            image = np.clip(image, lo, hi)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return ((image - lo) / (hi - lo)).astype(np.float32)


def square_padding(shape: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zero padding that makes a (H, W) image square."""
    h, w = int(shape[0]), int(shape[1])
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return (top, side - h - top), (left, side - w - left)


def pad_to_square(array: np.ndarray, value: float = 0) -> np.ndarray:
    """Centre-pad the last two axes of ``array`` with ``value`` to a square."""
    (t, b), (left, r) = square_padding(array.shape[-2:])
    pad = [(0, 0)] * (array.ndim - 2) + [(t, b), (left, r)]
    return np.pad(array, pad, mode="constant", constant_values=value)


def crop_square_padding(array: np.ndarray | torch.Tensor, shape: Sequence[int]):
    """Undo :func:`pad_to_square` for an original (H, W) ``shape`` on the last two axes."""
    (t, _), (left, _) = square_padding(shape)
    h, w = int(shape[0]), int(shape[1])
    return array[..., t:t + h, left:left + w]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Square (H, H) image -> (size, size) float32: anti-alias blur when shrinking, then linear."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[-1] != image.shape[-2]:
        raise PreprocessingError(f"resize_image expects a square image, got {image.shape}")
    old = image.shape[-1]
    if old == size:
        return image.copy()
    if old > size:
        sigma = 0.25 * old / size
        image = ndimage.gaussian_filter(image, sigma=sigma, mode="constant")
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def resize_mask_nearest(mask: np.ndarray, size: int) -> np.ndarray:
    """Square binary/label mask -> (size, size) by nearest neighbour (index building)."""
    mask = np.asarray(mask)
    old = mask.shape[-1]
    if old == size:
        return mask.copy()
    idx = np.minimum(((np.arange(size) + 0.5) * old / size).astype(np.int64), old - 1)
    return mask[..., idx[:, None], idx[None, :]]


def resize_mask_soft(mask: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Square binary mask(s) (..., H, H) -> float (..., size, size) in [0, 1].

    Area averaging when shrinking (each output pixel holds the fraction of it that
    is foreground, so thin structures survive as partial values), bilinear when
    enlarging.
    """
    t = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    t = t.to(torch.float32)
    lead = t.shape[:-2]
    t = t.reshape(-1, 1, *t.shape[-2:])
    old = t.shape[-1]
    if old > size:
        t = F.interpolate(t, size=(size, size), mode="area")
    elif old < size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t.reshape(*lead, size, size).clamp_(0, 1)


def resize_probabilities(prob: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(..., s, s) probabilities -> (..., H, W) of an original image shape (undoing padding)."""
    h, w = int(shape[0]), int(shape[1])
    side = max(h, w)
    lead = prob.shape[:-2]
    t = prob.reshape(-1, 1, *prob.shape[-2:]).to(torch.float32)
    if t.shape[-1] != side:
        t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    t = t.reshape(*lead, side, side)
    return crop_square_padding(t, (h, w))


def prepare_image(image: np.ndarray, size: int, modality: str = "other",
                  window: Sequence[float] | None = None, what: str = "image") -> np.ndarray:
    """Raw 2D image -> normalised, square-padded, resized float32 (size, size)."""
    gray = to_grayscale(image, what)
    norm = normalize_intensity(gray, modality, window, what)
    return resize_image(pad_to_square(norm), size)
