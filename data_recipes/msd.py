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
from data_recipes.nifti_pairs import load_nifti_subject
from data_recipes.nnunet import find_dataset_dir, read_json
from incontext.data.readers import modality_from_name, strip_suffix
from incontext.data.recipe_tools import OptionsMixin, parse_labels


@dataclass
class MsdRecipe(OptionsMixin):
    name: str = "msd"
    dataset: str = ""
    channel: int = 0
    modality: str = ""
    modality_name: str = ""
    ct_window: tuple[float, float] | None = None
    source: str = ""
    citation: str = ""
    license: str = ""

    def _meta(self, source: Path) -> tuple[Path, dict]:
        root = find_dataset_dir(source)
        meta = read_json(root / "dataset.json")
        for key in ("labels", "modality", "training"):
            if key not in meta:
                raise RecipeError(f"{root / 'dataset.json'}: missing {key!r}")
        if not isinstance(meta["training"], list):
            raise RecipeError(f"{root / 'dataset.json'}: 'training' must be a list")
        return root, meta

    def describe(self, source: Path) -> DatasetInfo:
        root, meta = self._meta(source)
        labels = parse_labels(meta["labels"], str(root / "dataset.json"))
        modality_name = str(meta["modality"].get(str(self.channel), ""))
        if not modality_name:
            raise RecipeError(f"{root / 'dataset.json'}: no channel {self.channel} in modality")
        name = self.dataset or root.name.split("_", 1)[-1].lower()
        return DatasetInfo(
            name=name,
            modality=self.modality or modality_from_name(modality_name),
            modality_name=self.modality_name or modality_name,
            label_names=list(labels), dims=3,
            source=self.source or str(meta.get("reference") or root),
            citation=self.citation or str(meta.get("reference", "")),
            license=self.license or str(meta.get("licence", meta.get("license", ""))),
            ct_window=tuple(self.ct_window) if self.ct_window else None,
            extra={"msd_name": str(meta.get("name", root.name)), "labels": labels},
        )

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
