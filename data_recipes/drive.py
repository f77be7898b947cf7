"""DRIVE retinal vessels: ``DRIVE/{training,test}/{images,1st_manual,mask}/``.

Labels: ``vessel`` (first observer's manual segmentation, the usual reference) and
``field of view`` (the FOV mask, 255 inside): metrics for ``vessel`` should be
computed inside the FOV, which ``DatasetInfo.extra["evaluation_mask"]`` names. The
test images' second observer is not a label; its path is kept in
``ref.paths["vessel_2nd_observer"]`` (palette GIF, threshold 127 after grey).
Subject id = image number ``NN`` (one image per eye); ``extra["source_split"]``.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_recipes._io import read_binary_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["vessel", "field of view"]


class DRIVERecipe:
    name = "drive"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="colour fundus photography",
            label_names=list(LABELS),
            dims=2,
            source="DRIVE (via orobix/retina-unet)",
            citation=(
                "Staal et al., Ridge-based vessel segmentation in color images of the retina, "
                "IEEE TMI 23(4):501-509, 2004"
            ),
            license="research/education only; no redistribution (DRIVE terms)",
            extra={"evaluation_mask": "field of view", "reference": "1st_manual"},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        root = require_dir(Path(source) / "DRIVE", "DRIVE")
        refs = []
        for split in ("training", "test"):
            for image in sorted((root / split / "images").glob(f"*_{split}.png")):
                m = re.fullmatch(rf"(\d+)_{split}", image.stem)
                if not m:
                    continue
                nn = m.group(1)
                paths = {
                    "image": image,
                    "vessel": root / split / "1st_manual" / f"{nn}_manual1.gif",
                    "field of view": root / split / "mask" / f"{nn}_{split}_mask.gif",
                }
                second = root / split / "2nd_manual" / f"{nn}_manual2.gif"
                if second.is_file():
                    paths["vessel_2nd_observer"] = second
                refs.append(SubjectRef(subject_id=nn, paths=paths, extra={"source_split": split}))
        if not refs:
            raise RecipeError(f"{root}: no {{training,test}}/images/NN_<split>.png found")
        refs.sort(key=lambda r: r.subject_id)
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        masks = {n: (ref.paths[n], read_binary_mask(ref.paths[n])) for n in LABELS}
        return subject_2d(ref.subject_id, ref.paths["image"], masks, LABELS)


RECIPE = DRIVERecipe()
