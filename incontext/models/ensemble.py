"""Several in-context models as one: their foreground probabilities averaged.

Models trained on the same pool with different emphases (thin structures, vessels, colour
renderings, width) make different mistakes; the mean of their probabilities is a model
like any other for :func:`incontext.segment`, the benchmark and the CLI (one forward
pass per member, so it costs the members' summed time).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ModelEnsemble(nn.Module):
    """Mean foreground probability of ``members`` (same input resolution), as logits.

    forward(target (B,1,H,W), support images (B,S,1,H,W), support labels (B,S,1,H,W))
    -> (B,1,H,W) logits whose sigmoid is the members' mean sigmoid.
    """

    def __init__(self, members: Sequence[nn.Module], names: Sequence[str] = ()) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 models, got {len(members)}")
        sizes = {int(getattr(getattr(m, "config", None), "resolution", 128)) for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members must share one input resolution, got "
                             f"{sorted(sizes)}")
        self.members = nn.ModuleList(members)
        self.names = list(names)
        self.config = members[0].config

    def forward(self, target: torch.Tensor, support_images: torch.Tensor,
                support_labels: torch.Tensor) -> torch.Tensor:
        prob = torch.stack([torch.sigmoid(m(target, support_images, support_labels))
                            for m in self.members]).mean(dim=0)
        eps = torch.finfo(prob.dtype).eps
        return torch.logit(prob.clamp(eps, 1 - eps))
