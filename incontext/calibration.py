"""Per-task choices made on the support set alone: leave-one-out segmentation of supports.

An in-context model has no task-specific parameters, but some inference settings suit
one task and not another: thin structures (vessels, membranes, clavicles) come out with
foreground probabilities below 0.5, so a fixed 0.5 cut loses them, while large organs
are best cut at 0.5 or above. :func:`support_calibration` segments up to ``max_checks``
supports, each from the remaining ones, for every candidate setting (tiling, threshold),
and keeps the setting with the best mean Dice on those supports. No query label is used.

:func:`rescale_to_threshold` maps probabilities monotonically so that the chosen
threshold becomes 0.5: callers that cut at 0.5 (the benchmark, ``segment``) then apply
the chosen threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from incontext.metrics import dice

# thresholds tried by ``threshold="auto"``
THRESHOLD_GRID: tuple[float, ...] = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                                     0.55, 0.6, 0.65, 0.7)
# a setting other than (fewest tiles, 0.5) must beat it by this much mean Dice
DEFAULT_MARGIN = 0.01
DEFAULT_CHECKS = 8

# run(tiles, queries (Q,H,W), support_images (S,H,W), support_labels (S,H,W)) -> (Q,H,W)
TiledPredict = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Calibration:
    """What :func:`support_calibration` chose, and the leave-one-out Dice of each setting."""

    tiles: int
    threshold: float
    scores: dict[tuple[int, float], float] = field(default_factory=dict)
    checks: int = 0  # supports segmented from the others (0: too few supports, defaults kept)


def dice_at(prob: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
    """Per-image Dice (:func:`incontext.metrics.dice`) of ``prob >= threshold`` against
    ``target >= 0.5``; (K, H, W) -> (K,). An empty prediction on an empty target scores 1."""
    return np.atleast_1d(dice((prob >= threshold).cpu().numpy(),
                              (target >= 0.5).cpu().numpy()))


def leave_one_out_checks(support_labels: torch.Tensor, max_checks: int, seed: int) -> list[int]:
    """Up to ``max_checks`` support indices with foreground (seeded order); [] below 2 supports."""
    n = support_labels.shape[0]
    with_fg = [i for i in range(n) if bool((support_labels[i] >= 0.5).any())]
    if n < 2 or not with_fg:
        return []
    order = torch.randperm(len(with_fg), generator=torch.Generator().manual_seed(int(seed)))
    return [with_fg[i] for i in order[:max_checks].tolist()]


def leave_one_out(run: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                  support_images: torch.Tensor, support_labels: torch.Tensor,
                  checks: Sequence[int]) -> torch.Tensor:
    """(K, H, W) probabilities of supports ``checks``, each predicted from all the others."""
    n = support_images.shape[0]
    out = []
    for i in checks:
        keep = torch.tensor([j for j in range(n) if j != i])
        out.append(run(support_images[i:i + 1], support_images[keep], support_labels[keep])[0])
    return torch.stack(out)


def support_calibration(run: TiledPredict, support_images: torch.Tensor,
                        support_labels: torch.Tensor, tile_options: Sequence[int] = (1,),
                        thresholds: Sequence[float] = (0.5,), *, max_checks: int = DEFAULT_CHECKS,
                        margin: float = DEFAULT_MARGIN, seed: int = 0,
                        always_score: bool = False) -> Calibration:
    """Choose (tiles, threshold) by segmenting supports from the others.

    support_images (S, H, W), support_labels (S, H, W) in [0, 1]. The default setting
    (fewest tiles, the threshold nearest 0.5) is kept unless another beats its mean
    leave-one-out Dice by more than ``margin``; with fewer than 3 usable checks when
    choosing a cut (1 for tiling alone) the default is returned unscored. A single
    setting is returned unscored too, unless ``always_score`` (used to compare inputs).
    """
    tile_options = sorted({int(g) for g in tile_options})
    thresholds = sorted({float(t) for t in thresholds})
    if not tile_options or not thresholds:
        raise ValueError("support_calibration needs at least one tiling and one threshold")
    default = (tile_options[0], min(thresholds, key=lambda t: (abs(t - 0.5), t)))
    if len(tile_options) == 1 and len(thresholds) == 1 and not always_score:
        return Calibration(*default)
    checks = leave_one_out_checks(support_labels, max_checks, seed)
    needed = 1 if len(thresholds) == 1 else 3  # a cut needs a few supports to be judged
    if len(checks) < needed:
        return Calibration(*default)
    targets = support_labels[checks]
    scores: dict[tuple[int, float], float] = {}
    for g in tile_options:
        prob = leave_one_out(lambda q, si, sl, g=g: run(g, q, si, sl), support_images,
                             support_labels, checks)
        for t in thresholds:
            scores[(g, t)] = float(dice_at(prob, targets, t).mean())
    best = max(scores, key=lambda k: (round(scores[k], 6), -k[0], -abs(k[1] - 0.5)))
    if scores[best] - scores[default] <= margin:
        best = default
    return Calibration(best[0], best[1], scores, len(checks))


def rescale_to_threshold(prob: torch.Tensor, threshold: float) -> torch.Tensor:
    """Monotone piecewise-linear map of [0, 1] onto itself sending ``threshold`` to 0.5,
    so that ``rescaled >= 0.5`` is ``prob >= threshold``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if threshold == 0.5:
        return prob
    low = prob * (0.5 / threshold)
    high = 0.5 + (prob - threshold) * (0.5 / (1.0 - threshold))
    return torch.where(prob < threshold, low, high).clamp(0.0, 1.0)


def rescale_from_half(prob: torch.Tensor, cut: float) -> torch.Tensor:
    """The inverse of :func:`rescale_to_threshold`: sends 0.5 to ``cut``, so that
    ``rescaled >= cut`` is ``prob >= 0.5``."""
    if not 0.0 < cut < 1.0:
        raise ValueError(f"cut must be in (0, 1), got {cut}")
    return torch.where(prob < 0.5, prob * (2 * cut), cut + (prob - 0.5) * (2 * (1 - cut)))
