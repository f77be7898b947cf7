"""Kvasir-SEG mini: ``images/<id>.jpg`` + ``masks/<id>.jpg`` (3-channel JPEG, > 127 = polyp).

Subject id = frame id (the source gives no patient grouping for these 22 frames).
"""

from __future__ import annotations

from pathlib import Path

from data_recipes._io import read_threshold_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["polyp"]


class KvasirMiniRecipe:
    name = "kvasir_mini"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="endoscopy (colonoscopy)",
            label_names=list(LABELS),
            dims=2,
            source="Kvasir-SEG mini_test sample (via sarah-antillia/...Gastrointestinal-Polyp)",
            citation="Jha et al., Kvasir-SEG: a segmented polyp dataset, MMM 2020, LNCS 11962",
            license="research and educational use",
            extra={"mask_threshold": 127},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        images = require_dir(Path(source) / "images", "Kvasir images")
        refs = [
            SubjectRef(
                subject_id=image.stem,
                paths={"image": image, "polyp": Path(source) / "masks" / image.name},
            )
            for image in sorted(images.glob("*.jpg"))
        ]
        if not refs:
            raise RecipeError(f"{images}: no *.jpg images found")
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["polyp"]
        return subject_2d(
            ref.subject_id, ref.paths["image"], {"polyp": (mpath, read_threshold_mask(mpath))},
            LABELS,
        )


RECIPE = KvasirMiniRecipe()
