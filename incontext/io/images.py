"""2D raster images (PNG, JPEG, BMP, TIFF, GIF) with pillow."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from incontext.io.errors import ImageReadError
from incontext.io.files import atomic_write
from incontext.preprocessing import colour_channels, to_grayscale


def check_raster_header(path: str | os.PathLike) -> None:
    """Raise ImageReadError naming ``path`` unless it exists and its header is a known
    image format (no pixel decoding: cheap enough for every query before the work)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found" if not path.exists()
                             else f"{path}: not a file")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from None
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: image is empty ({width} x {height})")


def _open_array(path: Path, as_label: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                warnings.warn(f"{path}: has {img.n_frames} frames; using the first", stacklevel=3)
                img.seek(0)
            mode = img.mode
            if mode == "P" and as_label:
                array = np.asarray(img)  # palette indices are the label values
            elif mode in ("P", "PA", "CMYK", "YCbCr", "HSV", "LAB", "RGBA", "RGBX"):
                array = np.asarray(img.convert("RGB"))
            elif mode == "LA":
                array = np.asarray(img.convert("L"))
            elif mode == "1":
                array = np.asarray(img.convert("L"))
            else:
                array = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc})") from None
    if array.size == 0 or array.ndim not in (2, 3):
        raise ImageReadError(f"{path}: unexpected image shape {array.shape}")
    return array


def read_image_and_colour(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a 2D raster image as grey (as :func:`read_image` does) and, when its channels
    differ, its (H, W, 3) float32 R, G, B (None for grey images)."""
    path = Path(path)
    array = _open_array(path, False)
    return _grey_of(array, path), colour_channels(array)


def _plane_or_colour(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) or (H, W, 1) -> (H, W); (H, W, 3|4) as is; other shapes are an error."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 and array.shape[-1] not in (3, 4):
        raise ImageReadError(f"{path}: unexpected image shape {array.shape}")
    return array


def _grey_of(array: np.ndarray, path: Path) -> np.ndarray:
    array = _plane_or_colour(array, path)
    return array if array.ndim == 2 else to_grayscale(array, str(path))


def read_image(path: str | os.PathLike, *, as_label: bool = False) -> np.ndarray:
    """Read a 2D raster as one channel (H, W).

    Images: colour is converted to grey (ITU-R 601 luma, float32); grey images keep
    their dtype. Labels (``as_label=True``): palette indices or grey values are the
    label values; an RGB label image is accepted only if its channels are equal.
    """
    path = Path(path)
    array = _open_array(path, as_label)
    if not as_label:
        return _grey_of(array, path)
    array = _plane_or_colour(array, path)
    if array.ndim == 2:
        return array
    rgb = array[..., :3]
    if not (np.array_equal(rgb[..., 0], rgb[..., 1])
            and np.array_equal(rgb[..., 0], rgb[..., 2])):
        raise ImageReadError(
            f"{path}: colour label image; give a grey or palette label map whose "
            "values are the labels (0 = background)")
    return rgb[..., 0]


def _label_png_array(array: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8:
        return array
    if array.ndim != 2:
        raise ValueError(f"{path}: cannot write an array of shape {array.shape} as PNG")
    if np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{path}: PNG needs integer values, got {array.dtype}")
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"{path}: values {lo}..{hi} do not fit a PNG (0..65535)")
    return array.astype(np.uint8 if hi <= 255 else np.uint16)


def write_png(path: str | os.PathLike, array: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a 2D integer array (8- or 16-bit grey) or (H, W, 3|4) uint8 RGB(A) as PNG,
    atomically."""
    from PIL import Image

    path = Path(path)
    data = _label_png_array(array, path)

    def write(tmp: Path) -> None:
        Image.fromarray(data).save(tmp, format="PNG")

    return atomic_write(path, write, overwrite=overwrite)
