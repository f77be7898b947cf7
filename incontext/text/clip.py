"""A CLIP text tower loaded from a local folder the user gives; never downloaded.

``path`` is a Hugging Face-format CLIP folder (``config.json`` + weights + tokenizer files,
e.g. a local copy of openai/clip-vit-base-patch32, 512-d). Needs ``transformers``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from incontext.text.base import TextEncoder, TextEncoderError
from incontext.text.minilm import offline_environment


@lru_cache(maxsize=2)
def _load_clip(path: str, device: str):
    offline_environment()
    try:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection
    except ImportError as exc:
        raise TextEncoderError("the clip text encoder needs the 'transformers' package "
                               "(pip install 'incontext[text]')") from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = CLIPTextModelWithProjection.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TextEncoderError(f"{path}: not a loadable local CLIP folder ({exc})") from exc
    return tokenizer, model.to(device).eval()


class ClipEncoder(TextEncoder):
    """CLIP text embeddings (``text_embeds``), dim from the folder's config (512 for ViT-B/32)."""

    name = "clip"

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        if path is None:
            raise TextEncoderError("the clip text encoder needs path= to a local CLIP folder "
                                   "(it never downloads weights); or use 'minilm' or 'hashing'")
        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise TextEncoderError(f"{path}: no CLIP model here (expected a folder with "
                                   "config.json, weights and tokenizer files)")
        self.path = path
        self.device = device
        self.dim = int(self._read_dim(path))

    @staticmethod
    def _read_dim(path: Path) -> int:
        import json

        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TextEncoderError(f"{path / 'config.json'}: unreadable ({exc})") from exc
        dim = cfg.get("projection_dim") or cfg.get("text_config", {}).get("projection_dim")
        if not dim:
            raise TextEncoderError(f"{path / 'config.json'}: no projection_dim; not a CLIP config")
        return int(dim)

    def options(self) -> dict:
        return {"path": str(self.path), "device": self.device}

    def _encode(self, prompts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = _load_clip(str(self.path), self.device)
        batch = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = model(**{k: v.to(self.device) for k, v in batch.items()})
        return out.text_embeds.float().cpu().numpy()
