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
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from incontext.baselines import BASELINES, get_baseline
from incontext.baselines.supervised_unet import SupervisedUNet
from incontext.calibration import (
    THRESHOLD_GRID,
    Calibration,
    rescale_to_threshold,
    support_calibration,
)
from incontext.colour import (
    DEFAULT_COLOUR,
    candidates,
    check_colour,
    check_rgb,
    choose_rendering,
    renderings,
)
from incontext.hand_over import (
    DEFAULT_FOLDS,
    DEFAULT_MARGIN,
    DEFAULT_UNET_STEPS,
    check_settings,
    cross_validated_dice,
    prefers_unet,
)
from incontext.inference import predict_probabilities
from incontext.refine import check_refine, choose_refine, refine_probabilities, resolve_refine
from incontext.support_flips import (
    check_support_flips,
    choose_support_flips,
    flipped_copies,
    resolve_support_flips,
)
from incontext.support_selection import check_nearest, resolve_nearest
from incontext.tiling import (
    TiledRunner,
    check_tiles,
    choose_tiles,
    is_auto,
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
    ``colour`` other than ``"luma"`` renders colour tasks to grey another way
    (:mod:`incontext.colour`; ``"auto"``: chosen per task and draw on the support set);
    tasks without colour keep their grey images. ``nearest`` = k runs each query with the k
    supports most like it (:mod:`incontext.support_selection`), in the support-set checks too;
    ``"default"`` as ``segment`` does by default (16 with more than 16 supports, else all).
    ``hand_over=True`` compares the model with a ``supervised-unet`` (grey, ``unet_steps``)
    on the supports of each task and draw, by ``folds``-fold cross-validation, and lets the
    U-Net segment the queries when it wins by more than ``margin`` (:mod:`incontext.hand_over`;
    ``chosen_methods`` records each choice, ``last_method`` the latest).
    ``support_flips`` ``"on"`` adds flipped copies of the supports for the queries,
    ``"auto"`` where they segment the supports better (:mod:`incontext.support_flips`;
    ``chosen_flips`` records each choice), ``"default"`` as ``segment`` does by default
    (auto with 1 to 4 supports, else off); the cut, tiling and rendering are chosen first,
    on the supports as given. ``refine`` ``"on"`` passes the model's probabilities through a
    pixel head fitted on the supports, ``"auto"`` where it beats the model on them
    (:mod:`incontext.refine`; ``chosen_refine`` records each choice), ``"default"`` as
    ``segment`` does by default; decided after the flips.
    """

    ensembles = True

    def __init__(self, model: nn.Module, name: str = "model", source: str | None = None,
                 batch_size: int | None = None, tiles: int | str = 1,
                 threshold: float | str = 0.5, tta: int = 1, colour: str = DEFAULT_COLOUR,
                 nearest: int | str | None = None, hand_over: bool = False,
                 margin: float = DEFAULT_MARGIN, folds: int = DEFAULT_FOLDS,
                 unet_steps: int = DEFAULT_UNET_STEPS, support_flips: str = "off",
                 refine: str = "off") -> None:
        check_tta(tta)
        check_refine(refine)
        check_support_flips(support_flips)
        check_nearest(nearest)
        check_tiles(tiles)
        check_colour(colour)
        if not (threshold == "auto" or (isinstance(threshold, (int, float))
                                        and 0.0 < threshold < 1.0)):
            raise ValueError(f"threshold must be in (0, 1) or 'auto', got {threshold!r}")
        self.model = model.eval()
        self.name = name if tiles == 1 else f"{name}-tiles{'-' if is_auto(tiles) else ''}{tiles}"
        if threshold != 0.5:
            self.name += "-thr-auto" if threshold == "auto" else f"-thr{float(threshold):g}"
        if tta != 1:
            self.name += f"-tta{tta}"
        if colour != DEFAULT_COLOUR:
            self.name += f"-colour-{colour}"
        if nearest == "off":
            nearest = None
        if nearest is not None:
            self.name += "-nn-default" if nearest == "default" else f"-nn{nearest}"
        if support_flips != "off":
            self.name += f"-flips-{support_flips}"
        self.support_flips = support_flips
        if refine != "off":
            self.name += f"-refine-{refine}"
        self.refine = refine
        self.chosen_refine: list[bool] = []  # with refine "auto"/"default": each choice
        self.chosen_flips: list[bool] = []  # with support_flips="auto": each prediction's choice
        self.hand_over = None
        if hand_over:
            check_settings(margin, folds, unet_steps)
            self.name += "-hand-over"
            self.hand_over = {"margin": float(margin), "folds": int(folds),
                              "unet_steps": int(unet_steps)}
            self._unet = SupervisedUNet(steps=unet_steps,
                                        device=next(model.parameters()).device)
        self.chosen_methods: list[str] = []  # with hand_over: "model" or "unet" per prediction
        self.last_method: str | None = None  # with hand_over: the latest prediction's choice
        self.nearest = nearest
        self.colour = colour
        self.uses_colour = colour != DEFAULT_COLOUR  # the runner then passes R, G, B
        self.chosen_colours: list[str] = []  # with colour="auto": the choice of each prediction
        self.tta = tta
        self.threshold = threshold
        self.source = source
        self.batch_size = None if batch_size is None else int(batch_size)
        self.tiles = tiles
        self.resolution = int(getattr(getattr(model, "config", None), "resolution", 128))
        self.fingerprint = weights_fingerprint(model)
        self.chosen_tiles: list[int] = []  # with tiles="auto": the choice of each prediction
        self.chosen_thresholds: list[float] = []  # with threshold="auto": likewise
        self._runner = TiledRunner(
            lambda q, s_img, s_lab: predict_probabilities(self.model, q, s_img, s_lab,
                                                          batch_size=self.batch_size,
                                                          tta=self.tta),
            self.resolution, memo=True)  # nearest set and memo cleared per prediction

    def _run(self, tiles: int, queries: torch.Tensor, support_images: torch.Tensor,
             support_labels: torch.Tensor) -> torch.Tensor:
        """Probabilities at the input size, the model run whole (1) or on tiles (> 1); with
        ``nearest``, each query with its nearest supports only."""
        return self._runner.resized(tiles, queries, support_images, support_labels.clamp(0, 1))

    def _calibrate(self, si: torch.Tensor, sl: torch.Tensor, seed: int,
                   always_score: bool = False, tiles: int | None = None) -> Calibration:
        """The tiling and cut this method uses for one support set (chosen when auto);
        ``tiles`` fixes the tiling instead of this method's setting."""
        tiles, threshold = self.tiles if tiles is None else tiles, self.threshold
        thresholds = THRESHOLD_GRID if threshold == "auto" else (float(threshold),)
        if threshold == "auto" or always_score:
            return support_calibration(self._run, si, sl, tile_options(tiles), thresholds,
                                       seed=seed, always_score=always_score)
        if is_auto(tiles):
            return Calibration(choose_tiles(self._run, si, sl, tile_options(tiles),
                                            seed=seed)[0], float(threshold))
        return Calibration(int(tiles), float(threshold))

    def _renders_colour(self, support_colour: np.ndarray | None,
                        query_colour: np.ndarray | None) -> bool:
        """True when this method renders the task's R, G, B its own way (not plain grey)."""
        return self.colour != DEFAULT_COLOUR and support_colour is not None \
            and query_colour is not None

    def _render(self, si: np.ndarray, sl: np.ndarray, qi: np.ndarray,
                support_colour: np.ndarray | None, query_colour: np.ndarray | None, seed: int
                ) -> tuple[str, torch.Tensor, torch.Tensor, Calibration]:
        """The rendering this method uses, the supports and queries in it, and its
        calibration (tiling and cut)."""
        sl_t = torch.from_numpy(sl)
        if not self._renders_colour(support_colour, query_colour):
            si_t, qi_t = torch.from_numpy(si), torch.from_numpy(qi)
            return DEFAULT_COLOUR, si_t, qi_t, self._calibrate(si_t, sl_t, seed)
        options = renderings(candidates(self.colour), si, qi,
                             check_rgb(support_colour, si, "support_colour"),
                             check_rgb(query_colour, qi, "query_colour"), sl)
        if not options:  # a fixed "fisher" with no foreground/background contrast: plain grey
            options = renderings((DEFAULT_COLOUR,), si, qi, support_colour, query_colour, sl)
        cals, scores = {}, {}
        tilings = tile_options(self.tiles)
        for key, (s_img, _) in options.items():  # compared on the whole image, as segment()
            s_t = torch.from_numpy(s_img)
            cals[key] = self._calibrate(s_t, sl_t, seed, always_score=len(options) > 1,
                                        tiles=min(tilings) if len(options) > 1 else None)
            scores[key] = max(cals[key].scores.values()) if cals[key].scores else None
        chosen = choose_rendering(scores) if len(options) > 1 else next(iter(options))
        cal = cals[chosen]
        if len(options) > 1 and len(tilings) > 1:  # then the chosen one's tiling and cut
            cal = self._calibrate(torch.from_numpy(options[chosen][0]), sl_t, seed,
                                  always_score=self.threshold == "auto")
        s_img, q_img = options[chosen]
        return chosen, torch.from_numpy(s_img), torch.from_numpy(q_img), cal

    def predict(self, support_images: np.ndarray, support_labels: np.ndarray,
                query_images: np.ndarray, *, seed: int, support_colour: np.ndarray | None = None,
                query_colour: np.ndarray | None = None) -> np.ndarray:
        """(Q, H, W) foreground probabilities; deterministic for a given ``seed``.

        ``support_colour`` (S, 3, H, W) and ``query_colour`` (Q, 3, H, W): R, G, B of the same
        images, used when ``colour`` is not ``"luma"``.
        """
        si = np.ascontiguousarray(support_images, np.float32)
        sl = np.ascontiguousarray(support_labels, np.float32)
        qi = np.ascontiguousarray(query_images, np.float32)
        if self.hand_over is None:
            return self._predict_model(si, sl, qi, seed, support_colour, query_colour)
        truths = list(sl >= 0.5)
        folds, margin = self.hand_over["folds"], self.hand_over["margin"]

        def model_part(rest: np.ndarray, part: np.ndarray) -> list[np.ndarray]:
            colours = (None, None) if support_colour is None else (support_colour[rest],
                                                                   support_colour[part])
            return list(self._predict_model(si[rest], sl[rest], si[part], seed, *colours,
                                            record=False) >= 0.5)

        def unet_part(rest: np.ndarray, part: np.ndarray) -> list[np.ndarray]:
            return list(self._unet.predict(si[rest], sl[rest], si[part], seed=seed) >= 0.5)

        use = prefers_unet(cross_validated_dice(model_part, truths, folds, seed),
                           cross_validated_dice(unet_part, truths, folds, seed), margin)
        self.last_method = "unet" if use else "model"
        self.chosen_methods.append(self.last_method)
        if use:
            return self._unet.predict(si, sl, qi, seed=seed)
        return self._predict_model(si, sl, qi, seed, support_colour, query_colour)

    def _predict_model(self, si: np.ndarray, sl: np.ndarray, qi: np.ndarray, seed: int,
                       support_colour: np.ndarray | None, query_colour: np.ndarray | None,
                       record: bool = True) -> np.ndarray:
        """The model's probabilities (no hand-over); ``record`` adds the choices made to
        ``chosen_colours``, ``chosen_thresholds`` and ``chosen_tiles`` (not for the
        hand-over's checks on parts of the supports)."""
        self._runner.forget()  # remembered support checks belong to one prediction
        # "default": by the support count, as segment does; None here means all supports
        self._runner.nearest = (resolve_nearest("default", len(si)) if self.nearest == "default"
                                else self.nearest)
        name, si_t, qi_t, cal = self._render(si, sl, qi, support_colour, query_colour, seed)
        if record:
            if self._renders_colour(support_colour, query_colour):
                self.chosen_colours.append(name)
            if self.threshold == "auto":
                self.chosen_thresholds.append(cal.threshold)
            if is_auto(self.tiles):
                self.chosen_tiles.append(int(cal.tiles))
        sl_t = torch.from_numpy(sl)
        flipped = False
        flips = resolve_support_flips(self.support_flips, len(si), self._runner.nearest)
        if flips != "off":
            use = flips == "on"
            if not use:
                use = choose_support_flips(
                    lambda q, s_img, s_lab: self._run(int(cal.tiles), q, s_img, s_lab),
                    si_t, sl_t, float(cal.threshold), seed).use
                if record:
                    self.chosen_flips.append(use)
            flipped = use
        tiles = int(cal.tiles)

        def run(q: torch.Tensor, s_img: torch.Tensor, s_lab: torch.Tensor) -> torch.Tensor:
            if flipped:
                s_img, s_lab = flipped_copies(s_img), flipped_copies(s_lab)
            return self._run(tiles, q, s_img, s_lab)

        prob = run(qi_t, si_t, sl_t).clamp(0, 1)
        refine = resolve_refine(self.refine, len(si))
        if refine != "off":
            colour = self._renders_colour(support_colour, query_colour)
            check = choose_refine(run, si_t, sl_t, support_colour if colour else None,
                                  float(cal.threshold), seed, refine,
                                  head_cuts=THRESHOLD_GRID if self.threshold == "auto"
                                  else (0.5,))
            if record and refine != "on":
                self.chosen_refine.append(check.use)
            if check.head is not None:
                head = torch.from_numpy(refine_probabilities(
                    check.head, qi_t.numpy(), prob.numpy(), query_colour if colour else None))
                return rescale_to_threshold(head, check.cut).numpy().astype(np.float32)
        return rescale_to_threshold(prob, float(cal.threshold)).numpy().astype(np.float32)

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
        if self.colour != DEFAULT_COLOUR:  # likewise
            info["colour"] = self.colour
        if self.nearest is not None:  # likewise
            info["nearest"] = self.nearest
        if self.support_flips != "off":  # likewise
            info["support_flips"] = self.support_flips
        if self.refine != "off":  # likewise
            info["refine"] = self.refine
        if self.hand_over is not None:  # likewise
            info["hand_over"] = dict(self.hand_over, unet=self._unet.describe())
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
                   settings: Mapping[str, Mapping[str, Any]] | None = None,
                   device: str = "cpu") -> list[Any]:
    """Instantiate baselines with per-method keyword settings ({name: {key: value}}).

    ``device`` goes to the baselines that train a network (``supervised-unet``,
    ``supervised-unet-rgb``) unless their settings name one.
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise ValueError(f"settings given for baseline(s) not being run: {unknown}")
    out = []
    for name in names:
        kwargs = dict(settings.get(name, {}))
        if "device" in inspect.signature(BASELINES[name]).parameters:
            kwargs.setdefault("device", device)
        try:
            out.append(get_baseline(name, **kwargs))
        except TypeError as exc:
            raise ValueError(f"baseline {name!r}: bad settings {settings.get(name)}: {exc}"
                             ) from None
    return out


def load_model_method(model: str | os.PathLike | nn.Module | None, tiles: int | str = 1,
                      threshold: float | str = 0.5, tta: int = 1,
                      colour: str = DEFAULT_COLOUR, nearest: int | str | None = None,
                      hand_over: bool = False, device: str = "cpu",
                      support_flips: str = "off", refine: str = "off"
                      ) -> tuple[ModelMethod | None, str | None]:
    """The model to benchmark, and a note when there is none.

    ``None`` -> the default model (``load_model()``); when no default model is shipped the
    note says so and the benchmark runs the baselines only. ``"none"`` -> no model.
    A name or a weights path -> ``load_model(name)``; an ``nn.Module`` is used as is.
    ``device``: where a model loaded here runs (:func:`incontext.device.resolve_device`).
    The other arguments are :class:`ModelMethod`'s.
    """
    from incontext.models import WeightsError, load_model

    settings: dict[str, Any] = {"tiles": tiles, "threshold": threshold, "tta": tta,
                                "colour": colour, "nearest": nearest, "hand_over": hand_over,
                                "support_flips": support_flips, "refine": refine}

    if isinstance(model, nn.Module):
        return ModelMethod(model, name=getattr(model, "benchmark_name", "model"),
                           **settings), None
    if model is None:
        try:
            loaded = load_model(device=device)
        except WeightsError as exc:
            return None, f"no default model: {exc}; running the baselines only"
        from incontext.models import registry

        return ModelMethod(loaded, name=str(registry.DEFAULT_MODEL or "default-model"),
                           source=str(registry.DEFAULT_MODEL), **settings), None
    text = os.fspath(model)
    if text.strip().lower() == "none":
        return None, None
    loaded = load_model(text, device=device)
    name = Path(text).stem if (text.endswith(".safetensors") or Path(text).exists()) else text
    return ModelMethod(loaded, name=name, source=text, **settings), None
