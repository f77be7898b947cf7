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
from dataclasses import dataclass

import numpy as np
from torch import nn

from incontext.metrics import dice
from incontext.volumes import VolumeError, segment_volume

DEFAULT_VOLUME_CHECKS = 4


@dataclass
class VolumeCheck:
    """Per label: mean 3D Dice of support volumes segmented from the others, and how many."""

    label: int
    dice: float | None  # None: fewer than 2 support volumes hold the label
    volumes: int
    per_volume: list[float]


def check_support_volumes(model: nn.Module, support_images: Sequence[np.ndarray],
                          support_labels: Sequence[np.ndarray], *,
                          labels: Sequence[int] | None = None,
                          max_checks: int = DEFAULT_VOLUME_CHECKS, seed: int = 0,
                          **segment_options) -> list[VolumeCheck]:
    """Leave-one-volume-out Dice per label value (``labels``; default all in the supports).

    ``segment_options`` go to :func:`incontext.volumes.segment_volume` as for the queries
    (axis, planes, threshold, support_size, modality, window, tiles, tta, ...; pass the
    run's resolved ``axis`` so the checks slice the way the queries are sliced). Support
    volumes holding a label are checked in a seeded order, at most ``max_checks`` of them;
    each is segmented from all the other supports.
    """
    if len(support_images) != len(support_labels):
        raise VolumeError(f"{len(support_images)} support volumes but {len(support_labels)} "
                          "support labels")
    if max_checks < 1:
        raise VolumeError(f"max_checks must be >= 1, got {max_checks}")
    label_maps = [np.asarray(lab) for lab in support_labels]
    present = sorted({int(v) for lab in label_maps for v in np.unique(lab) if v != 0})
    wanted = [int(v) for v in labels] if labels is not None else present
    holders = {v: [i for i, lab in enumerate(label_maps) if (lab == v).any()] for v in wanted}
    order = np.random.default_rng(seed).permutation(len(label_maps)).tolist()
    scores: dict[int, list[float]] = {v: [] for v in wanted}
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
        for v in todo:
            # one 3D Dice: the volume as a single (1, voxels) mask
            scores[v].append(float(dice((result.mask == v).reshape(1, 1, -1),
                                        (label_maps[i] == v).reshape(1, 1, -1))[0]))
    return [VolumeCheck(v, float(np.mean(scores[v])) if scores[v] else None, len(scores[v]),
                        scores[v]) for v in wanted]
