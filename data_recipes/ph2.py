"""PH2 dermoscopy: ``PH2Dataset/PH2 Dataset images/IMDxxx/...`` image + lesion mask (0/255).

One image per patient lesion, so the subject id is ``IMDxxx``; colour -> grey.
``extra["diagnosis"]`` holds the CSV's clinical diagnosis when present
(0 common nevus, 1 atypical nevus, 2 melanoma).
"""

from __future__ import annotations

import csv
from pathlib import Path

from data_recipes._io import read_binary_mask, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["lesion"]


class PH2Recipe:
    name = "ph2"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="dermoscopy",
            label_names=list(LABELS),
            dims=2,
            source="PH2 dermoscopic image database (Hospital Pedro Hispano)",
            citation=(
                "Mendonça et al., PH2 - A dermoscopic image database for research and "
                "benchmarking, IEEE EMBC 2013, pp. 5437-5440"
            ),
            license="free for research and benchmarking",
        )

    def _diagnoses(self, source: Path) -> dict[str, str]:
        path = Path(source) / "PH2Dataset" / "PH2_dataset.csv"
        if not path.is_file():
            return {}
        out = {}
        try:
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                for row in csv.DictReader(f):
                    name = (row.get("Name") or "").strip()
                    if name.startswith("IMD"):
                        out[name] = (row.get("Clinical Diagnosis") or "").strip()
        except csv.Error as exc:
            raise RecipeError(f"{path}: cannot parse CSV ({exc})") from exc
        return out

    def subjects(self, source: Path) -> list[SubjectRef]:
        root = require_dir(Path(source) / "PH2Dataset" / "PH2 Dataset images", "PH2 images")
        diagnoses = self._diagnoses(source)
        refs = []
        for case in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("IMD")):
            cid = case.name
            extra = {"diagnosis": diagnoses[cid]} if cid in diagnoses else {}
            refs.append(
                SubjectRef(
                    subject_id=cid,
                    paths={
                        "image": case / f"{cid}_Dermoscopic_Image" / f"{cid}.png",
                        "lesion": case / f"{cid}_lesion" / f"{cid}_lesion.png",
                    },
                    extra=extra,
                )
            )
        if not refs:
            raise RecipeError(f"{root}: no IMDxxx case folders found")
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["lesion"]
        return subject_2d(
            ref.subject_id, ref.paths["image"], {"lesion": (mpath, read_binary_mask(mpath))}, LABELS
        )


RECIPE = PH2Recipe()
