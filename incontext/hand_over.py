"""Hand a label over to a small U-Net trained on the supports when the supports say it pays.

The in-context model needs no training; on some tasks (thin structures such as membranes
and vessels) a U-Net trained on the same supports (the ``supervised-unet`` baseline) does
better. :class:`UNetHandOver` measures both on the supports themselves: they are cut into
``folds`` parts, each part is segmented by the model from the other parts and by a U-Net
trained on them, and the U-Net takes the label over when its mean Dice there is higher by
more than ``margin``. It then trains once more on all the supports and segments the queries.
The model stays in charge everywhere else, so the cost (``folds + 1`` U-Net trainings per
handed-over label, ``folds`` for the others) buys accuracy only where the supports show it.

Measured on the training pool's val split (N = 16, 2 draws, benchmarks/unet_gate.py; see
MODEL_CARD.md): mean Dice of 8 labelled datasets 73.3 -> 74.0 (EM membranes +6.8, breast
lesions -1.4 from one draw), pseudo-labelled vessels 51.1 -> 80.4. On large images (those
``segment`` tiles by default) the U-Net works at twice the model's resolution: on the pool's
256-px thin-structure tasks that lifts the hand-over from 71.9 to 76.2 (docs/segment.md).
It trains a network per task, so it is opt-in (``incontext segment --hand-over``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from incontext.baselines.supervised_unet import SupervisedUNet
from incontext.inference import (
    Segmentation,
    _as_image_list,
    _is_single_image,
    _model_resolution,
    _prepare_images,
    _to_numpy,
    checked_label_maps,
    label_map,
    segment,
)
from incontext.metrics import dice
from incontext.preprocessing import pad_to_square, resize_mask_soft, resize_probabilities
from incontext.tiling import default_tiles, tiled_size

DEFAULT_MARGIN = 0.03  # chosen on the training pool's val split (benchmarks/unet_gate.py)
DEFAULT_FOLDS = 4
DEFAULT_UNET_STEPS = 100


@dataclass(frozen=True)
class HandOverChoice:
    """One label's comparison on the supports and the method that segments it."""

    label: int
    model_dice: float | None  # mean Dice of the supports, each part from the other parts
    unet_dice: float | None  # the same for U-Nets trained on the other parts
    supports: int  # supports that those means are over (0: too few to compare)
    method: str  # "model" or "unet"
    unet_size: int  # side of the images the U-Net was compared (and would work) at


def check_settings(margin: float, folds: int, unet_steps: int) -> None:
    """ValueError naming the bad hand-over setting."""
    if folds < 2:
        raise ValueError(f"hand-over: folds must be at least 2, got {folds}")
    if unet_steps < 1:
        raise ValueError(f"hand-over: unet_steps must be at least 1, got {unet_steps}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"hand-over: margin must be in [0, 1), got {margin}")


def unet_working_size(shapes: Sequence[Sequence[int]], resolution: int) -> int:
    """The U-Net's image side for supports of ``shapes``: twice the model ``resolution`` when
    they are large enough for ``segment`` to tile them by default
    (:func:`incontext.tiling.default_tiles`; the model then works at that size too), else
    ``resolution``."""
    large = default_tiles(shapes, resolution) != 1
    return tiled_size(resolution, 2) if large else resolution


def fold_parts(n: int, folds: int, seed: int) -> list[np.ndarray]:
    """``min(folds, n)`` disjoint, non-empty index arrays covering ``range(n)`` (seeded)."""
    order = np.random.default_rng(seed).permutation(n)
    return [p for p in np.array_split(order, min(folds, n)) if p.size]


def cross_validated_dice(segment_part: Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]],
                         truths: Sequence[np.ndarray], folds: int, seed: int) -> float | None:
    """Mean Dice of every support segmented from the other folds.

    ``segment_part(rest, part)`` returns boolean masks for the supports ``part`` (index
    arrays) segmented from the supports ``rest``; ``truths`` are the supports' true masks.
    None with fewer than 2 supports.
    """
    if len(truths) < 2:
        return None
    scores = []
    for part in fold_parts(len(truths), folds, seed):
        rest = np.setdiff1d(np.arange(len(truths)), part)
        masks = segment_part(rest, part)
        scores += [float(dice(m, truths[i])) for m, i in zip(masks, part, strict=True)]
    return float(np.mean(scores))


