"""ISBI 2012 EM (ssTEM, Drosophila VNC): ``data/membrane/train/{image,label}/N.png``.

Label: ``membrane`` = pixels with value 0 in the label files (255 is cell interior),
the challenge's segmentation target; cell interior is its complement and is not a
separate task. The 30 sections are consecutive slices of one stack, so contiguous
blocks of ``block`` sections (default 5) share ``extra["split_group"]``
(``sections_00-04``, ...), which the index builder splits by; the subject id is the
section (``section_07``). Pixels are about 4 nm.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_recipes._io import binary_from_values, read_mask_values, require_dir, subject_2d
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

LABELS = ["membrane"]
SPACING_MM = 4e-6  # about 4 nm per pixel (README)


class ISBIEMRecipe:
    name = "isbi_em"

    def __init__(self, block: int = 5):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.block = block

    def describe(self, source: Path) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            modality="other",
            modality_name="electron microscopy (ssTEM)",
            label_names=list(LABELS),
            dims=2,
            source="ISBI 2012 EM segmentation challenge training volume (via zhixuhao/unet)",
            citation=(
                "Cardona et al., PLoS Biology 8(10):e1000502, 2010; Arganda-Carreras et al., "
                "Crowdsourcing the creation of image segmentation algorithms for connectomics, "
                "Frontiers in Neuroanatomy 9:142, 2015"
            ),
            license="cite the publications (no data licence stated)",
            extra={"label_source": "membrane = label value 0", "section_block": self.block},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        root = require_dir(Path(source) / "data" / "membrane" / "train", "ISBI EM train")
        numbers = sorted(
            int(p.stem) for p in (root / "image").glob("*.png") if re.fullmatch(r"\d+", p.stem)
        )
        if not numbers:
            raise RecipeError(f"{root / 'image'}: no N.png sections found")
        refs = []
        for n in numbers:
            start = (n // self.block) * self.block
            group = f"sections_{start:02d}-{start + self.block - 1:02d}"
            refs.append(
                SubjectRef(
                    subject_id=f"section_{n:02d}",
                    paths={"image": root / "image" / f"{n}.png",
                           "membrane": root / "label" / f"{n}.png"},
                    extra={"split_group": group, "section": n},
                )
            )
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        mpath = ref.paths["membrane"]
        membrane = binary_from_values(read_mask_values(mpath), mpath, 0, (0, 255))
        return subject_2d(
            ref.subject_id, ref.paths["image"], {"membrane": (mpath, membrane)}, LABELS,
            spacing=(SPACING_MM, SPACING_MM),
        )


RECIPE = ISBIEMRecipe()
