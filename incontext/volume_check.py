"""How well will a volume be segmented? Segment support volumes from the other supports.

In 2D, :func:`incontext.segment` measures its chosen settings on supports segmented from
the others (``Segmentation.support_dice``). Volumes get the same estimate here, one level
up: each of up to ``max_checks`` support volumes is segmented with
:func:`incontext.volumes.segment_volume` from the *other* support volumes (never from its
own slices, which would flatter it), and its 3D Dice per label is averaged. It costs one
volume segmentation per checked support, so the CLI runs it only on request
(``incontext segment --check-supports``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from incontext.calibration import DEFAULT_MARGIN
from incontext.metrics import dice
from incontext.volumes import VolumeError, segment_volume

DEFAULT_VOLUME_CHECKS = 4


@dataclass
class VolumeCheck:
    """Per label: the cut chosen on the checked volumes, their mean 3D Dice at that cut
    (segmented from the other supports), how many, and the mean Dice of every cut tried."""

    label: int
    dice: float | None  # None: fewer than 2 support volumes hold the label
    volumes: int
    per_volume: list[float]
    threshold: float = 0.5
    scores: dict[float, float] = field(default_factory=dict)


def volume_dice(pred: np.ndarray, target: np.ndarray) -> float:
    """One Dice for a whole volume (the volume as a single (1, voxels) mask)."""
    return float(dice(pred.reshape(1, 1, -1), target.reshape(1, 1, -1))[0])


def check_support_volumes(model: nn.Module, support_images: Sequence[np.ndarray],
                          support_labels: Sequence[np.ndarray], *,
                          labels: Sequence[int] | None = None,
                          max_checks: int = DEFAULT_VOLUME_CHECKS, seed: int = 0,
                          thresholds: Sequence[float] = (0.5,),
                          margin: float = DEFAULT_MARGIN,
                          **segment_options) -> list[VolumeCheck]:
    """Leave-one-volume-out Dice per label value (``labels``; default all in the supports).

    ``segment_options`` go to :func:`incontext.volumes.segment_volume` as for the queries
    (axis, planes, support_size, modality, window, tiles, tta, ...; pass the run's resolved
    ``axis`` so the checks slice the way the queries are sliced). Support volumes holding a
    label are checked in a seeded order, at most ``max_checks`` of them; each is segmented
    from all the other supports. Every cut in ``thresholds`` is scored on the checked
    volumes' probabilities; the one nearest 0.5 is kept unless another beats its mean Dice
    by more than ``margin`` (as :func:`incontext.calibration.support_calibration` in 2D).
    """
    if len(support_images) != len(support_labels):
        raise VolumeError(f"{len(support_images)} support volumes but {len(support_labels)} "
                          "support labels")
    if max_checks < 1:
        raise VolumeError(f"max_checks must be >= 1, got {max_checks}")
    cuts = sorted({float(t) for t in thresholds})
    if not cuts or any(not 0.0 < t < 1.0 for t in cuts):
        raise VolumeError(f"thresholds must lie in (0, 1), got {list(thresholds)}")
    label_maps = [np.asarray(lab) for lab in support_labels]
    present = sorted({int(v) for lab in label_maps for v in np.unique(lab) if v != 0})
    wanted = [int(v) for v in labels] if labels is not None else present
    holders = {v: [i for i, lab in enumerate(label_maps) if (lab == v).any()] for v in wanted}
    order = np.random.default_rng(seed).permutation(len(label_maps)).tolist()
    scores: dict[int, list[dict[float, float]]] = {v: [] for v in wanted}
    for i in order:
        # labels this volume can check: it holds them, another support does too, and the
        # label still needs checks
        todo = [v for v in wanted if i in holders[v] and len(holders[v]) > 1
                and len(scores[v]) < max_checks]
        if not todo:
            continue
        others = [j for j in range(len(label_maps)) if j != i]
        result = segment_volume(model, support_images[i], [support_images[j] for j in others],
                                [label_maps[j] for j in others], labels=todo, seed=seed,
                                **segment_options)
        for li, v in enumerate(todo):
            truth = label_maps[i] == v
            scores[v].append({t: volume_dice(result.probabilities[li] >= t, truth) for t in cuts})
    checks = []
    for v in wanted:
        if not scores[v]:
            checks.append(VolumeCheck(v, None, 0, []))
            continue
        mean = {t: float(np.mean([s[t] for s in scores[v]])) for t in cuts}
        default = min(cuts, key=lambda t: (abs(t - 0.5), t))
        best = max(cuts, key=lambda t: (round(mean[t], 6), -abs(t - 0.5)))
        cut = best if mean[best] - mean[default] > margin else default
        checks.append(VolumeCheck(v, mean[cut], len(scores[v]), [s[cut] for s in scores[v]],
                                  cut, mean))
    return checks
