"""DRIONS-DB optic disc: ``Dataset/image/{train,test}/{image,groundtruth}/image_NNN.jpg``.

Masks are lossy JPEGs: grey > 127 = optic disc. One image per eye/patient as far as
the source says, so the subject id is ``image_NNN``; ``extra["source_split"]`` keeps
the source repository's train/test folder (not an official split).
"""

from __future__ import annotations

from pathlib import Path

from data_recipes._io import read_threshold_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["optic disc"]


class DrionsODRecipe:
    name = "drions_od"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="colour fundus photography",
            label_names=list(LABELS),
            dims=2,
            source="DRIONS-DB (via DeepTrial/Optic-Disc-Unet)",
            citation=(
                "Carmona et al., Identification of the optic nerve head with genetic "
                "algorithms, Artificial Intelligence in Medicine 43(3):243-259, 2008"
            ),
            license="research use (see original distribution)",
            extra={"mask_threshold": 127},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        root = require_dir(Path(source) / "Dataset" / "image", "DRIONS Dataset/image")
        refs = []
        for split in ("train", "test"):
            for image in sorted((root / split / "image").glob("*.jpg")):
                refs.append(
                    SubjectRef(
                        subject_id=image.stem,
                        paths={
                            "image": image,
                            "optic disc": root / split / "groundtruth" / image.name,
                        },
                        extra={"source_split": split},
                    )
                )
        if not refs:
            raise RecipeError(f"{root}: no {{train,test}}/image/*.jpg found")
        refs.sort(key=lambda r: r.subject_id)
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["optic disc"]
        return subject_2d(
            ref.subject_id, ref.paths["image"], {"optic disc": (mpath, read_threshold_mask(mpath))},
            LABELS,
        )


RECIPE = DrionsODRecipe()
