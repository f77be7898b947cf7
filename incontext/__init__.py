"""incontext: few-shot, in-context medical image segmentation."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "segment", "load_model"]


def __getattr__(name: str):
    # Lazy imports keep `incontext --help` fast (no torch import).
    if name == "segment":
        from incontext.inference import segment

        return segment
    if name == "load_model":
        from incontext.models import load_model

        return load_model
    raise AttributeError(f"module 'incontext' has no attribute {name!r}")
