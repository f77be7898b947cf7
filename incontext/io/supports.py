"""Finding and loading labeled (image, label) support pairs from the user's files.

Layouts understood by :func:`find_support_pairs`:

* ``DIR/images/`` + ``DIR/labels/`` (or ``DIR/masks/``), matched by file stem; a label
  may also carry a ``_mask``/``_label``/``_seg``/``_gt`` suffix (``a.png`` <-> ``a_mask.png``);
* an nnU-Net raw dataset, ``DIR/imagesTr/CASE_0000.nii.gz`` + ``DIR/labelsTr/CASE.nii.gz``
  (channel 0 is used), or a folder holding exactly one such ``Dataset*`` folder.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from incontext.io.errors import ImageReadError
from incontext.io.files import file_kind, strip_image_suffix
from incontext.io.loading import LoadedImage, load_image, require_finite

LABEL_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_seg", "_gt")
NNUNET_CHANNEL = "_0000"


@dataclass(frozen=True)
class SupportPair:
    image: Path
    label: Path


def parse_support_arg(spec: str) -> SupportPair:
    """``IMG:LABEL`` -> SupportPair (a ``:`` inside a path is allowed if both files exist)."""
    positions = [i for i, c in enumerate(spec) if c == ":"]
    if not positions:
        raise ImageReadError(f"--support {spec}: expected IMAGE:LABEL")
    for i in positions:
        image, label = Path(spec[:i]), Path(spec[i + 1:])
        if image.is_file() and label.is_file():
            return SupportPair(image, label)
    image, label = Path(spec[:positions[-1]]), Path(spec[positions[-1] + 1:])
    missing = image if not image.is_file() else label
    raise ImageReadError(f"--support {spec}: {missing}: file not found")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and file_kind(p) is not None)


def _nnunet_root(folder: Path) -> Path | None:
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        return folder
    inner = [d for d in folder.iterdir() if d.is_dir() and (d / "imagesTr").is_dir()
             and (d / "labelsTr").is_dir()]
    return inner[0] if len(inner) == 1 else None


def _nnunet_pairs(root: Path) -> list[SupportPair]:
    labels = {strip_image_suffix(p): p for p in _image_files(root / "labelsTr")}
    pairs, extra_channels, unlabeled = [], 0, []
    for img in _image_files(root / "imagesTr"):
        stem = strip_image_suffix(img)
        case, _, channel = stem.rpartition("_")
        if not case or not channel.isdigit():
            raise ImageReadError(f"{img}: nnU-Net image names end in _XXXX (channel), e.g. "
                                 f"{stem}_0000{img.name[len(stem):]}")
        if channel != NNUNET_CHANNEL[1:]:
            extra_channels += 1
            continue
        if case in labels:
            pairs.append(SupportPair(img, labels[case]))
        else:
            unlabeled.append(img.name)
    if extra_channels:
        warnings.warn(f"{root}: multi-channel dataset; only channel 0 (_0000) is used",
                      stacklevel=3)
    if unlabeled:
        warnings.warn(f"{root / 'imagesTr'}: {len(unlabeled)} image(s) without a label in "
                      f"labelsTr skipped (e.g. {unlabeled[0]})", stacklevel=3)
    return pairs


def label_names(stem: str) -> list[str]:
    """The names a label file's stem can match: itself, and without a ``_mask`` /
    ``_label`` / ``_seg`` / ``_gt`` suffix (``a_mask`` -> ``a_mask``, ``a``)."""
    return [stem] + [stem[: -len(s)] for s in LABEL_SUFFIXES if stem.lower().endswith(s)]


def _folder_pairs(images_dir: Path, labels_dir: Path) -> list[SupportPair]:
    labels: dict[str, Path] = {}
    for p in _image_files(labels_dir):
        stem = strip_image_suffix(p)
        labels[stem] = p
        for name in label_names(stem)[1:]:
            labels.setdefault(name, p)
    pairs, unlabeled = [], []
    for img in _image_files(images_dir):
        label = labels.get(strip_image_suffix(img))
        if label is None:
            unlabeled.append(img.name)
        else:
            pairs.append(SupportPair(img, label))
    if unlabeled:
        warnings.warn(f"{images_dir}: {len(unlabeled)} image(s) without a matching label in "
                      f"{labels_dir} skipped (e.g. {unlabeled[0]})", stacklevel=3)
    return pairs


def find_support_pairs(folder: str | os.PathLike) -> list[SupportPair]:
    """All (image, label) pairs in a support folder (layouts: see module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"--support-dir {folder}: not a folder")
    root = _nnunet_root(folder)
    if root is not None:
        pairs = _nnunet_pairs(root)
        where = f"{root} (nnU-Net imagesTr/labelsTr)"
    else:
        labels_dir = next((folder / n for n in ("labels", "masks") if (folder / n).is_dir()),
                          None)
        if not (folder / "images").is_dir() or labels_dir is None:
            raise ImageReadError(f"--support-dir {folder}: expected images/ and labels/ (or "
                                 "masks/) folders, or an nnU-Net dataset (imagesTr/, labelsTr/)")
        pairs = _folder_pairs(folder / "images", labels_dir)
        where = f"{folder}/images + {labels_dir.name}/"
    if not pairs:
        raise ImageReadError(f"--support-dir {where}: no image has a matching label file")
    return pairs


@dataclass
class LoadedSupport:
    pair: SupportPair
    image: LoadedImage
    label: np.ndarray  # integer label map, same shape as image.data


def as_label_map(label: LoadedImage) -> np.ndarray:
    """A loaded label file as an int64 label map; non-integer values are an error naming
    the file, lossy JPEG masks are thresholded (with a warning)."""
    data = np.asarray(label.data)
    path = label.path
    if data.dtype == bool:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise ImageReadError(f"{path}: label map contains NaN/inf")
        rounded = np.round(data)
        if not np.allclose(data, rounded, atol=1e-3):
            raise ImageReadError(f"{path}: label values are not integers (e.g. "
                                 f"{data[np.abs(data - rounded) > 1e-3].flat[0]:.4g}); give "
                                 "a label map (0 = background, 1, 2, ... = structures)")
        data = rounded.astype(np.int64)
    elif not np.issubdtype(data.dtype, np.integer):
        raise ImageReadError(f"{path}: unsupported label type {data.dtype}")
    if data.size and data.min() < 0:
        raise ImageReadError(f"{path}: negative label value {int(data.min())}; give a label "
                             "map (0 = background, 1, 2, ... = structures)")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        values = np.unique(data)
        if values.size > 2:
            warnings.warn(f"{path}: JPEG label map with {values.size} grey values (lossy "
                          "compression); thresholded at half its maximum to 0/255", stacklevel=3)
            data = np.where(data > int(values.max()) // 2, 255, 0)
    return data.astype(np.int64)


def load_support(pair: SupportPair) -> LoadedSupport:
    """Read one pair; shapes must match and the image be finite (errors), NIfTI affines
    should match (warning)."""
    image = require_finite(load_image(pair.image))
    label = load_image(pair.label, as_label=True)
    if image.ndim != label.ndim or image.data.shape != label.data.shape:
        raise ImageReadError(f"{pair.label}: label shape {label.data.shape} does not match its "
                             f"image {pair.image.name} {image.data.shape}")
    if image.nifti is not None and label.nifti is not None and not np.allclose(
            image.nifti.affine, label.nifti.affine, atol=1e-3):
        warnings.warn(f"{pair.label}: affine differs from its image {pair.image.name}; using "
                      "the voxel grids as they are (check the label belongs to the image)",
                      stacklevel=2)
    return LoadedSupport(pair, image, as_label_map(label))
