"""``msd``: a Medical Segmentation Decathlon task folder (``TaskXX_Name/dataset.json``).

``dataset.json`` gives ``labels`` (int -> name; "background" skipped), ``modality``
(``{"0": "CT"}``, or several channels for multi-modal 4D images) and ``training``, a list
of ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``.
SOURCE is the task folder or a folder holding exactly one.

Options: ``dataset`` (name in the index; default the folder name without ``TaskXX_``,
lower-case), ``channel`` (default 0), ``modality``/``modality_name`` (override),
``ct_window``, ``source``, ``citation``, ``license``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef
from data_recipes.dataset_json import DatasetJsonRecipe
from data_recipes.nifti_pairs import load_nifti_subject
from incontext.data.readers import strip_suffix


@dataclass
class MsdRecipe(DatasetJsonRecipe):
    name: str = "msd"
    required_keys = ("labels", "modality", "training")
    channel_key = "modality"

    def _meta(self, source: Path) -> tuple[Path, dict]:
        root, meta = super()._meta(source)
        if not isinstance(meta["training"], list):
            raise RecipeError(f"{root / 'dataset.json'}: 'training' must be a list")
        return root, meta

    def describe(self, source: Path) -> DatasetInfo:
        root, meta = self._meta(source)
        return self._info(root, meta, 3, {"msd_name": str(meta.get("name", root.name))})

    def subjects(self, source: Path) -> list[SubjectRef]:
        root, meta = self._meta(source)
        labels = self.describe(source).extra["labels"]
        refs = []
        for i, entry in enumerate(meta["training"]):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise RecipeError(f"{root / 'dataset.json'}: training[{i}] needs image and label")
            image, label = root / entry["image"], root / entry["label"]
            refs.append(SubjectRef(strip_suffix(Path(entry["image"]).name),
                                   {"image": image, "label": label}, extra={"labels": labels}))
        return sorted(refs, key=lambda r: r.subject_id)

    def load(self, ref: SubjectRef) -> Subject:
        return load_nifti_subject(ref, ref.extra["labels"], "", 3, self.channel)


RECIPE = MsdRecipe()
