"""Score saved models on a training config's validation episodes (model selection).

``incontext train --config C.toml --index ... --validate A B ...`` compares weights
(other runs' checkpoints, shipped models) on exactly the validation set a run of ``C``
would use: the training pool's val split and the held-back synthetic tasks. Selection
stays on training data; held-out benchmark tasks are never involved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from incontext.atomic import atomic_write_text
from incontext.training.config import ConfigError, TrainConfig, load_config
from incontext.training.distributed import resolve_device
from incontext.training.engine import build_sources, evaluate


def load_candidate(spec: str | Path) -> torch.nn.Module:
    """A model from a weights file, a checkpoint directory (``run/best``, ``run/last``,
    ``checkpoints/step-N``: the ``model.safetensors`` inside) or a registered name."""
    from incontext.models.io import CHECKPOINT_WEIGHTS, load
    from incontext.models.registry import available_models, load_model

    path = Path(spec)
    if path.is_dir() and not (path / CHECKPOINT_WEIGHTS).exists():
        raise FileNotFoundError(f"{path}: no {CHECKPOINT_WEIGHTS} in this directory")
    if path.exists():
        return load(path)  # a weights file, or a checkpoint folder's
    if str(spec) in available_models():
        return load_model(str(spec))
    raise FileNotFoundError(f"{spec}: no such weights file, checkpoint directory or "
                            f"registered model ({', '.join(available_models())})")


def manually_labelled(index: Any) -> list[str]:
    """The datasets of a task index whose masks are manual annotations: every dataset
    except those whose recipe marks them as pseudo-labelled (``extra["pseudo_labels"]``)."""
    keep = []
    for name in index.datasets:
        extra = index.dataset_attrs(name).get("extra", "{}")
        try:
            extra = json.loads(extra) if isinstance(extra, (str, bytes)) else dict(extra)
        except (TypeError, ValueError):
            extra = {}
        if "pseudo_labels" not in extra:
            keep.append(name)
    return keep


def real_dataset_mean(per_dataset: dict[str, float], datasets: Sequence[str]) -> float | None:
    """Mean of the per-dataset Dice over ``datasets`` (those present); None if none is."""
    values = [per_dataset[d] for d in datasets if d in per_dataset]
    return float(sum(values) / len(values)) if values else None


def validate_weights(config: TrainConfig | str | Path, candidates: Sequence[str | Path],
                     indexes: Sequence[str | Path] = (), *, index: Any = None,
                     device: str | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """Validation Dice of each candidate on ``config``'s validation episodes.

    Returns one dict per candidate: ``model`` (as given), ``val_dice`` (mean over
    tasks, the number runs select on), ``real_dice`` (mean over the manually labelled
    index datasets, without synthetic and pseudo-labelled ones; None without an index:
    the number a new default must also win, MODEL_CARD.md), ``per_dataset``,
    ``per_task``, ``n_tasks``.
    Models run at the config's resolution, whatever resolution they were trained at.
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    if not candidates:
        raise ConfigError("nothing to validate: name at least one weights file or model")
    models = [load_candidate(c) for c in candidates]  # fail on a bad name before the work
    if index is None:
        paths = list(dict.fromkeys([*cfg.data.indexes, *(str(p) for p in indexes)]))
        if paths:
            from incontext.data import TaskIndex

            index = TaskIndex.open([Path(p) for p in paths])
    _, episodes = build_sources(cfg, index)
    if not episodes:
        raise ConfigError("the config has no validation episodes (no index val split and "
                          "data.synthetic_val_tasks = 0)")
    real = manually_labelled(index) if index is not None else []
    dev = resolve_device(device or cfg.run.device)
    results = []
    for spec, model in _progress(list(zip(candidates, models, strict=True)), progress):
        scores = evaluate(model.to(dev), episodes, dev)
        results.append({"model": str(spec), **scores,
                        "real_dice": real_dataset_mean(scores["per_dataset"], real)})
    return results


def _progress(items: list, enabled: bool):
    if not enabled:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description="validate")


def print_validation(results: Sequence[dict[str, Any]]) -> None:
    """The models (numbered) and a table of Dice x 100 with one column per model: mean
    val Dice, then one row per dataset."""
    from rich.console import Console
    from rich.table import Table

    names = sorted({d for r in results for d in r["per_dataset"]})
    console = Console()
    needed = max(len(n) for n in [*names, "manually labelled datasets"]) + 9 * len(results) + 4
    if needed > console.width:  # never squeeze the numbers into "0.…"
        console = Console(width=needed)
    for i, r in enumerate(results, 1):
        console.print(f"[bold]{i}[/bold]  {r['model']}")
    best = max(r["val_dice"] for r in results)
    table = Table(title=f"validation Dice x 100 ({results[0]['n_tasks']} tasks; * best)")
    table.add_column("")
    for i, r in enumerate(results, 1):
        table.add_column(f"{i}" + (" *" if r["val_dice"] == best else ""), justify="right")
    table.add_row("val Dice", *(f"{100 * r['val_dice']:.1f}" for r in results))
    if any(r.get("real_dice") is not None for r in results):
        table.add_row("manually labelled datasets",
                      *(f"{100 * r['real_dice']:.1f}" if r.get("real_dice") is not None
                        else "-" for r in results), end_section=True)
    for d in names:
        table.add_row(d, *(f"{100 * r['per_dataset'][d]:.1f}" if d in r["per_dataset"] else "-"
                           for r in results))
    console.print(table)


def write_validation(results: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write ``results`` as JSON (through a temporary file, so a crash leaves no half file)."""
    atomic_write_text(path, json.dumps(list(results), indent=1) + "\n")
