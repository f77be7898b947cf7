"""Flipped copies of the supports, used where the supports say they help.

With one to eight supports the model sees little of a task's variety. Mirrored copies of
each support (left-right, up-down, both: four entries per support) add variety for free
where the task does not depend on orientation (a lesion, a nucleus, a vessel), and hurt
where it does (the left lung of a chest X-ray mirrors into the right one). ``"auto"``
decides per label on the supports: up to :data:`MAX_FLIP_CHECKS` supports are each
segmented from the others, once as they are and once with their flipped copies, and the
copies are used for the queries when they score higher (leave-one-out Dice at the chosen
cut). No query label is used. A single support cannot be segmented from the others;
instead its three flipped copies are segmented from it as given, and the copies are used
when the mean Dice against the flipped label reaches :data:`MIN_FLIP_CONSISTENCY`: a
task that follows the image content (a lesion, a nucleus) passes, one bound to a side (a
left lung, a clavicle) fails, since the model keeps finding it on its original side.

:func:`default_support_flips` is what ``segment`` uses when no setting is given: ``"auto"``
with 1 to :data:`AUTO_FLIP_MAX_SUPPORTS` supports per pass, where the copies helped on the
training pool's val split (+4.6 Dice at 1 support, +2.0 at 2, +1.0 at 4), ``"off"`` above
(+0.5 at 8, nothing at 16, for 4x the support entries; docs/segment.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the CLI parser imports this module
    import torch

__all__ = ["AUTO_FLIP_MAX_SUPPORTS", "FLIP_CHOICES", "FlipCheck", "MAX_FLIP_CHECKS",
           "MIN_FLIP_CONSISTENCY", "check_support_flips", "choose_support_flips",
           "default_support_flips", "flipped_copies", "resolve_support_flips"]

FLIP_CHOICES: tuple[str, ...] = ("off", "on", "auto", "default")  # default: see below
MAX_FLIP_CHECKS = 8  # supports segmented from the others to decide (each: 2 forward passes)
AUTO_FLIP_MAX_SUPPORTS = 4  # the default checks the copies up to this many supports per pass
MIN_FLIP_CONSISTENCY = 0.3  # one support: mean Dice of its flipped copies segmented from it

Predict = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def check_support_flips(value: str) -> str:
    """Validate a support-flips setting (``off``, ``on``, ``auto`` or ``default``, which is
    :func:`default_support_flips` of the supports per pass); returns it."""
    if value not in FLIP_CHOICES:
        raise ValueError(f"support flips must be one of {', '.join(FLIP_CHOICES)}, "
                         f"got {value!r}")
    return value


def resolve_support_flips(value: str | None, supports_per_pass: int,
                          nearest: int | None = None) -> str:
    """``off``, ``on`` or ``auto``: ``value`` itself, or for None / ``"default"`` the
    default for ``supports_per_pass`` supports; ``"off"`` with ``nearest`` (which would
    pick among the copies too)."""
    if value is None or value == "default":
        return "off" if nearest is not None else default_support_flips(supports_per_pass)
    return value


def default_support_flips(supports_per_pass: int) -> str:
    """The default setting for ``supports_per_pass`` supports: ``"auto"`` from 1 to
    :data:`AUTO_FLIP_MAX_SUPPORTS`, else ``"off"``."""
    return "auto" if 1 <= supports_per_pass <= AUTO_FLIP_MAX_SUPPORTS else "off"


def flipped_copies(x: torch.Tensor) -> torch.Tensor:
    """(S, H, W) -> (4S, H, W): as given, flipped left-right, up-down, and both."""
    import torch

    return torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-2, -1)], dim=0).contiguous()


@dataclass(frozen=True)
class FlipCheck:
    """The decision for one label: ``use`` the flipped copies or not, from the mean
    leave-one-out Dice of ``checks`` supports without (``plain``) and with (``flipped``)
    them; both None when nothing was checked. With one support, ``consistency`` instead:
    the mean Dice of its flipped copies segmented from it."""

    use: bool
    plain: float | None = None
    flipped: float | None = None
    checks: int = 0
    consistency: float | None = None


def choose_support_flips(predict: Predict, images: torch.Tensor, labels: torch.Tensor,
                         cut: float = 0.5, seed: int = 0,
                         max_checks: int = MAX_FLIP_CHECKS) -> FlipCheck:
    """Whether flipped copies of the supports segment held-out supports better.

    ``predict(queries (Q,H,W), support_images (S,H,W), support_labels (S,H,W))`` returns
    probabilities (Q,H,W), cut at ``cut``. Up to ``max_checks`` supports (a seeded choice)
    are each segmented from all the others; the copies are used when their mean Dice is
    higher than without them. One support: its flipped copies are segmented from it, and
    used when their mean Dice reaches :data:`MIN_FLIP_CONSISTENCY`.
    """
    import torch

    from incontext.calibration import dice_at

    n = int(images.shape[0])
    if n == 0:
        return FlipCheck(False)
    if n == 1:  # no other support to check against: does the task follow the content?
        copies, truths = flipped_copies(images)[1:], flipped_copies(labels)[1:]
        consistency = float(dice_at(predict(copies, images, labels), truths, cut).mean())
        return FlipCheck(consistency >= MIN_FLIP_CONSISTENCY, consistency=consistency)
    order = np.random.default_rng(seed).permutation(n)[:max(1, max_checks)]
    plain, flipped = [], []
    for i in order:
        rest = torch.from_numpy(np.delete(np.arange(n), i))
        query, truth = images[i:i + 1], labels[i:i + 1]
        s_img, s_lab = images[rest], labels[rest]
        plain.append(float(dice_at(predict(query, s_img, s_lab), truth, cut)[0]))
        flipped.append(float(dice_at(predict(query, flipped_copies(s_img),
                                             flipped_copies(s_lab)), truth, cut)[0]))
    p, f = float(np.mean(plain)), float(np.mean(flipped))
    return FlipCheck(f > p, p, f, len(order))
