"""`nearest-support`: copy the label of the most similar support (a registration-free atlas)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from incontext.baselines.base import Baseline


def _thumbnails(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) -> (N, size*size) anti-aliased bilinear thumbnails, zero-mean unit-norm rows."""
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    small = F.interpolate(
        t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    flat = small.reshape(small.shape[0], -1).double().numpy()
    flat = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    # A constant image has no pattern to correlate: its row stays zero (NCC 0 with everything).
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 1e-12)


class NearestSupport(Baseline):
    """Copy the label of the support with the highest normalised cross-correlation (NCC).

    Images are resized to ``size`` x ``size`` before NCC. With ``k`` > 1 the labels of the
    ``k`` most similar supports are averaged (a soft vote). Ties go to the lower index.
    """

    name = "nearest-support"

    def __init__(self, size: int = 64, k: int = 1) -> None:
        if size < 1 or k < 1:
            raise ValueError(f"nearest-support: size and k must be >= 1, got {size}, {k}")
        self.size = int(size)
        self.k = int(k)

    def _predict(
        self,
        support_images: np.ndarray,
        support_labels: np.ndarray,
        query_images: np.ndarray,
        *,
        seed: int,
    ) -> np.ndarray:
        ncc = _thumbnails(query_images, self.size) @ _thumbnails(support_images, self.size).T
        k = min(self.k, support_images.shape[0])
        # stable sort on -ncc: highest first, ties resolved by support index
        order = np.argsort(-ncc, axis=1, kind="stable")[:, :k]
        return support_labels[order].mean(axis=1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "similarity": "ncc", "size": self.size, "k": self.k}
