"""MoNuSeg H&E nuclei: ``datasets/MoNuSegTrainingData/{Tissue_Images,Binary_masks}/<id>.png``.

Masks are 0/1 (1 = nucleus). Subject id = image id; ``extra["split_group"]`` = TCGA patient
barcode (first three fields, e.g. ``TCGA-21-5784``), which the index builder splits
by, so images of one patient stay together. Pixels are about 0.5 um after downsampling.
"""

from __future__ import annotations

from pathlib import Path

from data_recipes._io import read_binary_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["nucleus"]
SPACING_MM = 5e-4


class MoNuSegRecipe:
    name = "monuseg"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="histopathology (H&E)",
            label_names=list(LABELS),
            dims=2,
            source="MoNuSeg 2018 training data (via ykrmm/monuseg)",
            citation=(
                "Kumar et al., IEEE TMI 36(7):1550-1560, 2017; Kumar et al., A multi-organ "
                "nucleus segmentation challenge, IEEE TMI 39(5):1380-1391, 2020"
            ),
            license="CC BY-NC-SA 4.0",
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        root = require_dir(
            Path(source) / "datasets" / "MoNuSegTrainingData", "MoNuSeg MoNuSegTrainingData"
        )
        refs = []
        for image in sorted((root / "Tissue_Images").glob("*.png")):
            patient = "-".join(image.stem.split("-")[:3])
            refs.append(
                SubjectRef(
                    subject_id=image.stem,
                    paths={"image": image, "nucleus": root / "Binary_masks" / image.name},
                    extra={"split_group": patient},
                )
            )
        if not refs:
            raise RecipeError(f"{root / 'Tissue_Images'}: no <id>.png images found")
        refs.sort(key=lambda r: r.subject_id)
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["nucleus"]
        mask = read_binary_mask(mpath, foreground=1, allowed=(0, 1))
        return subject_2d(
            ref.subject_id, ref.paths["image"], {"nucleus": (mpath, mask)}, LABELS,
            spacing=(SPACING_MM, SPACING_MM),
        )


RECIPE = MoNuSegRecipe()
