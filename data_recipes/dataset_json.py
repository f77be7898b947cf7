"""Shared parts of the recipes for folders described by a ``dataset.json`` (nnU-Net, MSD).

``DatasetJsonRecipe`` holds the options both layouts take, finds and checks the
``dataset.json`` and fills the :class:`DatasetInfo` fields they share; the subclasses say
which keys are required, where the modality comes from, and how subjects are listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from data_recipes.base import DatasetInfo, RecipeError
from incontext.data.readers import modality_from_name
from incontext.data.recipe_tools import OptionsMixin, parse_labels, require_dir


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
class DatasetJsonRecipe(OptionsMixin):
    """Options shared by the ``dataset.json`` layouts (see the subclasses' docstrings)."""

    name: str = ""
    dataset: str = ""
    channel: int = 0
    modality: str = ""
    modality_name: str = ""
    ct_window: tuple[float, float] | None = None
    source: str = ""
    citation: str = ""
    license: str = ""

    required_keys: ClassVar[tuple[str, ...]] = ()  # dataset.json keys this layout needs
    channel_key: ClassVar[str] = ""  # the dataset.json key naming the input channels

    def _meta(self, source: Path) -> tuple[Path, dict]:
        root = find_dataset_dir(source)
        meta = read_json(root / "dataset.json")
        for key in self.required_keys:
            if key not in meta:
                raise RecipeError(f"{root / 'dataset.json'}: missing {key!r}")
        return root, meta

    def _info(self, root: Path, meta: dict, dims: int, extra: dict) -> DatasetInfo:
        """The DatasetInfo both layouts share; ``extra`` gets the parsed labels added."""
        where = str(root / "dataset.json")
        labels = parse_labels(meta["labels"], where)
        channels = meta[self.channel_key]
        channel_name = str(channels.get(str(self.channel), "")) if isinstance(channels,
                                                                               dict) else ""
        if not channel_name:
            raise RecipeError(f"{where}: no channel {self.channel} in {self.channel_key}")
        return DatasetInfo(
            name=self.dataset or root.name.split("_", 1)[-1].lower(),
            modality=self.modality or modality_from_name(channel_name),
            modality_name=self.modality_name or channel_name,
            label_names=list(labels), dims=dims,
            source=self.source or str(meta.get("reference") or root),
            citation=self.citation or str(meta.get("reference", "")),
            license=self.license or str(meta.get("licence", meta.get("license", ""))),
            ct_window=tuple(self.ct_window) if self.ct_window else None,
            extra={**extra, "labels": labels},
        )
