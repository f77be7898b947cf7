"""Reading helpers shared by the per-dataset recipes: images, masks, NIfTI, checks.

Every function raises :class:`RecipeError` naming the file and the problem, so a
builder can report bad input without a deep numpy/PIL traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from data_recipes.base import RecipeError, Subject
from incontext.preprocessing import PreprocessingError, colour_channels, to_grayscale

SHARED_DATA_ENV = "INCONTEXT_SHARED_DATA"


def shared_data_root() -> Path:
    """Folder of the shared datasets: $INCONTEXT_SHARED_DATA or ``<repo>/../shared/datasets``."""
    env = os.environ.get(SHARED_DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise RecipeError."""
    path = Path(path)
    if not path.is_dir():
        raise RecipeError(f"{path}: {what} folder not found")
    return path


def require_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: file not found")
    return path


def _open_pil(path: Path):
    from PIL import Image, UnidentifiedImageError

    require_file(path)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise RecipeError(f"{path}: unreadable image ({exc})") from exc
    return img


def _pil_to_array(img, path: Path) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("1", "LA", "PA"):
        img = img.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.size == 0:
        raise RecipeError(f"{path}: image is empty")
    return arr


def read_gray(path: Path, what: str = "image") -> np.ndarray:
    """Read a 2D image file (PNG/JPEG/BMP/TIFF/GIF) as (H, W) float32 grey."""
    return read_gray_and_colour(path, what)[0]


def read_gray_and_colour(path: Path, what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """Read a 2D image file as (H, W) float32 grey and, when its channels differ, its
    (H, W, 3) float32 RGB (None for grey images)."""
    path = Path(path)
    arr = _pil_to_array(_open_pil(path), path)
    colour = colour_channels(arr)
    try:
        grey = to_grayscale(arr, what=f"{path}")
    except PreprocessingError as exc:
        raise RecipeError(f"{path}: {what} is not a 2D grey or colour image ({exc})") from exc
    if not np.isfinite(grey).all():
        raise RecipeError(f"{path}: {what} contains NaN/inf values")
    return grey, colour


def read_mask_values(path: Path) -> np.ndarray:
    """Read a mask image as (H, W) uint8-range integer values (colour/palette -> grey)."""
    grey = read_gray(path, what="mask")
    return np.rint(grey).astype(np.int32)


def binary_from_values(
    values: np.ndarray, path: Path, foreground: int, allowed: Iterable[int]
) -> np.ndarray:
    """``values == foreground`` after checking every value is in ``allowed``."""
    allowed = np.asarray(sorted(set(allowed)))
    bad = ~np.isin(values, allowed)
    if bad.any():
        found = np.unique(values[bad])[:8].tolist()
        raise RecipeError(
            f"{path}: unexpected mask values {found} ({int(bad.sum())} pixels); "
            f"expected only {allowed.tolist()}"
        )
    return values == foreground


def read_binary_mask(
    path: Path, foreground: int = 255, allowed: Iterable[int] = (0, 255)
) -> np.ndarray:
    """Read a strictly binary mask file (e.g. 0/255) as bool."""
    return binary_from_values(read_mask_values(path), Path(path), foreground, allowed)


def read_threshold_mask(path: Path, threshold: float = 127) -> np.ndarray:
    """Read a lossy (JPEG) or palette mask: grey value > threshold -> True."""
    return read_gray(path, what="mask") > threshold


def check_same_shape(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path):
    if image.shape != mask.shape:
        raise RecipeError(
            f"{mask_path}: mask shape {mask.shape} does not match image "
            f"{Path(image_path).name} shape {image.shape}"
        )


def subject_2d(
    subject_id: str,
    image_path: Path,
    masks: Mapping[str, tuple[Path, np.ndarray]],
    label_names: list[str],
    spacing: tuple[float, ...] | None = None,
    sub_dataset: str = "",
) -> Subject:
    """Read the image at ``image_path`` (grey, and its RGB when colour) and assemble a Subject.

    ``masks`` maps label name -> (file, bool mask); labels absent from it get an
    all-False mask. Raises RecipeError on a shape mismatch, naming the mask file.
    """
    image, colour = read_gray_and_colour(image_path)
    out: dict[str, np.ndarray] = {}
    files = [str(image_path)]
    for name in label_names:
        if name in masks:
            mpath, mask = masks[name]
            check_same_shape(image, mask, image_path, mpath)
            out[name] = np.ascontiguousarray(mask, dtype=bool)
            files.append(str(mpath))
        else:
            out[name] = np.zeros(image.shape, dtype=bool)
    unknown = set(masks) - set(label_names)
    if unknown:
        raise RecipeError(f"{image_path}: masks for unknown labels {sorted(unknown)}")
    return Subject(
        subject_id=subject_id,
        image=image,
        masks=out,
        spacing=spacing,
        sub_dataset=sub_dataset,
        source_files=sorted(set(files), key=files.index),
        colour=colour,
    )


# --------------------------------------------------------------------------- NIfTI


def read_nifti(path: Path, canonical: bool = True) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Read a 3D NIfTI volume -> (array, affine, spacing), reoriented to RAS+ if asked.

    RAS+ (nibabel's closest canonical) makes axis 0 sagittal, 1 coronal, 2 axial for
    every volume, whatever the on-disk orientation.
    """
    import nibabel as nib

    path = require_file(Path(path))
    try:
        img = nib.load(str(path))
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise RecipeError(f"{path}: unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise RecipeError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise RecipeError(f"{path}: volume contains NaN/inf values")
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, np.asarray(img.affine, dtype=np.float64), spacing


class LabelMapMasks(Mapping):
    """Read-only ``name -> bool mask`` view of an integer label map, built on access.

    Saves memory for many-label 3D volumes (45 FreeSurfer structures would be
    ~300 MB as separate bool arrays). ``label_map`` and ``label_values`` stay available
    for builders that prefer to store a label map. ``fixed`` adds precomputed masks
    (e.g. thresholded tissue maps); ``names`` fixes the key order and may list labels
    absent from both, which read as all-False masks.
    """

    def __init__(
        self,
        label_map: np.ndarray,
        values: Mapping[str, int],
        fixed: Mapping[str, np.ndarray] | None = None,
        names: Iterable[str] | None = None,
    ):
        self.label_map = label_map
        self.label_values = dict(values)
        self.fixed = dict(fixed or {})
        self.names = list(names) if names is not None else [*self.fixed, *self.label_values]

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.fixed:
            return self.fixed[name]
        if name in self.label_values:
            return self.label_map == self.label_values[name]
        if name in self.names:
            return np.zeros(self.label_map.shape, dtype=bool)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def check_label_values(label_map: np.ndarray, allowed: Iterable[int], path: Path) -> None:
    """Raise RecipeError if ``label_map`` holds values outside ``allowed``."""
    if (label_map.dtype.kind in "iu" and label_map.size and 0 <= label_map.min()
            and label_map.max() < 65536):
        present = np.nonzero(np.bincount(label_map.ravel()))[0]
    else:
        present = np.unique(label_map)
    extra = sorted(set(present.tolist()) - set(allowed))
    if extra:
        raise RecipeError(f"{path}: unexpected label values {extra[:8]}; "
                          f"expected {sorted(allowed)}")
