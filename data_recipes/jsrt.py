"""JSRT chest X-rays with SCR masks: five binary structures (0/255), 256x256 at 1.4 mm.

Left/right are the patient's (the patient's right lung is on the image's left).
Subject id = JSRT case id (``JPCLN001``); one radiograph per patient.
"""

from __future__ import annotations

from pathlib import Path

from data_recipes._io import read_binary_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

STRUCTURES = {  # label name -> mask folder stem
    "heart": "heart",
    "left lung": "left_lung",
    "right lung": "right_lung",
    "left clavicle": "left_clavicle",
    "right clavicle": "right_clavicle",
}
LABELS = list(STRUCTURES)
SPACING_MM = 1.4  # 0.175 mm x 2048/256 (README)


class JSRTRecipe:
    name = "jsrt"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="chest X-ray",
            label_names=list(LABELS),
            dims=2,
            source="JSRT database with SCR masks",
            citation=(
                "Shiraishi et al., AJR 174(1):71-74, 2000; van Ginneken, Stegmann, Loog, "
                "Segmentation of anatomical structures in chest radiographs, "
                "MedIA 10(1):19-40, 2006"
            ),
            license="SCR: research/education only, no redistribution; JSRT terms apply",
            extra={"laterality": "patient's left/right (patient's right lung is on image left)"},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        images = require_dir(Path(source) / "JSRT" / "jsrt_images" / "images", "JSRT images")
        masks = Path(source) / "JSRT" / "masks" / "masks"
        refs = []
        for image in sorted(images.glob("*.IMG.png")):
            cid = image.name[: -len(".IMG.png")]
            paths = {"image": image}
            paths.update({n: masks / f"{d}_png" / f"{cid}.png" for n, d in STRUCTURES.items()})
            refs.append(SubjectRef(subject_id=cid, paths=paths))
        if not refs:
            raise RecipeError(f"{images}: no <ID>.IMG.png images found")
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        masks = {n: (ref.paths[n], read_binary_mask(ref.paths[n])) for n in LABELS}
        return subject_2d(
            ref.subject_id, ref.paths["image"], masks, LABELS, spacing=(SPACING_MM, SPACING_MM)
        )


RECIPE = JSRTRecipe()
