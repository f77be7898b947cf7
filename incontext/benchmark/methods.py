"""Methods the benchmark runs: the classic baselines and an in-context model adapter.

Every method has ``name``, ``describe()`` and ``predict(support_images, support_labels,
query_images, *, seed) -> (Q, H, W)`` probabilities, the interface of
:mod:`incontext.baselines`. Only the in-context model supports support-set ensembling
(``ensembles = True``).

The ``prototype`` baseline uses its fixed random-feature encoder, not the model's: a
UniverSeg encoder has no support-independent image features (every CrossBlock mixes the
query with the support set), so exposing it as a plain feature extractor would mean
inventing a support set; see docs/benchmark.md.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from incontext.baselines import BASELINES, get_baseline
from incontext.calibration import THRESHOLD_GRID, rescale_to_threshold, support_calibration
from incontext.inference import predict_probabilities
from incontext.tiling import (
    check_tiles,
    choose_tiles,
    is_auto,
    predict_tiled,
    resize_stack,
    tile_options,
)
from incontext.tta import check_tta


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the model's parameter and buffer values."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode("utf-8"))
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class ModelMethod:
    """An in-context segmentation model (UniverSeg-style) behind the baseline interface.

    Images are resized (bilinear) to the model resolution when the index size differs, labels
    likewise as soft masks, and probabilities back to the index size. ``threshold="auto"``
    picks a cut per task and draw on the support set (:func:`incontext.calibration.
    support_calibration`) and returns probabilities rescaled so that the cut is 0.5.
    """

    ensembles = True

    def __init__(self, model: nn.Module, name: str = "model", source: str | None = None,
                 batch_size: int = 8, tiles: int | str = 1,
                 threshold: float | str = 0.5, tta: int = 1) -> None:
        check_tta(tta)
        check_tiles(tiles)
        if not (threshold == "auto" or (isinstance(threshold, (int, float))
                                        and 0.0 < threshold < 1.0)):
            raise ValueError(f"threshold must be in (0, 1) or 'auto', got {threshold!r}")
        self.model = model.eval()
        self.name = name if tiles == 1 else f"{name}-tiles{'-' if is_auto(tiles) else ''}{tiles}"
        if threshold != 0.5:
            self.name += "-thr-auto" if threshold == "auto" else f"-thr{float(threshold):g}"
        if tta != 1:
            self.name += f"-tta{tta}"
        self.tta = tta
        self.threshold = threshold
        self.source = source
        self.batch_size = int(batch_size)
        self.tiles = tiles
        self.resolution = int(getattr(getattr(model, "config", None), "resolution", 128))
        self.fingerprint = weights_fingerprint(model)
        self.chosen_tiles: list[int] = []  # with tiles="auto": the choice of each prediction
        self.chosen_thresholds: list[float] = []  # with threshold="auto": likewise

    def _run(self, tiles: int, queries: torch.Tensor, support_images: torch.Tensor,
             support_labels: torch.Tensor) -> torch.Tensor:
        """Probabilities at the input size, the model run whole (1) or on tiles (> 1)."""
        r = self.resolution * tiles
        qi, si = resize_stack(queries, r), resize_stack(support_images, r)
        sl = resize_stack(support_labels, r).clamp(0, 1)

        def run(q: torch.Tensor, s_img: torch.Tensor, s_lab: torch.Tensor) -> torch.Tensor:
            return predict_probabilities(self.model, q, s_img, s_lab,
                                         batch_size=self.batch_size, tta=self.tta)

        prob = run(qi, si, sl) if tiles == 1 else predict_tiled(run, qi, si, sl,
                                                                 self.resolution)
        return resize_stack(prob, tuple(queries.shape[-2:]))

    def predict(self, support_images: np.ndarray, support_labels: np.ndarray,
                query_images: np.ndarray, *, seed: int) -> np.ndarray:
        """(Q, H, W) foreground probabilities; deterministic for a given ``seed``."""
        si = torch.from_numpy(np.ascontiguousarray(support_images, np.float32))
        sl = torch.from_numpy(np.ascontiguousarray(support_labels, np.float32))
        qi = torch.from_numpy(np.ascontiguousarray(query_images, np.float32))
        tiles, threshold = self.tiles, self.threshold
        if threshold == "auto":
            cal = support_calibration(self._run, si, sl, tile_options(tiles), THRESHOLD_GRID,
                                      seed=seed)
            tiles, threshold = cal.tiles, cal.threshold
            self.chosen_thresholds.append(threshold)
        elif is_auto(tiles):
            tiles, _ = choose_tiles(self._run, si, sl, tile_options(tiles), seed=seed)
        if is_auto(self.tiles):
            self.chosen_tiles.append(int(tiles))
        prob = self._run(int(tiles), qi, si, sl).clamp(0, 1)
        prob = rescale_to_threshold(prob, float(threshold))
        return prob.numpy().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "kind": "in-context model",
                                "resolution": self.resolution,
                                "class": type(self.model).__name__}
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            info["config"] = config.to_dict()
        if self.source:
            info["source"] = self.source
        if self.tiles != 1:  # only then, so rows cached before tiling existed stay valid
            info["tiles"] = self.tiles
        if self.threshold != 0.5:  # likewise
            info["threshold"] = self.threshold
        if self.tta != 1:  # likewise
            info["tta"] = self.tta
        info["weights_sha256"] = self.fingerprint  # new weights under the same name: new rows
        return info


def resolve_baselines(spec: str | Sequence[str] | None) -> list[str]:
    """``"all"``, ``"none"``/None, ``"a,b"`` or a list -> validated baseline names."""
    if spec is None:
        return []
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(BASELINES)
        if spec.strip().lower() in ("", "none"):
            return []
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    names = list(dict.fromkeys(spec))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from "
                         f"{', '.join(BASELINES)} or 'all'")
    return names


def make_baselines(names: Sequence[str],
                   settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[Any]:
    """Instantiate baselines with per-method keyword settings ({name: {key: value}})."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"settings given for baseline(s) not being run: {unknown}")
    out = []
    for name in names:
        try:
            out.append(get_baseline(name, **dict(settings.get(name, {}))))
        except TypeError as exc:
            raise ValueError(f"baseline {name!r}: bad settings {settings.get(name)}: {exc}"
                             ) from None
    return out


