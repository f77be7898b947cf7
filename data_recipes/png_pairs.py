"""``png-pairs``: a folder of 2D images and a folder of masks, paired by relative path and stem.

Layout (defaults)::

    SOURCE/images/<rel>/<stem>.<png|jpg|tif|bmp|gif>
    SOURCE/masks/<rel>/<stem><mask_suffix>.<any image suffix>   (or SOURCE/labels/...)

Options (``build_index(..., recipe_options={...})`` or ``--option key=value``):

* ``dataset``: dataset name in the index (default: the source folder's name);
* ``images``, ``masks``: sub-folder names (``masks`` default: ``masks/``, else ``labels/``,
  as ``incontext segment --support-dir`` accepts); ``mask_suffix``: e.g. ``"_mask"``;
* ``labels``: label map mapping ``{name: value}`` / ``{value: name}`` (values may be lists);
  without it masks are binary (0/1 or 0/255, else set ``threshold``) with label ``label_name``;
* ``modality`` ("ct", "mr", "other"), ``modality_name``, ``spacing`` (mm per pixel),
  ``sub_dataset_from_folders`` (first folder level under ``images/`` is the sub-dataset),
  ``source``, ``citation``, ``license``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef
from incontext.data.readers import binary_mask, label_map_to_masks, read_image_2d
from incontext.data.recipe_tools import OptionsMixin, list_files, parse_labels, require_dir
from incontext.preprocessing import PreprocessingError, colour_channels, to_grayscale


@dataclass
class PngPairsRecipe(OptionsMixin):
    name: str = "png-pairs"
    dataset: str = ""
    images: str = "images"
    masks: str = ""  # "": masks/, else labels/
    mask_suffix: str = ""
    labels: dict[str, Any] | None = None
    label_name: str = "foreground"
    threshold: float | None = None
    modality: str = "other"
    modality_name: str = "image"
    spacing: float | None = None
    sub_dataset_from_folders: bool = False
    source: str = ""
    citation: str = ""
    license: str = ""

    def _labels(self) -> dict[str, list[int]] | None:
        return None if self.labels is None else parse_labels(self.labels, f"{self.name} labels")

    def describe(self, source: Path) -> DatasetInfo:
        labels = self._labels()
        return DatasetInfo(
            name=self.dataset or Path(source).resolve().name,
            modality=self.modality,
            modality_name=self.modality_name,
            label_names=list(labels) if labels else [self.label_name],
            dims=2,
            source=self.source or str(source),
            citation=self.citation,
            license=self.license,
        )

    def _masks_dir(self, source: Path) -> Path:
        if self.masks:
            return require_dir(source / self.masks, "masks")
        for name in ("masks", "labels"):
            if (source / name).is_dir():
                return source / name
        raise RecipeError(f"{source}: no masks/ or labels/ folder beside images/ (name "
                          f"another with --option masks=FOLDER)")

    def subjects(self, source: Path) -> list[SubjectRef]:
        images = list_files(require_dir(Path(source) / self.images, "images"))
        masks_dir = self._masks_dir(Path(source))
        masks = list_files(masks_dir)
        refs = []
        for key, image_path in images.items():
            mask_path = masks.get(key + self.mask_suffix)
            if mask_path is None:  # reported by load() so the builder can skip or stop
                mask_path = masks_dir / f"{key}{self.mask_suffix}{image_path.suffix}"
            sub = key.split("/", 1)[0] if self.sub_dataset_from_folders and "/" in key else ""
            refs.append(SubjectRef(key, {"image": image_path, "mask": mask_path}, sub_dataset=sub))
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        image_path, mask_path = ref.paths["image"], ref.paths["mask"]
        try:
            raw_image = read_image_2d(image_path)
            image = to_grayscale(raw_image, str(image_path))
        except PreprocessingError as exc:
            raise RecipeError(str(exc)) from None
        raw = read_image_2d(mask_path)
        labels = self._labels()
        if labels is None:
            masks = {self.label_name: binary_mask(raw, mask_path, self.threshold)}
        else:
            masks = label_map_to_masks(raw, labels, mask_path)
        spacing = (self.spacing, self.spacing) if self.spacing else None
        return Subject(ref.subject_id, image, masks, spacing=spacing, sub_dataset=ref.sub_dataset,
                       source_files=[str(image_path), str(mask_path)],
                       colour=colour_channels(raw_image))


RECIPE = PngPairsRecipe()
