"""BUSI breast ultrasound: ``data/<class>/images/<class> (N).png`` + ``mask/..._mask*.png``.

One label, ``lesion`` = union of all mask files of an image (normal images: empty).
The source has many duplicated images (also across benign/malignant, with slightly
different crops): images whose 16x16 grey thumbnails correlate above 0.995 are
grouped (union-find) under one ``extra["split_group"]`` (the first member's id),
which the index builder splits by, so a duplicate never leaks across splits. The
subject id is the image's own ``<class>_NNN``; ``extra["class"]`` is its class.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from data_recipes._io import read_binary_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["lesion"]
CLASSES = ("benign", "malignant", "normal")
_NAME = re.compile(r"^(benign|malignant|normal) \((\d+)\)$")
DUPLICATE_CORRELATION = 0.995


def _thumbnail(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            small = im.convert("L").resize((16, 16), Image.BILINEAR)
    except OSError as exc:
        raise RecipeError(f"{path}: unreadable image ({exc})") from exc
    a = np.asarray(small, dtype=np.float32).ravel()
    a = a - a.mean()
    return a / (np.linalg.norm(a) + 1e-6)


def duplicate_groups(paths: list[Path], threshold: float = DUPLICATE_CORRELATION) -> list[int]:
    """Group index (smallest member index) per path; near-identical images share one."""
    if not paths:
        return []
    thumbs = np.stack([_thumbnail(p) for p in paths])
    corr = thumbs @ thumbs.T
    parent = list(range(len(paths)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(corr > threshold, k=1)), strict=True):
        a, b = find(int(i)), find(int(j))
        parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(paths))]


class BUSIRecipe:
    name = "busi"

    def __init__(self, group_duplicates: bool = True):
        self.group_duplicates = group_duplicates

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="ultrasound",
            label_names=list(LABELS),
            dims=2,
            source="BUSI (Dataset_BUSI_with_GT), 468-image subset",
            citation=(
                "Al-Dhabyani et al., Dataset of breast ultrasound images, "
                "Data in Brief 28:104863, 2020"
            ),
            license="research use (see original distribution)",
            extra={"group_by": "near-duplicate images (thumbnail correlation > 0.995)"},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        root = require_dir(Path(source) / "data", "BUSI data")
        items = []
        for cls in CLASSES:
            folder = root / cls / "images"
            if not folder.is_dir():
                continue
            for image in folder.glob("*.png"):
                m = _NAME.match(image.stem)
                if m:
                    items.append((cls, int(m.group(2)), image))
        if not items:
            raise RecipeError(f"{root}: no BUSI images found in <class>/images/")
        items.sort(key=lambda t: (CLASSES.index(t[0]), t[1]))
        ids = [f"{cls}_{n:03d}" for cls, n, _ in items]
        paths = [image for _, _, image in items]
        if self.group_duplicates:
            groups = [ids[g] for g in duplicate_groups(paths)]
        else:
            groups = ids
        refs = []
        for (cls, _, image), image_id, group in zip(items, ids, groups, strict=True):
            masks = sorted(
                image.parent.parent.glob(f"mask/{image.stem}_mask*.png"),
                key=lambda p: (len(p.name), p.name),
            )
            paths_ = {"image": image}
            paths_.update({f"mask{i}": m for i, m in enumerate(masks)})
            refs.append(
                SubjectRef(
                    subject_id=image_id, paths=paths_,
                    extra={"split_group": group, "class": cls},
                )
            )
        refs.sort(key=lambda r: r.subject_id)
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mask_paths = [p for k, p in sorted(ref.paths.items()) if k.startswith("mask")]
        if not mask_paths:
            raise RecipeError(f"{ref.paths['image']}: no mask file (<name>_mask.png) found")
        union = None
        for mpath in mask_paths:
            mask = read_binary_mask(mpath)
            if union is not None and mask.shape != union.shape:
                raise RecipeError(f"{mpath}: mask shape {mask.shape} differs from {union.shape}")
            union = mask if union is None else union | mask
        subject = subject_2d(
            ref.subject_id, ref.paths["image"], {"lesion": (mask_paths[0], union)}, LABELS
        )
        subject.source_files = [str(ref.paths["image"])] + [str(p) for p in mask_paths]
        return subject


RECIPE = BUSIRecipe()
