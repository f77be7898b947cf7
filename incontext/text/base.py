"""The text-encoder interface, prompt templates and the encoder registry."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

DEFAULT_TEMPLATE = "A {modality} image of a {label}"
# readable names for the preprocessing modalities (used when no modality_name is known)
MODALITY_PHRASES = {"ct": "computed tomography", "mr": "magnetic resonance", "other": "medical"}
ENCODERS = {
    "hashing": "incontext.text.hashing:HashingEncoder",
    "minilm": "incontext.text.minilm:MiniLMEncoder",
    "clip": "incontext.text.clip:ClipEncoder",
}


class TextEncoderError(RuntimeError):
    """A text encoder that cannot be built or used; the message says what to do."""


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (all-zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)


def modality_phrase(modality: str) -> str:
    """'ct' -> 'computed tomography'; any other string is returned unchanged."""
    return MODALITY_PHRASES.get(modality.lower(), modality) if modality else "medical"


def format_prompt(label: str, modality: str = "other", template: str = DEFAULT_TEMPLATE) -> str:
    """``template`` filled with a readable label ('left_lung' -> 'left lung') and modality."""
    label = " ".join(str(label).replace("_", " ").split())
    if not label:
        raise TextEncoderError("empty class name")
    return template.format(modality=modality_phrase(modality), label=label)


class TextEncoder(ABC):
    """Maps prompt strings to L2-normalised float32 embeddings of a fixed size ``dim``."""

    name: str = ""
    dim: int = 0

    @abstractmethod
    def _encode(self, prompts: list[str]) -> np.ndarray:
        """(N, dim) embeddings of ``prompts`` (need not be normalised)."""

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """(N, dim) float32, unit L2 norm per row."""
        if isinstance(prompts, str):
            raise TextEncoderError("encode() takes a list of prompts, not one string")
        prompts = [str(p) for p in prompts]
        if not prompts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = l2_normalize(self._encode(prompts))
        if out.shape != (len(prompts), self.dim):
            raise TextEncoderError(f"{self.name}: produced shape {out.shape}, expected "
                                   f"({len(prompts)}, {self.dim})")
        return out

    def options(self) -> dict:
        """Constructor options that rebuild this encoder (stored in model configs)."""
        return {}

    @property
    def key(self) -> str:
        """Identifies the embedding space (used to key cached embeddings)."""
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options().items())
                        if k not in ("path", "device"))
        return f"{self.name}:{self.dim}" + (f":{opts}" if opts else "")


def available_encoders() -> list[str]:
    return sorted(ENCODERS)


def get_text_encoder(name: str, **options) -> TextEncoder:
    """Build a text encoder by name: ``hashing`` (dim=...), ``minilm``, ``clip`` (path=...)."""
    if name not in ENCODERS:
        raise TextEncoderError(f"unknown text encoder {name!r}; available: {available_encoders()}")
    module_name, cls_name = ENCODERS[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise TextEncoderError(f"text encoder {name!r}: bad options {sorted(options)} ({exc})"
                               ) from exc
