"""Meta-training of in-context segmentation models (episodes, augmentation, DDP, checkpoints).

Entry points: :func:`train` (Python) and ``incontext train`` (CLI).
"""

from incontext.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_toml,
    load_config,
)
from incontext.training.engine import RunSummary, Trainer, evaluate, train

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
]
