"""Meta-training of in-context segmentation models (episodes, augmentation, DDP, checkpoints).

Entry points: :func:`train` (Python) and ``incontext train`` (CLI);
:func:`validate_weights` (``incontext train --validate``) scores saved models for selection.
"""

from incontext.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_toml,
    load_config,
)
from incontext.training.engine import RunSummary, Trainer, evaluate, train
from incontext.training.validate import validate_weights

__all__ = [
    "ConfigError",
    "RunSummary",
    "TrainConfig",
    "Trainer",
    "config_from_dict",
    "config_to_toml",
    "evaluate",
    "load_config",
    "train",
    "validate_weights",
]
