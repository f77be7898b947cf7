"""``nnunet``: an nnU-Net v2 raw dataset (``DatasetXXX_Name/imagesTr, labelsTr, dataset.json``).

``dataset.json`` gives ``labels`` (name -> int, or a list of ints for regions; "background"
and "ignore" are skipped), ``channel_names`` (``{"0": "CT"}``; CT -> ct normalisation,
MRI/T1/T2/FLAIR/... -> mr, else other) and ``file_ending`` (".nii.gz", or ".png" for 2D).
SOURCE is the ``DatasetXXX_Name`` folder or a folder holding exactly one such dataset.

Options: ``dataset`` (name in the index; default the folder name without ``DatasetXXX_``,
lower-case), ``channel`` (which input channel, default 0), ``modality``/``modality_name``
(override the guess), ``ct_window``, ``source``, ``citation``, ``license``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef
from data_recipes.dataset_json import DatasetJsonRecipe, find_dataset_dir, read_json
from data_recipes.nifti_pairs import load_nifti_subject
from incontext.data.readers import label_map_to_masks, read_image_2d
from incontext.data.recipe_tools import require_dir
from incontext.preprocessing import PreprocessingError, to_grayscale

__all__ = ["NnUNetRecipe", "RECIPE", "find_dataset_dir", "read_json"]


@dataclass
class NnUNetRecipe(DatasetJsonRecipe):
    name: str = "nnunet"
    required_keys = ("labels", "channel_names")
    channel_key = "channel_names"

    def describe(self, source: Path) -> DatasetInfo:
        root, meta = self._meta(source)
        dims = 2 if meta.get("file_ending", ".nii.gz") in (".png", ".bmp", ".tif", ".jpg") else 3
        return self._info(root, meta, dims, {"nnunet_name": root.name, "dims": dims})

    def subjects(self, source: Path) -> list[SubjectRef]:
        root, meta = self._meta(source)
        ending = str(meta.get("file_ending", ".nii.gz"))
        labels_dir = require_dir(root / "labelsTr", "labelsTr")
        images_dir = require_dir(root / "imagesTr", "imagesTr")
        info = self.describe(source)
        refs = []
        for label_path in sorted(labels_dir.glob(f"*{ending}")):
            case = label_path.name[: -len(ending)]
            image_path = images_dir / f"{case}_{self.channel:04d}{ending}"
            refs.append(SubjectRef(case, {"image": image_path, "label": label_path},
                                   extra={"labels": info.extra["labels"], "dims": info.dims}))
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        labels, dims = ref.extra["labels"], ref.extra["dims"]
        if dims == 3:
            return load_nifti_subject(ref, labels, "", 3, 0)
        image_path, label_path = ref.paths["image"], ref.paths["label"]
        try:
            image = to_grayscale(read_image_2d(image_path), str(image_path))
        except PreprocessingError as exc:
            raise RecipeError(str(exc)) from None
        masks = label_map_to_masks(read_image_2d(label_path), labels, label_path)
        return Subject(ref.subject_id, image, masks,
                       source_files=[str(image_path), str(label_path)])


RECIPE = NnUNetRecipe()
