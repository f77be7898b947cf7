"""`pixel-classifier`: a per-pixel classifier on local image filters, fitted on the supports.

The classic interactive-segmentation recipe (as in ilastik): every pixel is described by
filters of its neighbourhood (Gaussian smoothing, gradient magnitude, Hessian eigenvalues
at 1–4 px) and a small classifier learns foreground from the support pixels. It is the
in-context model's pixel head (:mod:`incontext.refine`) without the model's probability,
so the benchmark shows what the filters alone do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from incontext.baselines.base import Baseline
from incontext.refine import HEAD_HIDDEN, HEAD_STEPS, fit_pixel_head, pixel_features


class PixelClassifier(Baseline):
    """A two-hidden-layer pixel classifier on grey-image filters (``steps`` Adam steps on
    sampled support pixels; deterministic for a seed)."""

    name = "pixel-classifier"

    def __init__(self, steps: int = HEAD_STEPS) -> None:
        if steps < 1:
            raise ValueError(f"pixel-classifier: steps must be >= 1, got {steps}")
        self.steps = int(steps)

    def _predict(self, support_images: np.ndarray, support_labels: np.ndarray,
                 query_images: np.ndarray, *, seed: int) -> np.ndarray:
        feats = np.concatenate([pixel_features(im, None) for im in support_images])
        head = fit_pixel_head(feats, support_labels.reshape(-1), seed, self.steps)
        return np.stack([head.predict(pixel_features(q, None)).reshape(q.shape)
                         for q in query_images])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "features": "grey-image filters (incontext.refine)",
                "hidden": [HEAD_HIDDEN, HEAD_HIDDEN], "steps": self.steps}
