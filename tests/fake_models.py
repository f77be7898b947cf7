"""Fake in-context models with known outputs, shared by the inference and volume tests.

Each takes ``(target (B,1,H,W), support images (B,S,1,H,W), support labels (B,S,1,H,W))``
like UniverSeg and returns logits whose sigmoid is a simple function of the inputs.
"""

from __future__ import annotations

import torch
from torch import nn


class FakeModel(nn.Module):
    """Base: a ``config.resolution`` and one parameter (so ``.parameters()`` is not empty)."""

    def __init__(self, resolution: int = 32) -> None:
        super().__init__()
        self.config = type("Cfg", (), {"resolution": resolution})()
        self.dummy = nn.Parameter(torch.zeros(()))

    @staticmethod
    def logit(p: torch.Tensor) -> torch.Tensor:
        return torch.logit(p.clamp(1e-4, 1 - 1e-4))


class EchoQuery(FakeModel):
    """Probability = the preprocessed query intensity."""

    def forward(self, target, images, labels):
        return self.logit(target)


class MeanSupportLabel(FakeModel):
    """Probability = the mean support label per pixel."""

    def forward(self, target, images, labels):
        return self.logit(labels.mean(dim=1))


class MeanSupportImage(FakeModel):
    """Probability = the mean support image per pixel (shows how supports were scaled)."""

    def forward(self, target, images, labels):
        return self.logit(images.mean(dim=1))
