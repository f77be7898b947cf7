"""What every data recipe provides: dataset facts and subjects with geometry.

A recipe module in ``data_recipes/`` (``png-pairs`` -> ``data_recipes/png_pairs.py``)
exposes ``RECIPE``, an object with:

* ``name: str``
* ``describe(source: Path) -> DatasetInfo`` — dataset-level facts;
* ``subjects(source: Path) -> list[SubjectRef]`` — cheap listing, sorted, stable ids;
* ``load(ref: SubjectRef) -> Subject`` — reads the files; raises ``RecipeError``
  naming the file and the problem.

A recipe may describe several sub-datasets (``SubjectRef.sub_dataset``), e.g. WBC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np


class RecipeError(ValueError):
    """Bad input found by a recipe; the message names the file and the problem."""


@dataclass
class DatasetInfo:
    name: str
    modality: str  # "ct", "mr" or "other" (intensity normalisation family)
    modality_name: str  # human readable, e.g. "ultrasound", "T1 MRI"
    label_names: list[str]  # foreground labels, one binary task each
    dims: int  # 2 or 3
    source: str = ""
    citation: str = ""
    license: str = ""
    ct_window: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class SubjectRef:
    subject_id: str
    paths: dict[str, Path]
    sub_dataset: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Subject:
    """One subject (a 2D image or a 3D volume) with its masks and geometry.

    image: (H, W) or (X, Y, Z) raw intensities (colour already converted to grey)
    masks: label name -> bool array of the image's shape (names from DatasetInfo)
    spacing: mm per pixel/voxel along each axis, when known; affine: 4x4 for NIfTI
    colour: (H, W, 3) raw RGB of a colour 2D image (None for grey images and volumes);
    the index stores it beside the grey image (``colour`` array, docs/index-format.md)
    """

    subject_id: str
    image: np.ndarray
    masks: dict[str, np.ndarray]
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    sub_dataset: str = ""
    source_files: list[str] = field(default_factory=list)
    colour: np.ndarray | None = None


class Recipe(Protocol):
    name: str

    def describe(self, source: Path) -> DatasetInfo: ...

    def subjects(self, source: Path) -> list[SubjectRef]: ...

    def load(self, ref: SubjectRef) -> Subject: ...
