"""Models by name (timm-style): architecture configs and where their weights live."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from incontext.device import resolve_device
from incontext.models.io import WeightsError, load, load_foreign_checkpoint
from incontext.models.text_driven import TextDriven, TextDrivenConfig
from incontext.models.universeg import UniverSeg, UniverSegConfig, parameter_count

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    """A named model: how to build it and where its weights come from.

    ``weights`` is a file name in ``incontext/weights/`` (shipped), or None when
    the user must supply ``path=`` (e.g. the public UniverSeg file, which we
    may not redistribute).
    """

    name: str
    config: UniverSegConfig | TextDrivenConfig
    weights: str | None
    description: str


REGISTRY: dict[str, ModelSpec] = {}
DEFAULT_MODEL: str | None = "incontext-universeg-s128-colour"  # see MODEL_CARD.md
DEFAULT_TEXT_MODEL: str | None = "text-driven-minilm"  # for --text; see docs/text-driven.md


def register(spec: ModelSpec) -> ModelSpec:
    REGISTRY[spec.name] = spec
    return spec


def register_shipped(name: str, config: UniverSegConfig | TextDrivenConfig,
                     description: str) -> ModelSpec:
    """Register a model whose weights ship as ``incontext/weights/<name>.safetensors``."""
    return register(ModelSpec(name=name, config=config, weights=f"{name}.safetensors",
                              description=description))


UNIVERSEG_S128 = UniverSegConfig(encoder_widths=(32, 32, 32, 32), resolution=128)


register(ModelSpec(
    name="universeg-v1",
    config=UniverSegConfig(encoder_widths=(64, 64, 64, 64), resolution=128),
    weights=None,
    description="Published UniverSeg v1 architecture (Butoi et al., ICCV 2023); load the "
                "public universeg_v1_nf64_ss64_STA.pt with path=...",
))


register_shipped(
    "incontext-universeg-s64", UniverSegConfig(encoder_widths=(32, 32, 32, 32), resolution=64),
    "UniverSeg, 4 blocks x 32 features, 64x64, meta-trained on the training pool + synthetic "
    "tasks on 2 CPU cores; 4x cheaper than the default (MODEL_CARD.md)",
)

register_shipped(
    "incontext-universeg-s128", UNIVERSEG_S128,
    "UniverSeg, 4 blocks x 32 features, 128x128; the 64-px model fine-tuned at 128 px with "
    "batch 16 on a GPU; the default before the thin-structure fine-tune (MODEL_CARD.md)",
)

register_shipped(
    "incontext-universeg-s128-thin", UNIVERSEG_S128,
    "Previous default: UniverSeg, 4 blocks x 32 features, 128x128; incontext-universeg-s128 "
    "fine-tuned on 2 CPU cores with thin-structure synthetic tasks added (MODEL_CARD.md)",
)

register_shipped(
    "incontext-universeg-s128-vessels", UNIVERSEG_S128,
    "Previous default: UniverSeg, 4 blocks x 32 features, 128x128; "
    "incontext-universeg-s128-thin fine-tuned on 2 CPU cores with pseudo-labelled retinal "
    "vessels on real fundus photos added (MODEL_CARD.md)",
)

register_shipped(
    "incontext-universeg-s128-colour", UNIVERSEG_S128,
    "Default model: UniverSeg, 4 blocks x 32 features, 128x128; "
    "incontext-universeg-s128-vessels fine-tuned at batch 16 on one H200 with half of the "
    "colour datasets' episodes rendered red, green, blue or Fisher (MODEL_CARD.md)",
)

register_shipped(
    "incontext-universeg-w64-vessels",
    UniverSegConfig(encoder_widths=(64, 64, 64, 64), resolution=128),
    "UniverSeg at the published width, 4 blocks x 64 features, 128x128, trained on one H200 "
    "with thin synthetic tasks and pseudo-labelled retinal vessels; best training-pool "
    "validation, but below the default on the demo and held-out tasks and 3x slower on a "
    "CPU (MODEL_CARD.md)",
)

register_shipped(
    "text-driven-minilm",
    TextDrivenConfig(widths=(16, 32, 64, 128), norm_groups=8, resolution=128, text_dim=384,
                     text_encoder="minilm", hybrid=True),
    "TextDriven (CLIP-Driven Universal Model in 2D, hybrid text + examples), all-MiniLM-L6-v2 "
    "class names, 128x128, trained on the real multi-label training pool on 1 CPU thread "
    "(docs/text-driven.md); needs incontext[text]",
)


def available_models() -> list[str]:
    return sorted(REGISTRY)


def create_model(name: str) -> nn.Module:
    """A registered architecture with freshly initialised weights."""
    config = _spec(name).config
    if isinstance(config, TextDrivenConfig):
        return TextDriven(config)
    return UniverSeg(config)


def _spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise WeightsError(f"unknown model {name!r}; available: {available_models()} "
                           "(or give a path to a .safetensors file)")
    return REGISTRY[name]


def load_model(name: str | None = None, path: str | Path | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """Load a model by registry name, by weights path, or the default model (eval mode).

    * ``load_model()`` -> the shipped default model;
    * ``load_model("universeg-v1", path="universeg_v1_nf64_ss64_STA.pt")`` -> the
      published weights (read with ``torch.load(weights_only=True)``);
    * ``load_model("path/to/model.safetensors")`` -> a model saved by ``incontext``;
    * ``load_model("a+b")`` -> models ``a`` and ``b`` (names or files) as one, their
      probabilities averaged (:class:`incontext.models.ensemble.ModelEnsemble`).

    ``device``: where the model runs (:func:`incontext.device.resolve_device`: ``"auto"``,
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``); :func:`incontext.segment` follows it.
    """
    return _load_on_cpu(name, path).to(resolve_device(str(device)))


def _load_on_cpu(name: str | None, path: str | Path | None) -> nn.Module:
    if name is None:
        if DEFAULT_MODEL is None:
            raise WeightsError(
                "no default model is shipped with this version of incontext yet; "
                "pass a weights file (load_model('model.safetensors')) or "
                "load_model('universeg-v1', path=...)"
            )
        name = DEFAULT_MODEL
    if "+" in name and name not in REGISTRY and not Path(name).exists():
        from incontext.models.ensemble import ModelEnsemble

        if path is not None:
            raise WeightsError(f"{name!r}: path= is for one model, not an ensemble")
        parts = [p.strip() for p in name.split("+")]
        if any(not p for p in parts):
            raise WeightsError(f"{name!r}: an ensemble is model names joined by '+', e.g. "
                               "incontext-universeg-s128-colour+incontext-universeg-s128-vessels")
        try:
            return ModelEnsemble([_load_on_cpu(p, None) for p in parts], parts)
        except ValueError as exc:
            raise WeightsError(f"{name!r}: {exc}") from None
    if name not in REGISTRY and (name.endswith(".safetensors") or Path(name).exists()):
        return load(name)
    spec = _spec(name)
    if path is not None:
        path = Path(path)
        if path.suffix == ".safetensors":
            return load(path)
        return load_foreign_checkpoint(path, UniverSeg(spec.config))
    if spec.weights is None:
        raise WeightsError(f"model {name!r} has no shipped weights; pass path= to its weights "
                           "file")
    return load(WEIGHTS_DIR / spec.weights)


def _tensor_values(path: Path) -> int:
    """Values stored in a .safetensors file, read from its header (no tensor is loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def model_info(name: str) -> dict[str, Any]:
    """What a registered model is: family, input size, parameter count, weights, role.

    ``weights`` is the shipped file (``None`` when the user supplies it with ``path=``);
    ``role`` is ``"default"`` (what ``load_model()`` returns), ``"default text"`` (what
    ``--text`` uses) or ``""``. Parameters are counted from the weights file's header, or
    from a fresh instance when nothing is shipped.
    """
    spec = _spec(name)
    weights = None if spec.weights is None else WEIGHTS_DIR / spec.weights
    if weights is not None and weights.exists():
        params = _tensor_values(weights)
        size = weights.stat().st_size
    else:
        params = parameter_count(create_model(name))
        size = None
    family = "TextDriven" if isinstance(spec.config, TextDrivenConfig) else "UniverSeg"
    widths = (spec.config.widths if isinstance(spec.config, TextDrivenConfig)
              else spec.config.encoder_widths)
    role = ("default" if name == DEFAULT_MODEL else
            "default text" if name == DEFAULT_TEXT_MODEL else "")
    return {"name": name, "family": family, "widths": list(widths),
            "resolution": spec.config.resolution, "parameters": params,
            "weights": None if weights is None else str(weights), "weights_bytes": size,
            "role": role, "description": spec.description}
