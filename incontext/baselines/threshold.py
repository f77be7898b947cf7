"""`threshold`: an intensity threshold and polarity fitted on the supports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from incontext.baselines.base import Baseline


def _smooth(images: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return images
    return np.stack([ndimage.gaussian_filter(im, sigma, mode="nearest") for im in images])


def _bins(images: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip((images * n_bins).astype(np.int64), 0, n_bins - 1)


def fit_threshold(
    images: np.ndarray, labels: np.ndarray, n_bins: int = 256
) -> tuple[int, bool, float]:
    """Best (bin index k, bright, mean Dice) for ``pred = bin >= k`` (bright) or ``bin < k``.

    Every threshold k in 0..n_bins and both polarities are scored exactly with per-support
    histograms; Dice is averaged over supports (empty-vs-empty counts as 1).
    """
    s = images.shape[0]
    idx = _bins(images, n_bins).reshape(s, -1)
    fg = labels.reshape(s, -1) > 0.5
    offsets = (np.arange(s) * n_bins)[:, None]
    hist_all = np.bincount((idx + offsets).ravel(), minlength=s * n_bins).reshape(s, n_bins)
    hist_fg = np.bincount((idx + offsets)[fg], minlength=s * n_bins).reshape(s, n_bins)
    # predicted / true-positive counts of "bin >= k" for k = 0..n_bins
    zeros = np.zeros((s, 1), dtype=np.int64)
    pred_bright = np.concatenate([np.cumsum(hist_all[:, ::-1], axis=1)[:, ::-1], zeros], axis=1)
    tp_bright = np.concatenate([np.cumsum(hist_fg[:, ::-1], axis=1)[:, ::-1], zeros], axis=1)
    total = hist_all.sum(axis=1, keepdims=True)
    gt = hist_fg.sum(axis=1, keepdims=True)
    best = (0, True, -1.0)
    for bright in (True, False):
        pred = pred_bright if bright else total - pred_bright
        tp = tp_bright if bright else gt - tp_bright
        denom = (pred + gt).astype(np.float64)
        d = np.divide(2.0 * tp, denom, out=np.ones_like(denom), where=denom > 0)
        score = d.mean(axis=0)
        k = int(np.argmax(score))
        if score[k] > best[2] + 1e-12:
            best = (k, bright, float(score[k]))
    return best


class Threshold(Baseline):
    """Foreground = pixels brighter (or darker) than a threshold fitted on the supports.

    The threshold, polarity and the Gaussian smoothing sigma (from ``sigmas``, applied to
    supports and queries alike) maximise the mean Dice over the support pairs. Output is hard
    0/1. Deterministic; ``seed`` is unused.
    """

    name = "threshold"

    def __init__(self, sigmas: Sequence[float] = (0.0, 1.0, 2.0), n_bins: int = 256) -> None:
        if not sigmas or any(s < 0 for s in sigmas):
            raise ValueError(f"threshold: sigmas must be a non-empty list of >= 0, got {sigmas}")
        if n_bins < 2:
            raise ValueError(f"threshold: n_bins must be >= 2, got {n_bins}")
        self.sigmas = tuple(float(s) for s in sigmas)
        self.n_bins = int(n_bins)
        self.fitted: dict[str, Any] = {}

    def _predict(
        self,
        support_images: np.ndarray,
        support_labels: np.ndarray,
        query_images: np.ndarray,
        *,
        seed: int,
    ) -> np.ndarray:
        best: tuple[float, int, bool, float] | None = None
        for sigma in self.sigmas:
            k, bright, score = fit_threshold(
                _smooth(support_images, sigma), support_labels, self.n_bins
            )
            if best is None or score > best[3] + 1e-12:
                best = (sigma, k, bright, score)
        assert best is not None
        sigma, k, bright, score = best
        self.fitted = {
            "sigma": sigma,
            "threshold": k / self.n_bins,
            "bright": bright,
            "support_dice": score,
        }
        qb = _bins(_smooth(query_images, sigma), self.n_bins)
        return ((qb >= k) if bright else (qb < k)).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sigmas": list(self.sigmas),
            "n_bins": self.n_bins,
            "objective": "mean Dice over supports",
        }
