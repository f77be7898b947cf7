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

from incontext.models.io import (  # noqa: E402
    WeightsError,
    load,
    load_foreign_checkpoint,
    register_architecture,
    save,
)
from incontext.models.registry import (  # noqa: E402
    REGISTRY,
    available_models,
    create_model,
    load_model,
    model_info,
)

__all__ += [
    "REGISTRY",
    "WeightsError",
    "available_models",
    "create_model",
    "load",
    "load_foreign_checkpoint",
    "load_model",
    "model_info",
    "register_architecture",
    "save",
]

# Importing the module registers the "text-driven" architecture with the weights I/O.
from incontext.models import text_driven  # noqa: E402, F401
from incontext.models.text_driven import TextDriven, TextDrivenConfig  # noqa: E402

__all__ += ["TextDriven", "TextDrivenConfig"]
