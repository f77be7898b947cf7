"""Helpers for recipes that take options (``with_options``) and find paired files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from data_recipes.base import RecipeError
from incontext.data.readers import IMAGE_SUFFIXES, strip_suffix


class OptionsMixin:
    """For dataclass recipes: ``with_options(**kw)`` returns a copy with fields replaced.

    Unknown option names are an error listing the known ones.
    """

    def with_options(self, **options: Any):
        fields = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(options) - fields)
        if unknown:
            raise RecipeError(
                f"recipe {getattr(self, 'name', '?')!r}: unknown option(s) {unknown}; "
                f"known: {sorted(fields - {'name'})}"
            )
        return dataclasses.replace(self, **options)  # type: ignore[type-var]


def require_dir(path: Path, what: str) -> Path:
    """``path`` as a directory, or a RecipeError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise RecipeError(f"{path}: {what} folder not found")
    return path


def list_files(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Files under ``root`` (recursive) keyed by relative path without suffix, sorted."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if (path.is_file() and path.name.lower().endswith(suffixes)
                and not path.name.startswith(".")):
            rel = path.relative_to(root)
            key = (rel.parent / strip_suffix(rel.name, suffixes)).as_posix()
            found.setdefault(key, path)
    return found


def parse_labels(labels: Any, where: str) -> dict[str, list[int]]:
    """Label option -> {name: [values]}: accepts {name: int|[int]} or {int: name}."""
    if not isinstance(labels, dict) or not labels:
        raise RecipeError(f"{where}: labels must be a non-empty mapping, got {labels!r}")
    out: dict[str, list[int]] = {}
    for key, value in labels.items():
        key_is_int = (isinstance(key, int)
                      or (isinstance(key, str) and key.strip().lstrip("-").isdigit()))
        if key_is_int and isinstance(value, str):
            name, values = value, [int(key)]
        elif isinstance(value, int) and not isinstance(value, bool):
            name, values = str(key), [value]
        elif isinstance(value, list | tuple) and all(isinstance(v, int) for v in value):
            name, values = str(key), [int(v) for v in value]
        else:
            raise RecipeError(f"{where}: cannot read label entry {key!r}: {value!r}")
        if name.lower() in ("background", "ignore") or values == [0]:
            continue
        out[name] = values
    if not out:
        raise RecipeError(f"{where}: no foreground labels in {labels!r}")
    return out