def prefers_unet(model_dice: float | None, unet_dice: float | None, margin: float) -> bool:
    """True when the U-Net's cross-validated Dice beats the model's by more than ``margin``."""
    return model_dice is not None and unet_dice is not None and unet_dice - model_dice > margin


class UNetHandOver:
    """Segment with the model, or per label with a U-Net trained on the supports.

    Takes :func:`incontext.inference.segment`'s arguments (``segment_options`` are its
    keyword options: tiles, threshold, colour, ...). The comparison on the supports runs
    on the first call of :meth:`segment` and is kept, with the trained U-Nets, for later
    calls (so one object segments any number of queries from the same supports);
    :attr:`choices` says what was chosen. The U-Net works on grey, square-padded images of
    side ``unet_size`` (default :func:`unet_working_size`: the model's resolution, twice it
    for large images) with the ``supervised-unet`` baseline's recipe, ``unet_steps`` Adam
    steps on the model's device.
    """

    def __init__(self, model: nn.Module, support_images, support_labels, *,
                 margin: float = DEFAULT_MARGIN, folds: int = DEFAULT_FOLDS,
                 unet_steps: int = DEFAULT_UNET_STEPS, unet_size: int | None = None,
                 seed: int = 0, **segment_options) -> None:
        check_settings(margin, folds, unet_steps)
        if unet_size is not None and unet_size < 16:
            raise ValueError(f"hand-over: unet_size must be at least 16, got {unet_size}")
        for key in ("reuse", "seed"):
            if key in segment_options:
                raise ValueError(f"hand-over: {key!r} is managed by UNetHandOver")
        self.model = model
        self.support_images = _as_image_list(support_images, "support_images")
        self.support_labels = _as_image_list(support_labels, "support_labels")
        self.margin = float(margin)
        self.folds = int(folds)
        self.seed = int(seed)
        self.options = segment_options
        device = next(model.parameters()).device
        self.unet = SupervisedUNet(steps=unet_steps, device=device)
        self.size = unet_size or unet_working_size(
            [im.shape for im in self.support_images], _model_resolution(model))
        self.choices: list[HandOverChoice] = []
        self._networks: dict[int, nn.Module] = {}
        self._reuse: dict = {}  # the model's support checks on all supports, run once

    def segment(self, query) -> Segmentation | list[Segmentation]:
        """Like :func:`incontext.inference.segment` for ``query``; labels chosen for the
        U-Net get its probabilities (and zero uncertainty) and ``methods`` says which."""
        single = (isinstance(query, (np.ndarray, torch.Tensor))
                  and _is_single_image(_to_numpy(query)))
        results = segment(self.model, query, self.support_images, self.support_labels,
                          seed=self.seed, reuse=self._reuse, **self.options)
        results = [results] if single else results
        if not self.choices:
            self.choices = self._choose(results[0].labels)
        queries = _as_image_list(query, "query")
        out = [self._apply(r, q) for r, q in zip(results, queries, strict=True)]
        return out[0] if single else out

    def _choose(self, labels: list[int]) -> list[HandOverChoice]:
        label_maps = checked_label_maps(self.support_images, self.support_labels)
        grey = self._grey(self.support_images, "support image")
        choices = []
        for value in labels:
            truths = [lab == value for lab in label_maps]
            if not any(t.any() for t in truths):  # not in the supports: nothing to learn
                choices.append(HandOverChoice(value, None, None, 0, "model", self.size))
                continue
            targets = self._targets(truths)
            model_dice = cross_validated_dice(
                lambda rest, part, v=value: self._model_masks(rest, part, v), truths,
                self.folds, self.seed)
            unet_dice = cross_validated_dice(
                lambda rest, part, t=targets: self._unet_masks(grey, t, rest, part),
                truths, self.folds, self.seed)
            use = prefers_unet(model_dice, unet_dice, self.margin)
            choices.append(HandOverChoice(value, model_dice, unet_dice,
                                          len(truths) if model_dice is not None else 0,
                                          "unet" if use else "model", self.size))
            if use:
                self._networks[value] = self.unet.fit(grey, targets, seed=self.seed)
        return choices

    def _grey(self, images: list[np.ndarray], what: str) -> np.ndarray:
        """(N, R, R) grey images at the U-Net's size, prepared as the model's inputs are."""
        return _prepare_images(images, self.size, what,
                               self.options.get("modality", "other"),
                               self.options.get("window"),
                               normalized=bool(self.options.get("supports_normalized"))
                               and what == "support image")

    def _targets(self, truths: list[np.ndarray]) -> np.ndarray:
        """(S, R, R) 0/1 training masks at the U-Net's size."""
        return np.stack([(resize_mask_soft(pad_to_square(t.astype(np.float32)),
                                           self.size) >= 0.5).numpy()
                         for t in truths]).astype(np.float32)

    def _model_masks(self, rest: np.ndarray, part: np.ndarray, value: int) -> list[np.ndarray]:
        """The model's masks of supports ``part`` from supports ``rest``, its tiling, cut and
        rendering chosen on ``rest`` alone (so the comparison is fair to the U-Net)."""
        images = [self.support_images[i] for i in part]
        options = {**self.options, "labels": [value]}
        with warnings.catch_warnings():  # a label missing from some folds is expected here
            warnings.simplefilter("ignore")
            results = segment(self.model, images, [self.support_images[i] for i in rest],
                              [self.support_labels[i] for i in rest], seed=self.seed,
                              **options)
        return [r.mask == value for r in results]

    def _unet_masks(self, grey: np.ndarray, targets: np.ndarray, rest: np.ndarray,
                    part: np.ndarray) -> list[np.ndarray]:
        if not targets[rest].any():  # nothing to learn from: all background
            return [np.zeros(self.support_images[i].shape[:2], bool) for i in part]
        network = self.unet.fit(grey[rest], targets[rest], seed=self.seed)
        prob = torch.from_numpy(self.unet.infer(network, grey[part]))
        return [resize_probabilities(p, self.support_images[i].shape[:2]).numpy() >= 0.5
                for p, i in zip(prob, part, strict=True)]

    def _apply(self, result: Segmentation, query: np.ndarray) -> Segmentation:
        methods = ["unet" if v in self._networks else "model" for v in result.labels]
        estimates = {c.label: c for c in self.choices}
        if "unet" not in methods:
            return result
        threshold = self.options.get("threshold", "auto")
        cut = 0.5 if threshold == "auto" else float(threshold)  # the cut segment() applied
        prob = result.probabilities.copy()
        unc = result.uncertainty.copy()
        support_dice = list(result.support_dice)
        support_checks = list(result.support_checks)
        thresholds = list(result.thresholds)
        grey = self._grey([query], "query")
        for li, value in enumerate(result.labels):
            if value not in self._networks:
                continue
            p = torch.from_numpy(self.unet.infer(self._networks[value], grey))[0]
            p = resize_probabilities(p, prob.shape[1:])
            # the U-Net's cut is 0.5: move it to the cut the mask is made with
            prob[li] = torch.where(p < 0.5, p * (2 * cut),
                                   cut + (p - 0.5) * (2 * (1 - cut))).numpy()
            unc[li] = 0.0
            thresholds[li] = 0.5
            support_dice[li] = estimates[value].unet_dice
            support_checks[li] = estimates[value].supports
        return replace(result, mask=label_map(prob, result.labels, cut), probabilities=prob,
                       uncertainty=unc, methods=methods, thresholds=thresholds,
                       support_dice=support_dice, support_checks=support_checks)
