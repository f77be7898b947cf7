"""The unit of in-context work: a support set and queries of one binary task."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """Support set + queries of one binary 2D task, all at one square resolution.

    support_images, support_labels: (S, H, W) float32, images in [0, 1], labels in {0, 1}
    query_images, query_labels:     (Q, H, W) float32, same conventions
    """

    task: str
    support_images: np.ndarray
    support_labels: np.ndarray
    query_images: np.ndarray
    query_labels: np.ndarray
    support_subjects: list[str] = field(default_factory=list)
    query_subjects: list[str] = field(default_factory=list)
    dataset: str = ""
    spacing: tuple[float, float] | None = None  # mm per pixel at this resolution, if known
    # R, G, B of the same images, (S, 3, H, W) / (Q, 3, H, W) in [0, 1]; only when asked for
    # (``TaskIndex.episode(with_colour=True)``) and the dataset stores them
    support_colour: np.ndarray | None = None
    query_colour: np.ndarray | None = None

    @property
    def support_size(self) -> int:
        return int(self.support_images.shape[0])
