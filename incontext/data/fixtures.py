"""Tiny generated datasets in the generic layouts, for tests and benchmarks.

Each writer makes random images with blob-shaped labels and returns the dataset folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _blob_labels(rng: np.random.Generator, shape: tuple[int, ...], n_labels: int) -> np.ndarray:
    """Label map (ints 0..n_labels) made of one ellipsoid per label at random centres."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    out = np.zeros(shape, dtype=np.uint8)
    for label in range(1, n_labels + 1):
        centre = [rng.uniform(0.25 * s, 0.75 * s) for s in shape]
        radius = [rng.uniform(0.12 * s, 0.3 * s) for s in shape]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radius, strict=True))
        out[inside <= 1] = label
    return out


def _image_for(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = rng.normal(0, 10, labels.shape) + 40.0 * labels
    return image.astype(np.float32)


def write_png_pairs(root: Path, n: int = 10, shape: tuple[int, int] = (40, 52),
                    n_labels: int = 1, rgb: bool = True, seed: int = 0,
                    mask_suffix: str = "") -> Path:
    """``root/images/case_XXX.png`` + ``root/masks/case_XXX<suffix>.png`` (0/255 or 0..L)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        labels = _blob_labels(rng, shape, n_labels)
        image = np.clip(_image_for(labels, rng) + 60, 0, 255).astype(np.uint8)
        if rgb:
            image = np.stack([image, image // 2, 255 - image], axis=-1)
        mask = (labels > 0).astype(np.uint8) * 255 if n_labels == 1 else labels
        Image.fromarray(image).save(root / "images" / f"case_{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"case_{i:03d}{mask_suffix}.png")
    return root


def _save_nifti(path: Path, data: np.ndarray, spacing: tuple[float, ...]) -> None:
    import nibabel as nib

    affine = np.diag([*spacing[:3], 1.0]) if len(spacing) >= 3 else np.eye(4)
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(spacing[: data.ndim])
    nib.save(img, str(path))


def write_nnunet(root: Path, n: int = 6, shape: tuple[int, int, int] = (14, 12, 10),
                 label_names: tuple[str, ...] = ("liver", "tumour"), channel: str = "CT",
                 spacing: tuple[float, float, float] = (1.5, 1.0, 2.0), seed: int = 0,
                 name: str = "Dataset042_Toy") -> Path:
    """An nnU-Net v2 raw dataset folder ``root/<name>`` with ``n`` 3D cases."""
    rng = np.random.default_rng(seed)
    ds = Path(root) / name
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        labels = _blob_labels(rng, shape, len(label_names))
        image = _image_for(labels, rng) * 10 - 200
        _save_nifti(ds / "imagesTr" / f"toy_{i:03d}_0000.nii.gz", image.astype(np.int16), spacing)
        _save_nifti(ds / "labelsTr" / f"toy_{i:03d}.nii.gz", labels, spacing)
    meta = {"channel_names": {"0": channel},
            "labels": {"background": 0, **{n_: i + 1 for i, n_ in enumerate(label_names)}},
            "numTraining": n, "file_ending": ".nii.gz"}
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds


def write_msd(root: Path, n: int = 5, shape: tuple[int, int, int] = (12, 12, 8),
              label_names: tuple[str, ...] = ("edema", "tumour"),
              modalities: tuple[str, ...] = ("FLAIR", "T1w"), seed: int = 0,
              name: str = "Task99_Toy") -> Path:
    """A Medical Segmentation Decathlon task folder with 4D multi-channel images."""
    rng = np.random.default_rng(seed)
    ds = Path(root) / name
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n):
        labels = _blob_labels(rng, shape, len(label_names))
        base = _image_for(labels, rng)
        image = np.stack([base * (c + 1) for c in range(len(modalities))], -1)
        _save_nifti(ds / "imagesTr" / f"toy_{i:03d}.nii.gz", image, (1.0, 1.0, 1.0, 1.0))
        _save_nifti(ds / "labelsTr" / f"toy_{i:03d}.nii.gz", labels, (1.0, 1.0, 1.0))
        training.append({"image": f"./imagesTr/toy_{i:03d}.nii.gz",
                         "label": f"./labelsTr/toy_{i:03d}.nii.gz"})
    meta = {"name": "Toy", "modality": {str(i): m for i, m in enumerate(modalities)},
            "labels": {"0": "background", **{str(i + 1): n_ for i, n_ in enumerate(label_names)}},
            "numTraining": n, "training": training, "test": []}
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds


def write_nifti_pairs(root: Path, n: int = 5, shape: tuple[int, int, int] = (10, 12, 8),
                      seed: int = 0, image_suffix: str = "") -> Path:
    """``root/images/sXX<suffix>.nii.gz`` + ``root/labels/sXX.nii.gz`` with labels 1 and 2."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        labels = _blob_labels(rng, shape, 2)
        _save_nifti(root / "images" / f"s{i:02d}{image_suffix}.nii.gz", _image_for(labels, rng),
                    (0.8, 0.8, 1.5))
        _save_nifti(root / "labels" / f"s{i:02d}.nii.gz", labels, (0.8, 0.8, 1.5))
    return root
