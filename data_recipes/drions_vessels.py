"""Retinal vessels on the DRIONS-DB fundus photos, as pseudo-labels (no manual masks).

Same files as ``drions_od`` (``Dataset/image/{train,test}/image/image_NNN.jpg``); the vessel
mask of each photo is computed by :func:`incontext.data.pseudo_labels.vessel_pseudo_label`
(black top-hat of the equalised green channel, top 12 % of the field of view). A training
pool source of real vessel appearance: none of the training datasets has manual vessel
masks. The masks are approximate; never use this dataset to report vessel accuracy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from data_recipes._io import _open_pil, _pil_to_array
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef
from data_recipes.drions_od import RECIPE as DRIONS_OD
from incontext.data.pseudo_labels import PseudoLabelError, vessel_pseudo_label
from incontext.preprocessing import PreprocessingError, to_grayscale

LABELS = ["retinal vessels (pseudo)"]


class DrionsVesselsRecipe:
    name = "drions_vessels"

    def describe(self, source: Path) -> DatasetInfo:
        photos = DRIONS_OD.describe(source)  # same photos, modality, citation and terms
        return replace(
            photos, name=self.name, label_names=list(LABELS),
            source=f"{photos.source}; vessel masks are pseudo-labels "
                   "(incontext.data.pseudo_labels.vessel_pseudo_label)",
            extra={"pseudo_labels": "black top-hat, green channel, 12% of field of view"},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        refs = DRIONS_OD.subjects(source)
        return [SubjectRef(subject_id=r.subject_id, paths={"image": r.paths["image"]},
                           extra=dict(r.extra)) for r in refs]

    def load(self, ref: SubjectRef) -> Subject:
        path = Path(ref.paths["image"])
        rgb = _pil_to_array(_open_pil(path), path)
        try:
            mask = vessel_pseudo_label(rgb, what=str(path))
            grey = to_grayscale(rgb, what=str(path))
        except (PseudoLabelError, PreprocessingError) as exc:
            raise RecipeError(f"{path}: {exc}") from exc
        return Subject(subject_id=ref.subject_id, image=grey, masks={LABELS[0]: mask},
                       source_files=[str(path)])


RECIPE = DrionsVesselsRecipe()
