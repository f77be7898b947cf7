"""One entry point for any supported file: pixel data plus (for NIfTI) its geometry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from incontext.io.errors import ImageReadError
from incontext.io.files import IMAGE_SUFFIXES, NIFTI_SUFFIXES, file_kind
from incontext.io.images import check_raster_header, read_image, read_image_and_colour
from incontext.io.nifti import NiftiImage, read_nifti


@dataclass
class LoadedImage:
    """data: (H, W) for 2D files (colour already converted to grey), (X, Y, Z) for volumes;
    colour: (H, W, 3) R, G, B of a colour 2D image (None otherwise)."""

    path: Path
    data: np.ndarray
    nifti: NiftiImage | None = None
    colour: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        return self.data.ndim


def _require_kind(path: Path) -> str:
    kind = file_kind(path)
    if kind is None:
        raise ImageReadError(f"{path}: unsupported file format (supported: "
                             f"{', '.join(IMAGE_SUFFIXES + NIFTI_SUFFIXES)})")
    return kind


def load_image(path: str | os.PathLike, *, as_label: bool = False) -> LoadedImage:
    """Read an image or label map from any supported format (errors name the file)."""
    path = Path(path)
    kind = _require_kind(path)
    if kind == "raster":
        if as_label:
            return LoadedImage(path, read_image(path, as_label=True))
        grey, colour = read_image_and_colour(path)
        return LoadedImage(path, grey, colour=colour)
    nii = read_nifti(path)
    data = nii.data
    if nii.spatial_ndim == 2 and data.ndim == 3:
        data = data[..., 0]
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise ImageReadError(f"{path}: unsupported voxel type {data.dtype}")
    return LoadedImage(path, data, nii)


def require_finite(image: LoadedImage) -> LoadedImage:
    """``image`` unchanged; ImageReadError naming its file when it holds NaN or inf."""
    data = image.data
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ImageReadError(f"{image.path}: contains {bad} NaN/inf value(s); replace them "
                             "(e.g. with the background intensity) first")
    return image


def probe_ndim(path: str | os.PathLike) -> int:
    """Spatial dimensionality (2 or 3) from the file header only (cheap); ImageReadError
    naming the file when that header cannot be read."""
    path = Path(path)
    if _require_kind(path) == "raster":
        check_raster_header(path)
        return 2
    import nibabel as nib

    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        shape = tuple(nib.load(str(path)).shape)
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageReadError(f"{path}: {len(shape)}D image {shape}; give one 2D or 3D image "
                             "(split multi-channel or time series first)")
    if len(shape) == 3 and shape[2] == 1:
        return 2
    return len(shape)
