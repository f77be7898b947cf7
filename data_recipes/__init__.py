"""Data recipes, found by name: ``png-pairs`` -> module ``data_recipes.png_pairs``,
attribute ``RECIPE``.

A recipe that takes options exposes ``with_options(**options) -> Recipe``;
:func:`get_recipe` applies them. A name of the form ``package.module:ATTR`` loads a
recipe from outside this package (your own code).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from data_recipes.base import RecipeError

_SKIP = {"base"}


def _module_name(name: str) -> str:
    return name.strip().replace("-", "_")


def available_recipes() -> list[str]:
    """Names of the modules in ``data_recipes`` that define ``RECIPE`` (sorted)."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _SKIP:
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception:  # a broken recipe module must not hide the others
            continue
        if hasattr(module, "RECIPE"):
            declared = str(getattr(module.RECIPE, "name", ""))
            names.append(declared if _module_name(declared) == info.name else info.name)
    return sorted(names)


def get_recipe(name: str, options: dict[str, Any] | None = None):
    """The recipe called ``name`` (``png-pairs`` and ``png_pairs`` both work), with ``options``."""
    if ":" in name:
        module_name, attr = name.split(":", 1)
        try:
            recipe = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise RecipeError(f"cannot load recipe {name!r}: {exc}") from None
    else:
        module_name = _module_name(name)
        if not module_name.isidentifier() or module_name in _SKIP or module_name.startswith("_"):
            recipe = None
        else:
            try:
                module = importlib.import_module(f"{__name__}.{module_name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{module_name}":
                    raise RecipeError(f"recipe {name!r} needs a missing module: {exc}") from None
                module = None
            recipe = getattr(module, "RECIPE", None)
        if recipe is None:
            raise RecipeError(
                f"unknown recipe {name!r}; available: {', '.join(available_recipes()) or 'none'}"
            )
    if options:
        if not hasattr(recipe, "with_options"):
            raise RecipeError(f"recipe {name!r} takes no options (got {sorted(options)})")
        recipe = recipe.with_options(**options)
    return recipe


__all__ = ["RecipeError", "available_recipes", "get_recipe"]
