"""HC18 fetal head ultrasound: ``training_set/NNN_[k]HC.png`` + ``_Annotation.png`` (0/255).

The subject id is the file stem (``000_HC``, ``000_2HC``); frames of one examination
share ``ref.extra["split_group"]`` = ``NNN``, which the index builder splits by, so
frames of one examination never land in different splits. Spacing comes from
``training_set_pixel_size_and_HC.csv``: the CSV pixel size
refers to the original 800x540 images, so for the 256x173 files here it is scaled by
800 / 256; files of other sizes (original size unknown) get no spacing.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from data_recipes._io import read_binary_mask, require_dir, require_file, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["fetal head"]
_STEM = re.compile(r"^(\d+)_(\d*)HC$")
_ORIGINAL_SHAPE = (540, 800)  # (H, W) of the standard HC18 images
_STORED_SHAPE = (173, 256)


class HC18Recipe:
    name = "hc18"

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="ultrasound",
            label_names=list(LABELS),
            dims=2,
            source="HC18 Grand Challenge (Zenodo 10.5281/zenodo.1322001), 400-pair subset",
            citation=(
                "van den Heuvel et al., Automated measurement of fetal head circumference "
                "using 2D ultrasound images, PLoS ONE 13(8):e0200412, 2018"
            ),
            license="CC BY 4.0 (original Zenodo release)",
            extra={"group_by": "examination number NNN"},
        )

    def _pixel_sizes(self, source: Path) -> dict[str, float]:
        path = require_file(Path(source) / "training_set_pixel_size_and_HC.csv")
        sizes: dict[str, float] = {}
        try:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    sizes[row["filename"].strip()] = float(row["pixel size(mm)"])
        except (KeyError, ValueError, csv.Error) as exc:
            raise RecipeError(f"{path}: cannot parse pixel sizes ({exc})") from exc
        return sizes

    def subjects(self, source: Path) -> list[SubjectRef]:
        folder = require_dir(Path(source) / "training_set", "HC18 training_set")
        sizes = self._pixel_sizes(source)
        refs = []
        for image in sorted(folder.glob("*HC.png")):
            m = _STEM.match(image.stem)
            if not m:
                continue
            extra = {"split_group": m.group(1)}
            if image.name in sizes:
                extra["csv_pixel_size_mm"] = sizes[image.name]
            refs.append(
                SubjectRef(
                    subject_id=image.stem,
                    paths={"image": image, "fetal head": folder / f"{image.stem}_Annotation.png"},
                    extra=extra,
                )
            )
        refs.sort(key=lambda r: r.subject_id)
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["fetal head"]
        subject = subject_2d(
            ref.subject_id, ref.paths["image"], {"fetal head": (mpath, read_binary_mask(mpath))},
            LABELS,
        )
        csv_size = ref.extra.get("csv_pixel_size_mm")
        if csv_size is not None and subject.image.shape == _STORED_SHAPE:
            s = csv_size * _ORIGINAL_SHAPE[1] / _STORED_SHAPE[1]
            subject.spacing = (s, s)
        return subject


RECIPE = HC18Recipe()
