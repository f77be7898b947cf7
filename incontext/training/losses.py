"""Segmentation losses on logits: soft Dice + binary cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per item (all dims but the first), averaged over items.

    ``eps`` smooths the ratio so an empty target with an empty prediction costs ~0.
    """
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (prob * target).sum(1)
    denom = prob.sum(1) + target.sum(1)
    return (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
                      bce_weight: float = 1.0) -> torch.Tensor:
    """``dice_weight * soft_dice + bce_weight * BCE`` (both computed in float32)."""
    loss = logits.new_zeros((), dtype=torch.float32)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target)
    if bce_weight:
        loss = loss + bce_weight * F.binary_cross_entropy_with_logits(logits.float(),
                                                                      target.float())
    return loss


@torch.no_grad()
def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of ``logits > 0`` per item (B,); 1.0 when prediction and target are both empty."""
    pred = (logits > 0).flatten(1).float()
    target = (target > 0.5).flatten(1).float()
    inter = (pred * target).sum(1)
    denom = pred.sum(1) + target.sum(1)
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1e-8), torch.ones_like(denom))
