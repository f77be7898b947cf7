"""Test-time augmentation: segment flipped and rotated copies of the whole task and average.

A task stays the same task when its query and every support (image and label) get the same
flip or rotation, which is what task-level training augmentation does (flips and rotations
of the whole episode). ``tta = n`` runs the first ``n`` of the eight square symmetries
(:data:`SYMMETRIES`), maps each prediction back and averages the probabilities: ``n``
forward passes instead of one. ``1`` is plain inference, ``4`` adds the flips, ``8`` the
rotations and transposes as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only tensor methods are used: importing this module needs no torch
    import torch

__all__ = ["SYMMETRIES", "TTA_CHOICES", "check_tta", "with_tta"]

Predict = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
Transform = Callable[["torch.Tensor"], "torch.Tensor"]

# (name, forward, inverse) on the last two axes; the order fixes which ones ``n`` uses
SYMMETRIES: tuple[tuple[str, Transform, Transform], ...] = (
    ("identity", lambda x: x, lambda x: x),
    ("flip left-right", lambda x: x.flip(-1), lambda x: x.flip(-1)),
    ("flip up-down", lambda x: x.flip(-2), lambda x: x.flip(-2)),
    ("rotate 180", lambda x: x.flip(-2, -1), lambda x: x.flip(-2, -1)),
    ("transpose", lambda x: x.transpose(-2, -1), lambda x: x.transpose(-2, -1)),
    ("rotate 90", lambda x: x.rot90(1, (-2, -1)), lambda x: x.rot90(-1, (-2, -1))),
    ("rotate 270", lambda x: x.rot90(-1, (-2, -1)), lambda x: x.rot90(1, (-2, -1))),
    ("anti-transpose", lambda x: x.rot90(1, (-2, -1)).flip(-1),
     lambda x: x.flip(-1).rot90(-1, (-2, -1))),
)
TTA_CHOICES = (1, 2, 4, 8)


def check_tta(tta: int) -> int:
    """``tta`` as an int, or ValueError naming the allowed values."""
    if isinstance(tta, bool) or not isinstance(tta, int) or tta not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(map(str, TTA_CHOICES))}, got {tta!r}")
    return tta


def with_tta(predict: Predict, tta: int) -> Predict:
    """``predict(queries, support_images, support_labels) -> probabilities`` averaged over
    the first ``tta`` symmetries (all tensors (N, H, W); square images for the rotations)."""
    check_tta(tta)
    if tta == 1:
        return predict

    def averaged(q: torch.Tensor, si: torch.Tensor, sl: torch.Tensor) -> torch.Tensor:
        if tta > 4 and q.shape[-1] != q.shape[-2]:
            raise ValueError(f"tta = {tta} rotates the images, which must be square; "
                             f"got {tuple(q.shape[-2:])}")
        total = None
        for _, fwd, inv in SYMMETRIES[:tta]:
            out = inv(predict(fwd(q).contiguous(), fwd(si).contiguous(), fwd(sl).contiguous()))
            total = out if total is None else total + out
        return total / tta

    return averaged
