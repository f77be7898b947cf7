"""Weights I/O: safetensors + a JSON config, and safe loading of foreign checkpoints.

A saved model is two files side by side::

    name.safetensors   tensors only (no pickle)
    name.json          {"format": 1, "architecture": "universeg", "config": {...},
                        "preprocessing": {...}, "provenance": {...}}

Both are written to temporary files and renamed, so an interrupted save never
leaves a half-written model behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from incontext.atomic import atomic_write, atomic_write_text
from incontext.models.universeg import UniverSeg, UniverSegConfig

CHECKPOINT_WEIGHTS = "model.safetensors"  # the weights file inside a training checkpoint

FORMAT_VERSION = 1
ARCHITECTURES: dict[str, tuple[type[nn.Module], Any]] = {
    "universeg": (UniverSeg, UniverSegConfig),
}


class WeightsError(ValueError):
    """A weights file or config that cannot be loaded; the message names the file."""


def architecture_of(model: nn.Module) -> str:
    for name, (cls, _) in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise WeightsError(f"unknown model class {type(model).__name__}")


def register_architecture(name: str, model_cls: type[nn.Module], config_cls: Any) -> None:
    """Make ``save``/``load`` know another model family (config needs to_dict/from_dict)."""
    ARCHITECTURES[name] = (model_cls, config_cls)


def config_path_for(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save(model: nn.Module, path: str | Path, *, preprocessing: dict | None = None,
         provenance: dict | None = None) -> Path:
    """Save ``model`` as ``path`` (.safetensors) plus ``path.with_suffix('.json')``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: weights files must end in .safetensors")
    arch = architecture_of(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(
        tensors, str(tmp), metadata={"architecture": arch, "format": str(FORMAT_VERSION)}))
    meta = {
        "format": FORMAT_VERSION,
        "architecture": arch,
        "config": model.config.to_dict(),
        "preprocessing": preprocessing or {"modality": "other", "normalization": "min-max"},
        "provenance": provenance or {},
    }
    atomic_write_text(config_path_for(path), json.dumps(meta, indent=2))
    return path


def read_config(path: str | Path) -> dict:
    """The JSON config saved next to a weights file."""
    cfg_path = config_path_for(path)
    if not cfg_path.exists():
        raise WeightsError(f"{cfg_path}: config file missing (expected next to {Path(path).name})")
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{cfg_path}: not a readable JSON config ({exc})") from exc
    for key in ("architecture", "config"):
        if key not in meta:
            raise WeightsError(f"{cfg_path}: missing key {key!r}")
    if meta["architecture"] not in ARCHITECTURES:
        raise WeightsError(f"{cfg_path}: unknown architecture {meta['architecture']!r} "
                           f"(known: {sorted(ARCHITECTURES)})")
    return meta


def build_from_config(meta: dict) -> nn.Module:
    model_cls, config_cls = ARCHITECTURES[meta["architecture"]]
    try:
        config = config_cls.from_dict(dict(meta["config"]))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"invalid model config: {exc}") from exc
    return model_cls(config)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by :func:`save` (eval mode); ``path`` is its weights file or a
    folder holding ``model.safetensors`` (a training checkpoint such as ``RUN/best``)."""
    path = weights_file(path)
    meta = read_config(path)
    model = build_from_config(meta)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: not a valid safetensors file ({exc})") from exc
    load_state_dict_checked(model, state, path)
    model.weights_meta = meta  # type: ignore[attr-defined]
    return model.eval()


def weights_file(path: str | Path) -> Path:
    """``path``, or ``path/model.safetensors`` when ``path`` is a folder (a checkpoint);
    WeightsError naming it when there is no such file."""
    path = Path(path)
    if path.is_dir():
        inner = path / CHECKPOINT_WEIGHTS
        if not inner.is_file():
            raise WeightsError(f"{path}: a folder without {CHECKPOINT_WEIGHTS}; give a weights "
                               "file or a checkpoint folder (e.g. RUN/best)")
        return inner
    if not path.exists():
        raise WeightsError(f"{path}: weights file not found")
    return path


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor],
                            source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {k}: file "
                         f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise WeightsError(f"{source}: weights do not fit the architecture: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_foreign_checkpoint(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a PyTorch checkpoint (e.g. the public UniverSeg ``.pt``) into ``model``.

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers are
    accepted, arbitrary pickled objects are refused. Accepts a bare state dict or
    one nested under ``state_dict`` / ``model``, with an optional ``module.`` prefix.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise WeightsError(f"{path}: cannot be loaded safely as a weights-only checkpoint "
                           f"({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    load_state_dict_checked(model, state, path)
    return model.eval()
