"""``nifti-pairs``: a folder of NIfTI images and a folder of NIfTI label maps, paired by stem.

Layout (defaults)::

    SOURCE/images/<rel>/<stem>[_0000].nii[.gz]
    SOURCE/labels/<rel>/<stem>.nii[.gz]

Options: ``dataset`` (name in the index, default the source folder's name), ``images``,
``labels_dir``, ``image_suffix`` (e.g. ``"_0000"``: stripped from image stems before pairing),
``labels`` (``{name: value}`` or ``{value: name}``; default: binary 0/1 masks named
``label_name``), ``modality`` ("ct", "mr", "other"; default "mr"), ``modality_name``,
``ct_window``, ``channel`` (for 4D images), ``dims`` (3, or 2 for 2D NIfTI),
``source``, ``citation``, ``license``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_recipes.base import DatasetInfo, Subject, SubjectRef
from incontext.data.readers import (
    NIFTI_SUFFIXES,
    binary_mask,
    label_map_to_masks,
    read_nifti,
    select_channel,
)
from incontext.data.recipe_tools import OptionsMixin, list_files, parse_labels, require_dir


def load_nifti_subject(ref: SubjectRef, labels: dict[str, list[int]] | None, label_name: str,
                       dims: int, channel: int) -> Subject:
    """Read ``ref.paths['image']`` and ``ref.paths['label']`` into a Subject."""
    image_path, label_path = ref.paths["image"], ref.paths["label"]
    image, spacing, affine = read_nifti(image_path)
    image = select_channel(image, dims, channel, image_path)
    label, _, _ = read_nifti(label_path)
    label = select_channel(label, dims, 0, label_path)
    if labels is None:
        masks = {label_name: binary_mask(label, label_path)}
    else:
        masks = label_map_to_masks(label, labels, label_path)
    return Subject(ref.subject_id, image, masks, spacing=tuple(spacing[:dims]), affine=affine,
                   sub_dataset=ref.sub_dataset, source_files=[str(image_path), str(label_path)])


@dataclass
class NiftiPairsRecipe(OptionsMixin):
    name: str = "nifti-pairs"
    dataset: str = ""
    images: str = "images"
    labels_dir: str = "labels"
    image_suffix: str = ""
    labels: dict[str, Any] | None = None
    label_name: str = "foreground"
    modality: str = "mr"
    modality_name: str = "MRI"
    ct_window: tuple[float, float] | None = None
    channel: int = 0
    dims: int = 3
    source: str = ""
    citation: str = ""
    license: str = ""

    def describe(self, source: Path) -> DatasetInfo:
        labels = None if self.labels is None else parse_labels(self.labels, f"{self.name} labels")
        return DatasetInfo(
            name=self.dataset or Path(source).resolve().name,
            modality=self.modality, modality_name=self.modality_name,
            label_names=list(labels) if labels else [self.label_name], dims=self.dims,
            source=self.source or str(source), citation=self.citation, license=self.license,
            ct_window=tuple(self.ct_window) if self.ct_window else None,
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        images = list_files(require_dir(Path(source) / self.images, "images"), NIFTI_SUFFIXES)
        labels = list_files(require_dir(Path(source) / self.labels_dir, "labels"), NIFTI_SUFFIXES)
        refs = []
        for key, image_path in images.items():
            if self.image_suffix and not key.endswith(self.image_suffix):
                continue
            stem = key[: len(key) - len(self.image_suffix)] if self.image_suffix else key
            label_path = labels.get(stem, Path(source) / self.labels_dir / f"{stem}.nii.gz")
            refs.append(SubjectRef(stem, {"image": image_path, "label": label_path}))
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        labels = None if self.labels is None else parse_labels(self.labels, f"{self.name} labels")
        return load_nifti_subject(ref, labels, self.label_name, self.dims, self.channel)


RECIPE = NiftiPairsRecipe()
