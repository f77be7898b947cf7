"""The common interface of the classic baselines and the validation of their inputs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

_TOL = 1e-4  # slack for images that are [0, 1] up to rounding


def _check_stack(array: Any, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"{what}: expected an (N, H, W) array, got shape {arr.shape}")
    if not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == bool
    ):
        raise ValueError(f"{what}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: contains {int((~np.isfinite(arr)).sum())} NaN/inf value(s)")
    return arr


def check_inputs(
    support_images: Any, support_labels: Any, query_images: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a support set and queries; return float32 copies-or-views.

    support_images (S, H, W) in [0, 1], support_labels (S, H, W) in {0, 1}, query_images
    (Q, H, W) in [0, 1], S >= 1, Q >= 0, one H, W for all. Raises ValueError naming the
    offending argument otherwise.
    """
    si = _check_stack(support_images, "support_images")
    sl = _check_stack(support_labels, "support_labels")
    qi = _check_stack(query_images, "query_images")
    if si.shape[0] < 1:
        raise ValueError("support_images: need at least one support image, got 0")
    if sl.shape != si.shape:
        raise ValueError(
            f"support_labels: shape {sl.shape} does not match support_images {si.shape}"
        )
    if qi.shape[1:] != si.shape[1:]:
        raise ValueError(
            f"query_images: spatial size {qi.shape[1:]} differs from the supports' {si.shape[1:]}"
            " (resize everything to one resolution first)"
        )
    for arr, what in ((si, "support_images"), (qi, "query_images")):
        if arr.size and (arr.min() < -_TOL or arr.max() > 1 + _TOL):
            raise ValueError(
                f"{what}: intensities must lie in [0, 1], got [{arr.min():.4g}, {arr.max():.4g}]"
            )
    si = np.clip(si, 0.0, 1.0)
    qi = np.clip(qi, 0.0, 1.0)
    if not np.isin(sl, (0.0, 1.0)).all():
        raise ValueError("support_labels: labels must be binary (0/1); threshold soft labels first")
    return si, sl, qi


class Baseline(ABC):
    """A few-shot segmentation method that needs no in-context training.

    Subclasses set ``name`` and implement ``_predict`` and ``describe``; ``predict`` validates
    the inputs and the output.
    """

    name: str = ""

    def predict(
        self,
        support_images: np.ndarray,
        support_labels: np.ndarray,
        query_images: np.ndarray,
        *,
        seed: int,
    ) -> np.ndarray:
        """Foreground probabilities (Q, H, W) float32 in [0, 1] for each query image.

        support_images (S, H, W) float in [0, 1], support_labels (S, H, W) in {0, 1},
        query_images (Q, H, W) in [0, 1]. ``seed`` makes stochastic methods reproducible.
        """
        si, sl, qi = check_inputs(support_images, support_labels, query_images)
        if qi.shape[0] == 0:
            return np.zeros(qi.shape, dtype=np.float32)
        if not sl.any():  # no foreground anywhere in the supports: predict empty
            return np.zeros(qi.shape, dtype=np.float32)
        out = np.asarray(self._predict(si, sl, qi, seed=int(seed)), dtype=np.float32)
        if out.shape != qi.shape:
            raise RuntimeError(f"{self.name}: produced shape {out.shape}, expected {qi.shape}")
        if not np.isfinite(out).all():
            raise RuntimeError(f"{self.name}: produced NaN/inf probabilities")
        return np.clip(out, 0.0, 1.0)

    @abstractmethod
    def _predict(
        self,
        support_images: np.ndarray,
        support_labels: np.ndarray,
        query_images: np.ndarray,
        *,
        seed: int,
    ) -> np.ndarray:
        """Method-specific prediction on validated inputs with at least one foreground pixel."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The method's name and settings, JSON-serialisable, for reports."""
