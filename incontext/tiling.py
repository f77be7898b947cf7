"""Tiled in-context inference: run a low-resolution model on position-matched tiles.

A model trained at ``r`` pixels sees a whole image shrunk to ``r × r``; thin or small
structures (vessels, membranes, nuclei) vanish. With ``tiles = g`` the query and every
support are resized to ``g·r`` pixels and cut into overlapping ``r × r`` tiles on the same
grid (stride ``r / 2``); tile ``(i, j)`` of the query is segmented with tile ``(i, j)`` of
each support as its support set, and the tile probabilities are blended back with a
smooth window. Cost: ``(2g − 1)²`` forward passes instead of one.

Tiling helps thin and small structures and can hurt large ones, which need the whole
image as context. ``choose_tiles`` decides per task from the support set alone: it
segments a few supports from the others with each candidate and keeps the better one.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from incontext.calibration import Calibration, support_calibration
from incontext.support_selection import run_with_nearest

__all__ = ["AUTO_TILES", "LARGE_IMAGE_FACTOR", "TiledRunner", "call_key", "check_tiles",
           "choose_tiles", "default_tiles", "is_auto", "predict_tiled", "resize_stack",
           "tile_calibration", "tile_options", "tile_origins", "tiled_size"]

AUTO_TILES = (1, 2)  # what ``tiles="auto"`` chooses between; ``"autoG"``: 1 to G
TILE_CHECKS = 4  # supports segmented from the others to choose a tiling
LARGE_IMAGE_FACTOR = 2  # images this many times the model's size get ``"auto"`` by default


def default_tiles(shapes, resolution: int) -> int | str:
    """The 2D default tiling for a support set with image ``shapes`` ((H, W, ...) each).

    ``"auto"`` when the supports' median shorter side is at least
    :data:`LARGE_IMAGE_FACTOR` times the model ``resolution`` (tiles then see detail that
    the whole-image pass shrinks away: on the training pool at 256 px, +2.2 mean Dice and
    no dataset lower, docs/segment.md), else 1 (tiles would only enlarge the image).
    """
    sides = sorted(min(int(s[0]), int(s[1])) for s in shapes)
    if not sides:
        return 1
    return "auto" if sides[len(sides) // 2] >= LARGE_IMAGE_FACTOR * resolution else 1


def check_tiles(tiles: int | str) -> int | str:
    """``tiles`` if valid: an integer >= 1, ``"auto"`` or ``"autoG"`` (G >= 2); else ValueError."""
    if isinstance(tiles, int) and not isinstance(tiles, bool) and tiles >= 1:
        return tiles
    if isinstance(tiles, str) and tiles.startswith("auto"):
        rest = tiles[4:]
        if rest == "" or (rest.isdigit() and int(rest) >= 2):
            return tiles
    raise ValueError(f"tiles must be an integer >= 1, 'auto' (1 or 2) or 'autoG' (1 to G, "
                     f"G >= 2), got {tiles!r}")


def is_auto(tiles: int | str) -> bool:
    """Whether ``tiles`` asks for a per-task choice (``"auto"`` or ``"autoG"``)."""
    return isinstance(tiles, str)


def tile_options(tiles: int | str) -> tuple[int, ...]:
    """The tilings to consider: :data:`AUTO_TILES` for ``"auto"``, 1..G for ``"autoG"``,
    else ``(tiles,)``."""
    check_tiles(tiles)
    if tiles == "auto":
        return AUTO_TILES
    if isinstance(tiles, str):
        return tuple(range(1, int(tiles[4:]) + 1))
    return (int(tiles),)


def tiled_size(resolution: int, tiles: int) -> int:
    """Side of the working image for ``tiles`` tiles per side at model ``resolution``."""
    if tiles < 1:
        raise ValueError(f"tiles must be >= 1, got {tiles}")
    return resolution * tiles


def tile_origins(size: int, tile: int) -> list[int]:
    """Top-left offsets along one axis: stride ``tile // 2``, the last tile flush with the edge."""
    if tile >= size:
        return [0]
    stride = max(1, tile // 2)
    origins = list(range(0, size - tile + 1, stride))
    if origins[-1] != size - tile:
        origins.append(size - tile)
    return origins


def _window(tile: int) -> torch.Tensor:
    """(tile, tile) blending weights: a raised cosine, never exactly zero."""
    ramp = torch.hann_window(tile + 2, periodic=False)[1:-1]
    return (ramp[:, None] * ramp[None, :]).clamp_min(1e-3)


def predict_tiled(predict, queries: torch.Tensor, support_images: torch.Tensor,
                  support_labels: torch.Tensor, tile: int) -> torch.Tensor:
    """Blend per-tile probabilities over the whole working image.

    predict(queries (Q, t, t), support_images (S, t, t), support_labels (S, t, t)) ->
    (Q, t, t) probabilities; queries (Q, H, W), supports (S, H, W) at the working size
    (square, a multiple of nothing in particular) -> (Q, H, W).
    """
    q, h, w = queries.shape
    if support_images.shape[-2:] != (h, w) or support_labels.shape[-2:] != (h, w):
        raise ValueError(f"tiled inference: supports {tuple(support_images.shape)} and "
                         f"queries {tuple(queries.shape)} must share the working size")
    total = torch.zeros((q, h, w))
    weight = torch.zeros((h, w))
    win = _window(tile)
    for y in tile_origins(h, tile):
        for x in tile_origins(w, tile):
            cut = (slice(None), slice(y, y + tile), slice(x, x + tile))
            prob = predict(queries[cut], support_images[cut], support_labels[cut])
            total[cut] += prob.float().cpu() * win
            weight[y:y + tile, x:x + tile] += win
    return total / weight


class TiledRunner:
    """Probabilities with ``g`` tiles per side, for a ``predict`` at model ``resolution``.

    predict(queries (Q, r, r), support_images (S, r, r), support_labels (S, r, r)) ->
    (Q, r, r). ``runner(g, q, si, sl)`` takes stacks at the working size
    ``tiled_size(resolution, g)``; ``runner.resized(g, q, si, sl)`` takes them at any
    size, works at that working size and answers at the input size (what
    :func:`choose_tiles` needs to compare tilings). ``nearest`` = k gives each query only
    its k most similar supports (:func:`incontext.support_selection.run_with_nearest`).

    With ``memo=True`` single-query calls are remembered by their inputs' contents (until
    :meth:`forget`): the per-task choices (cut and rendering, flipped supports, pixel head)
    each segment supports from the others, often the same support from the same others,
    and a repeated call then costs a hash instead of a forward pass. ``predict`` must be
    deterministic (the model in eval mode).
    """

    def __init__(self, predict, resolution: int, nearest: int | None = None,
                 memo: bool = False) -> None:
        self.predict = predict
        self.resolution = resolution
        self.nearest = nearest
        self._memo: dict[bytes, torch.Tensor] | None = {} if memo else None
        self.memo_hits = 0  # single-query calls answered from the memo

    def forget(self) -> None:
        """Drop the remembered calls (a new support set, or memory to free)."""
        if self._memo is not None:
            self._memo.clear()

    def __call__(self, g: int, q: torch.Tensor, si: torch.Tensor, sl: torch.Tensor
                 ) -> torch.Tensor:
        key = None
        if self._memo is not None and q.shape[0] == 1:
            key = call_key(g, self.nearest, q, si, sl)
            hit = self._memo.get(key)
            if hit is not None:
                self.memo_hits += 1
                return hit.clone()

        def run(qs: torch.Tensor, s_img: torch.Tensor, s_lab: torch.Tensor) -> torch.Tensor:
            if g == 1:
                return self.predict(qs, s_img, s_lab)
            return predict_tiled(self.predict, qs, s_img, s_lab, self.resolution)

        out = run_with_nearest(run, self.nearest)(q, si, sl)
        if key is not None:
            self._memo[key] = out.clone()  # type: ignore[index]  # memo is on
        return out

    def resized(self, g: int, q: torch.Tensor, si: torch.Tensor, sl: torch.Tensor
                ) -> torch.Tensor:
        w = tiled_size(self.resolution, g)
        prob = self(g, resize_stack(q, w), resize_stack(si, w), resize_stack(sl, w))
        return resize_stack(prob, tuple(q.shape[-2:]))


def call_key(tiles: int, nearest: int | None, *tensors: torch.Tensor) -> bytes:
    """A digest of a call's settings and its tensors' dtypes, shapes and values: equal
    digests mean equal inputs (BLAKE2b, 128 bits)."""
    h = hashlib.blake2b(repr((int(tiles), nearest)).encode(), digest_size=16)
    for t in tensors:
        array = t.detach().cpu().contiguous().numpy()
        h.update(repr((array.dtype.str, array.shape)).encode())
        h.update(array.data)
    return h.digest()


def resize_stack(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(N, H, W) -> (N, h, w) (``size`` = h = w, or (h, w)), bilinear with antialiasing;
    a no-op at the same size."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    return F.interpolate(x[:, None].float(), size=hw, mode="bilinear",
                         align_corners=False, antialias=True)[:, 0]


def tile_calibration(run, support_images: torch.Tensor, support_labels: torch.Tensor,
                     candidates: tuple[int, ...] = AUTO_TILES, max_checks: int = TILE_CHECKS,
                     seed: int = 0, threshold: float = 0.5) -> Calibration:
    """Pick the tiling that segments the support set itself best (leave-one-out).

    run(tiles, queries (Q, H, W), support_images (S, H, W), support_labels (S, H, W)) ->
    (Q, H, W) probabilities. Up to ``max_checks`` supports with foreground are each
    predicted from the others with every candidate, cut at ``threshold``; the candidate
    with the highest mean Dice wins (ties go to fewer tiles). Uses only the supports: no
    query labels. With fewer than 2 supports: ``min(candidates)``, unscored.
    """
    candidates = tuple(sorted(set(int(c) for c in candidates)))
    return support_calibration(run, support_images, support_labels, candidates, (threshold,),
                               max_checks=max_checks, margin=0.0, seed=seed)


def choose_tiles(run, support_images: torch.Tensor, support_labels: torch.Tensor,
                 candidates: tuple[int, ...] = AUTO_TILES, max_checks: int = TILE_CHECKS,
                 seed: int = 0) -> tuple[int, dict[int, float]]:
    """:func:`tile_calibration` at a 0.5 cut, as (tiles, {tiles: mean Dice})."""
    cal = tile_calibration(run, support_images, support_labels, candidates, max_checks, seed)
    return cal.tiles, {g: score for (g, _), score in cal.scores.items()}
