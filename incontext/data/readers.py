"""File readers shared by data recipes: 2D images, NIfTI volumes, masks and label maps.

Every reader raises :class:`data_recipes.base.RecipeError` naming the file and the
problem, never a bare library exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data_recipes.base import RecipeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


def strip_suffix(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES + NIFTI_SUFFIXES) -> str:
    """File name without its (possibly double, e.g. ``.nii.gz``) image suffix."""
    lower = name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _require_file(path: Path) -> None:
    if not path.exists():
        raise RecipeError(f"{path}: file not found")
    if not path.is_file():
        raise RecipeError(f"{path}: not a file")


def read_image_2d(path: Path) -> np.ndarray:
    """A 2D image file -> (H, W) or (H, W, 3) array (palette and alpha images converted)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path) as img:
            if img.mode in ("P", "PA", "LA", "RGBA", "CMYK", "YCbCr", "HSV", "1"):
                img = img.convert("RGB" if img.mode != "1" else "L")
            array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RecipeError(f"{path}: cannot read image ({exc})") from None
    if array.ndim not in (2, 3) or array.size == 0:
        raise RecipeError(f"{path}: unexpected image shape {array.shape}")
    return array


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """A NIfTI file -> (data, voxel spacing in mm, 4x4 affine)."""
    import nibabel as nib

    path = Path(path)
    _require_file(path)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # nibabel raises many types (ImageFileError, EOFError, zlib...)
        raise RecipeError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    if data.size == 0:
        raise RecipeError(f"{path}: empty volume {data.shape}")
    return data, zooms[: data.ndim], affine


def select_channel(data: np.ndarray, dims: int, channel: int, path: Path) -> np.ndarray:
    """Drop trailing singleton axes / pick ``channel`` of a multi-channel (dims+1)-D array."""
    while data.ndim > dims and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == dims + 1:
        if not 0 <= channel < data.shape[-1]:
            raise RecipeError(f"{path}: channel {channel} out of range for shape {data.shape}")
        data = data[..., channel]
    if data.ndim != dims:
        raise RecipeError(f"{path}: expected a {dims}D image, got shape {data.shape}")
    return data


def binary_mask(mask: np.ndarray, path: Path, threshold: float | None = None) -> np.ndarray:
    """Mask array -> bool. Without ``threshold`` only {0,1} or {0,255} are accepted."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        if not (mask[..., :3] == mask[..., :1]).all():
            raise RecipeError(f"{path}: colour mask (channels differ); expected a grey mask")
        mask = mask[..., 0]
    if threshold is not None:
        return mask > threshold
    values = np.unique(mask)
    if set(values.tolist()) <= {0, 1}:
        return mask.astype(bool)
    if set(values.tolist()) <= {0, 255}:
        return mask == 255
    shown = ", ".join(str(v) for v in values[:8]) + (" ..." if values.size > 8 else "")
    raise RecipeError(
        f"{path}: unexpected mask values [{shown}] (expected 0/1 or 0/255; "
        "set a threshold or a label mapping)"
    )


def label_map_to_masks(
    label_map: np.ndarray,
    labels: Mapping[str, int | Sequence[int]],
    path: Path,
    strict: bool = True,
) -> dict[str, np.ndarray]:
    """Integer label map -> {name: bool mask}. A label may be a list of values (a region).

    With ``strict``, values other than 0 and the listed ones are an error naming ``path``.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim == 3 and label_map.shape[-1] in (3, 4) and label_map.dtype == np.uint8:
        if (label_map[..., :3] == label_map[..., :1]).all():
            label_map = label_map[..., 0]
    if np.issubdtype(label_map.dtype, np.floating):
        if not np.isfinite(label_map).all():
            raise RecipeError(f"{path}: label map contains NaN/inf")
        rounded = np.rint(label_map)
        if not np.array_equal(rounded, label_map):
            raise RecipeError(f"{path}: label map has non-integer values")
        label_map = rounded.astype(np.int64)
    wanted = {name: np.atleast_1d(np.asarray(v, dtype=np.int64)) for name, v in labels.items()}
    if strict:
        present = np.unique(label_map)
        known = {0} | {int(v) for vs in wanted.values() for v in vs}
        unexpected = [int(v) for v in present if int(v) not in known]
        if unexpected:
            shown = ", ".join(str(v) for v in unexpected[:8])
            raise RecipeError(
                f"{path}: unexpected label values [{shown}] (known: {sorted(known)})"
            )
    return {name: np.isin(label_map, vs) for name, vs in wanted.items()}


def modality_from_name(name: str) -> str:
    """Channel/modality name (nnU-Net, MSD) -> normalisation family: "ct", "mr" or "other"."""
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    if key in ("ct", "cect", "ncct", "cta", "pet/ct") or key.startswith("ct"):
        return "ct"
    mr_keys = (
        "mr", "mri", "t1", "t2", "t1w", "t2w", "t1c", "t1ce", "t1gd", "flair", "adc", "dwi",
        "pd", "swi", "bold", "lge", "cine", "nonenhanced", "t2star", "dce", "hbv",
    )
    if key in mr_keys or key.startswith(("mr", "t1", "t2")):
        return "mr"
    return "other"
