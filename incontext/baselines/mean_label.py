"""`mean-label`: the per-pixel mean of the support labels (the spatial prior)."""

from __future__ import annotations

from typing import Any

import numpy as np

from incontext.baselines.base import Baseline


class MeanLabel(Baseline):
    """Predict, for every query, the fraction of supports labelling each pixel foreground.

    Thresholded at 0.5 by the runner this is the majority-vote label of the supports; it
    ignores the query image entirely.
    """

    name = "mean-label"

    def _predict(
        self,
        support_images: np.ndarray,
        support_labels: np.ndarray,
        query_images: np.ndarray,
        *,
        seed: int,
    ) -> np.ndarray:
        prior = support_labels.mean(axis=0, dtype=np.float64).astype(np.float32)
        return np.broadcast_to(prior, query_images.shape).copy()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}
