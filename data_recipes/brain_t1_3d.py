"""Brain T1 MRI with FreeSurfer aseg labels: ``t1.nii.gz``, ``aseg.nii.gz``, ``labels.json``.

One subject (the VoxelMorph example scan). Labels: every non-zero value listed in
``labels.json``, named by its FreeSurfer name (``Left-Hippocampus``, ...), in value
order. The volume is stored in FreeSurfer's LIA orientation; it is reoriented to RAS+
(nibabel closest canonical) so that axis 0 is sagittal, 1 coronal and 2 axial, like
the other 3D recipes, and the affine follows. Masks are computed on access from the
label map (``Subject.masks.label_map``) to keep memory low.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_recipes._io import LabelMapMasks, check_label_values, read_nifti, require_dir
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef


def read_label_names(path: Path) -> dict[str, int]:
    """``labels.json`` ({"value": "name"}) -> {name: value} for non-zero values, value order."""
    try:
        raw = json.loads(Path(path).read_text())
        pairs = sorted((int(k), str(v)) for k, v in raw.items())
    except FileNotFoundError:
        raise RecipeError(f"{path}: file not found") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise RecipeError(f"{path}: cannot read label names ({exc})") from None
    names = {name: value for value, name in pairs if value != 0}
    if len(names) != sum(1 for v, _ in pairs if v != 0):
        raise RecipeError(f"{path}: duplicate label names")
    return names


class BrainT1Recipe:
    name = "brain_t1_3d"

    def describe(self, source: Path) -> DatasetInfo:
        labels = read_label_names(Path(source) / "labels.json")
        return DatasetInfo(
            name=self.name,
            modality="mr",
            modality_name="T1 MRI",
            label_names=list(labels),
            dims=3,
            source="VoxelMorph example scan (voxelmorph/voxelmorph data/test_scan.npz)",
            citation=(
                "Balakrishnan et al., VoxelMorph, IEEE TMI 38(8):1788-1800, 2019; labels: "
                "Fischl et al., Whole brain segmentation, Neuron 33(3):341-355, 2002"
            ),
            license="Apache-2.0 (source repository)",
            extra={"label_values": labels, "labels": "FreeSurfer aseg (automatic)",
                   "orientation": "reoriented to RAS+"},
        )

    def subjects(self, source: Path) -> list[SubjectRef]:
        source = require_dir(Path(source), "brain_t1_3d")
        return [
            SubjectRef(
                subject_id="voxelmorph_test_scan",
                paths={
                    "image": source / "t1.nii.gz",
                    "label": source / "aseg.nii.gz",
                    "labels_json": source / "labels.json",
                },
            )
        ]

    def load(self, ref: SubjectRef) -> Subject:
        names = read_label_names(ref.paths["labels_json"])
        image, affine, spacing = read_nifti(ref.paths["image"])
        label, _, _ = read_nifti(ref.paths["label"])
        if label.shape != image.shape:
            raise RecipeError(
                f"{ref.paths['label']}: label shape {label.shape} does not match image "
                f"shape {image.shape}"
            )
        if label.dtype.kind == "f":
            if not np.array_equal(label, np.round(label)):
                raise RecipeError(f"{ref.paths['label']}: non-integer label values")
        label = np.asarray(label).astype(np.int32)
        check_label_values(label, [0, *names.values()], ref.paths["label"])
        return Subject(
            subject_id=ref.subject_id,
            image=np.asarray(image),
            masks=LabelMapMasks(label, names),
            spacing=spacing,
            affine=affine,
            source_files=[str(p) for p in ref.paths.values()],
        )


RECIPE = BrainT1Recipe()
