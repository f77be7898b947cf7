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

import json
from dataclasses import dataclass
from pathlib import Path

from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef
from data_recipes.nifti_pairs import load_nifti_subject
from incontext.data.readers import label_map_to_masks, modality_from_name, read_image_2d
from incontext.data.recipe_tools import OptionsMixin, parse_labels, require_dir
from incontext.preprocessing import PreprocessingError, to_grayscale


def find_dataset_dir(source: Path, marker: str = "dataset.json") -> Path:
    """``source`` if it holds ``marker``, else its single sub-folder that does."""
    source = require_dir(Path(source), "dataset")
    if (source / marker).is_file():
        return source
    found = sorted(p.parent for p in source.glob(f"*/{marker}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise RecipeError(f"{source}: no {marker} here or in a direct sub-folder")
    raise RecipeError(f"{source}: several datasets found ({[p.name for p in found]}); pick one")


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or a RecipeError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a JSON object")
    return data


@dataclass
class NnUNetRecipe(OptionsMixin):
    name: str = "nnunet"
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
        for key in ("labels", "channel_names"):
            if key not in meta:
                raise RecipeError(f"{root / 'dataset.json'}: missing {key!r}")
        return root, meta

    def describe(self, source: Path) -> DatasetInfo:
        root, meta = self._meta(source)
        labels = parse_labels(meta["labels"], str(root / "dataset.json"))
        channel_name = str(meta["channel_names"].get(str(self.channel), ""))
        if not channel_name:
            raise RecipeError(f"{root / 'dataset.json'}: no channel {self.channel} in channel_names")
        name = self.dataset or root.name.split("_", 1)[-1].lower()
        dims = 2 if meta.get("file_ending", ".nii.gz") in (".png", ".bmp", ".tif", ".jpg") else 3
        return DatasetInfo(
            name=name,
            modality=self.modality or modality_from_name(channel_name),
            modality_name=self.modality_name or channel_name,
            label_names=list(labels), dims=dims,
            source=self.source or str(meta.get("reference") or root),
            citation=self.citation or str(meta.get("reference", "")),
            license=self.license or str(meta.get("licence", meta.get("license", ""))),
            ct_window=tuple(self.ct_window) if self.ct_window else None,
            extra={"nnunet_name": root.name, "labels": labels, "dims": dims},
        )

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
