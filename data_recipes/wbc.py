"""WBC white blood cells: ``Dataset 1/NNN.bmp`` (+ ``NNN.png`` mask), same for ``Dataset 2``.

Two sub-datasets (``dataset_1``: Jiangxi Tecom, 120x120; ``dataset_2``: CellaVision,
300x300) x two labels: ``cytoplasm`` (mask value 128) and ``nucleus`` (255). Every
mask value is mapped to the nearest of 0/128/255 first, as the README prescribes
(a few Dataset 2 masks have stray values 2-50, which become background).
Subject id = ``dataset_1_001`` etc.: one image per cell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_recipes._io import read_mask_values, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["cytoplasm", "nucleus"]
SUB_DATASETS = {"dataset_1": "Dataset 1", "dataset_2": "Dataset 2"}  # name -> folder
_LEVELS = np.array([0, 128, 255])


def nearest_level(values: np.ndarray) -> np.ndarray:
    """Map each mask value to the nearest of 0/128/255."""
    return _LEVELS[np.abs(values[..., None] - _LEVELS).argmin(-1)]


class WBCRecipe:
    name = "wbc"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="light microscopy (blood smear)",
            label_names=list(LABELS),
            dims=2,
            source="segmentation_WBC Datasets 1 (Jiangxi Tecom) and 2 (CellaVision blog)",
            citation=(
                "Zheng, Wang, Wang, Liu, Fast and robust segmentation of white blood cell images "
                "by self-supervised learning, Micron 107:55-71, 2018"
            ),
            license="GPL-3.0 (source repository)",
            extra={"sub_datasets": list(SUB_DATASETS), "mask_values": {"cytoplasm": 128,
                                                                        "nucleus": 255}},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        source = require_dir(Path(source), "WBC")
        refs = []
        for sub, folder_name in SUB_DATASETS.items():
            folder = source / folder_name
            if not folder.is_dir():
                continue
            for image in sorted(folder.glob("*.bmp")):
                refs.append(
                    SubjectRef(
                        subject_id=f"{sub}_{image.stem}",
                        paths={"image": image, "mask": image.with_suffix(".png")},
                        sub_dataset=sub,
                    )
                )
        if not refs:
            raise RecipeError(f"{source}: no 'Dataset 1'/'Dataset 2' *.bmp images found")
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["mask"]
        levels = nearest_level(read_mask_values(mpath))
        masks = {"cytoplasm": (mpath, levels == 128), "nucleus": (mpath, levels == 255)}
        return subject_2d(
            ref.subject_id, ref.paths["image"], masks, LABELS, sub_dataset=ref.sub_dataset
        )


RECIPE = WBCRecipe()
