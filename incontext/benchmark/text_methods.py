"""A TextDriven model as benchmark methods: class name only, examples only, or both.

The model is prompted per task with ``"A {modality} image of a {label}"`` built from the
held-out index (the task's label name and the dataset's modality name), with the support
draw of the protocol as examples, or both. The runner tells a method which task it is
predicting through ``set_task``; every other method ignores the task identity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from incontext.benchmark.methods import weights_fingerprint
from incontext.benchmark.protocol import TaskData
from incontext.tiling import resize_stack

TEXT_MODES = ("text", "examples", "both")


class TextPromptMethod:
    """One prompting mode of a :class:`~incontext.models.TextDriven` model.

    mode: ``"text"`` (the class name; supports unused), ``"examples"`` (the support
    draw only; the model's learned 'no text' embedding stands in for the name) or
    ``"both"``. Images are resized to the model resolution and probabilities back.
    """

    ensembles = False

    def __init__(self, model: Any, mode: str, name: str | None = None,
                 source: str | None = None, batch_size: int = 16) -> None:
        from incontext.models.text_driven import TextDriven

        if not isinstance(model, TextDriven):
            raise TypeError(f"TextPromptMethod needs a TextDriven model, got "
                            f"{type(model).__name__}")
        if mode not in TEXT_MODES:
            raise ValueError(f"unknown text prompting mode {mode!r}; use one of {TEXT_MODES}")
        if mode != "text" and not model.config.hybrid:
            raise ValueError(f"mode {mode!r} needs a hybrid TextDriven model (hybrid = true)")
        self.model = model.eval()
        self.mode = mode
        self.name = name or f"text-driven:{mode}"
        self.source = source
        self.batch_size = int(batch_size)
        self.resolution = int(model.config.resolution)
        self.fingerprint = weights_fingerprint(model)
        self.prompt: str | None = None
        self._text: torch.Tensor | None = None
        self._embeddings: dict[tuple[str, str], tuple[torch.Tensor, str]] = {}

    def set_task(self, task: TaskData) -> None:
        """Build the prompt of ``task`` (its label and modality name)."""
        from incontext.text_segment import text_embeddings_for

        if not task.label:
            raise ValueError(f"task {task.name!r}: no label name to prompt with")
        key = (task.label, task.modality_name)
        if key not in self._embeddings:
            text, _, prompts = text_embeddings_for(
                self.model, [task.label], modality_name=task.modality_name or "medical")
            self._embeddings[key] = (text, prompts[0])
        self._text, self.prompt = self._embeddings[key]

    @torch.no_grad()
    def predict(self, support_images: np.ndarray, support_labels: np.ndarray,
                query_images: np.ndarray, *, seed: int) -> np.ndarray:
        """(Q, H, W) foreground probabilities; deterministic (``seed`` unused)."""
        if self._text is None:
            raise RuntimeError(f"{self.name}: set_task must be called before predict")
        r = (self.resolution, self.resolution)
        q = resize_stack(torch.from_numpy(np.ascontiguousarray(query_images, np.float32)), r)
        kwargs: dict[str, torch.Tensor] = {}
        if self.mode != "text":
            si = resize_stack(torch.from_numpy(np.ascontiguousarray(support_images,
                                                                    np.float32)), r)
            sl = resize_stack(torch.from_numpy(np.ascontiguousarray(support_labels,
                                                                    np.float32)), r)
            kwargs = {"support_images": si[None, :, None],
                      "support_labels": sl.clamp(0, 1)[None, :, None]}
        text = self._text if self.mode != "examples" else None
        out = []
        for start in range(0, q.shape[0], self.batch_size):
            x = q[start:start + self.batch_size, None]
            logits = self.model(x, text, num_classes=1, **kwargs)  # supports shared (B = 1)
            out.append(torch.sigmoid(logits[:, 0].float()))
        prob = resize_stack(torch.cat(out), tuple(query_images.shape[-2:]))
        return prob.clamp(0, 1).numpy().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "kind": "text-driven model",
                                "mode": self.mode, "resolution": self.resolution,
                                "config": self.model.config.to_dict(),
                                "weights_sha256": self.fingerprint}
        if self.source:
            info["source"] = self.source
        return info


def text_prompt_methods(model: str | os.PathLike | Any, modes: str | list[str] = "all",
                        ) -> list[TextPromptMethod]:
    """Methods for ``modes`` (``"all"``, ``"text,both"``, or a list) of a TextDriven model.

    ``model``: a TextDriven module or a ``.safetensors`` weights file.
    """
    source = None
    if isinstance(model, (str, os.PathLike)):
        from incontext.models import load_model

        source = os.fspath(model)
        stem = Path(source).stem if source.endswith(".safetensors") else source
        model = load_model(source)
    else:
        stem = "text-driven"
    if isinstance(modes, str):
        modes = list(TEXT_MODES) if modes.strip().lower() == "all" else [
            m.strip() for m in modes.split(",") if m.strip()]
    if not modes:
        raise ValueError("give at least one text prompting mode")
    return [TextPromptMethod(model, m, name=f"{stem}:{m}", source=source) for m in modes]
