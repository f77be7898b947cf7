"""Per-query support selection: run each query with the supports that look most like it.

The default model was trained with at most 16 supports. Given more, ``segment`` by default
runs each query with its :data:`DEFAULT_NEAREST` (16) nearest supports among all of them
(:func:`resolve_nearest`): on the training pool at N = 64, with the pixel head and the
rest of ``segment``'s defaults, that scored higher than one pass with all 64, at about a
third of the time (docs/segment.md, "Many supports"); a random 16, or 4 groups of 16
averaged, do worse. Nearness is the correlation of the images shrunk to 32 × 32 (zero
mean, unit norm): cheap, label-free, and it follows what makes a support informative for
a query (view, field of view, contrast).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

FEATURE_SIZE = 32

# run(queries (Q,H,W), support_images (S,H,W), support_labels (S,H,W)) -> (Q,H,W)
SupportRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


DEFAULT_NEAREST = 16  # the most supports the default model saw per episode in training
NEAREST_CHOICES: tuple[str, ...] = ("default", "off")


def check_nearest(nearest: int | str | None) -> None:
    """Raise ValueError unless ``nearest`` is None, ``"default"``, ``"off"`` or an
    integer >= 1."""
    if nearest is None or (isinstance(nearest, str) and nearest in NEAREST_CHOICES):
        return
    _check_count(nearest)


def _check_count(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"nearest must be an integer >= 1, 'default' or 'off', got {k!r}")


def resolve_nearest(nearest: int | str | None, supports_per_pass: int) -> int | None:
    """How many supports each query gets (None: all of them). An integer is kept;
    ``"off"`` gives None; None and ``"default"`` give :data:`DEFAULT_NEAREST` when there are
    more than that many supports per pass, else None."""
    check_nearest(nearest)
    if nearest == "off":
        return None
    if nearest is None or nearest == "default":
        return DEFAULT_NEAREST if supports_per_pass > DEFAULT_NEAREST else None
    return int(nearest)


def image_features(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W) images -> (N, 1024) zero-mean, unit-norm 32 × 32 thumbnails."""
    if images.ndim != 3:
        raise ValueError(f"image_features expects (N, H, W), got shape {tuple(images.shape)}")
    small = F.interpolate(images[:, None].float(), size=(FEATURE_SIZE, FEATURE_SIZE),
                          mode="area")[:, 0].flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return small / small.norm(dim=1, keepdim=True).clamp_min(1e-6)


def nearest_supports(queries: torch.Tensor, support_images: torch.Tensor, k: int
                     ) -> torch.Tensor:
    """(Q, min(k, S)) indices of the supports most similar to each query, most similar first.

    queries (Q, H, W), support_images (S, H, W); ties go to the lower index.
    """
    _check_count(k)
    sim = image_features(queries) @ image_features(support_images).T  # (Q, S)
    k = min(int(k), support_images.shape[0])
    # a stable sort keeps equal similarities in support order (reproducible choices)
    return torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]


def run_with_nearest(run: SupportRun, k: int | None) -> SupportRun:
    """``run`` with each query given only its ``k`` nearest supports (all of them when the
    support set has at most ``k`` entries or ``k`` is None). Queries that pick the same
    supports run together."""
    _check_count(k)
    if k is None:
        return run

    def selected(queries: torch.Tensor, support_images: torch.Tensor,
                 support_labels: torch.Tensor) -> torch.Tensor:
        if support_images.shape[0] <= k or queries.shape[0] == 0:
            return run(queries, support_images, support_labels)
        chosen = torch.sort(nearest_supports(queries, support_images, k), dim=1).values
        groups: dict[tuple[int, ...], list[int]] = {}
        for qi, row in enumerate(chosen.tolist()):
            groups.setdefault(tuple(row), []).append(qi)
        out: torch.Tensor | None = None
        for subset, members in groups.items():
            idx, rows = torch.tensor(subset), torch.tensor(members)
            prob = run(queries[rows], support_images[idx], support_labels[idx])
            if out is None:
                out = prob.new_zeros((queries.shape[0], *prob.shape[1:]))
            out[rows] = prob
        return out  # type: ignore[return-value]  # at least one query ran

    return selected
