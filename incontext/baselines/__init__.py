"""Classic few-shot segmentation baselines with one interface.

``get_baseline(name, **settings).predict(support_images, support_labels, query_images,
seed=...)`` returns (Q, H, W) float32 foreground probabilities in [0, 1].
"""

from __future__ import annotations

from typing import Any

from incontext.baselines.base import Baseline, check_inputs
from incontext.baselines.mean_label import MeanLabel
from incontext.baselines.nearest_support import NearestSupport
from incontext.baselines.pixel_classifier import PixelClassifier
from incontext.baselines.prototype import Prototype, RandomFeatureEncoder
from incontext.baselines.supervised_unet import SupervisedUNet, SupervisedUNetRGB
from incontext.baselines.threshold import Threshold

BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (SupervisedUNet, NearestSupport, MeanLabel, Threshold, Prototype,
                              SupervisedUNetRGB, PixelClassifier)
}

__all__ = [
    "BASELINES",
    "Baseline",
    "MeanLabel",
    "NearestSupport",
    "PixelClassifier",
    "Prototype",
    "RandomFeatureEncoder",
    "SupervisedUNet",
    "SupervisedUNetRGB",
    "Threshold",
    "check_inputs",
    "get_baseline",
]


def get_baseline(name: str, **settings: Any) -> Baseline:
    """Instantiate the baseline registered as ``name`` with keyword ``settings``."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ValueError(
            f"unknown baseline {name!r}; choose from {', '.join(sorted(BASELINES))}"
        ) from None
    return cls(**settings)
