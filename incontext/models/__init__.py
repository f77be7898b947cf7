"""In-context segmentation models, weights I/O and the model registry."""

from incontext.models.universeg import (
    CrossBlock,
    CrossConv2d,
    UniverSeg,
    UniverSegConfig,
    pairwise_forward,
    parameter_count,
)

__all__ = [
    "CrossBlock",
    "CrossConv2d",
    "UniverSeg",
    "UniverSegConfig",
    "pairwise_forward",
    "parameter_count",
]