def load_model_method(model: str | os.PathLike | nn.Module | None, tiles: int | str = 1,
                      threshold: float | str = 0.5,
                      tta: int = 1) -> tuple[ModelMethod | None, str | None]:
    """The model to benchmark, and a note when there is none.

    ``None`` -> the default model (``load_model()``); when no default model is shipped the
    note says so and the benchmark runs the baselines only. ``"none"`` -> no model.
    A name or a weights path -> ``load_model(name)``; an ``nn.Module`` is used as is.
    """
    from incontext.models import WeightsError, load_model

    if isinstance(model, nn.Module):
        return ModelMethod(model, name=getattr(model, "benchmark_name", "model"),
                           tiles=tiles, threshold=threshold, tta=tta), None
    if model is None:
        try:
            loaded = load_model()
        except WeightsError as exc:
            return None, f"no default model: {exc}; running the baselines only"
        from incontext.models import registry

        return ModelMethod(loaded, name=str(registry.DEFAULT_MODEL or "default-model"),
                           source=str(registry.DEFAULT_MODEL), tiles=tiles,
                           threshold=threshold, tta=tta), None
    text = os.fspath(model)
    if text.strip().lower() == "none":
        return None, None
    loaded = load_model(text)
    name = Path(text).stem if (text.endswith(".safetensors") or Path(text).exists()) else text
    return ModelMethod(loaded, name=name, source=text, tiles=tiles, threshold=threshold, tta=tta), None
