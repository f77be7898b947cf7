"""A per-label pixel head fitted on the supports: the model's probability plus local filters.

The in-context model sees a task only through its supports and its 128-px view; on thin
structures (vessels, membranes) and unfamiliar textures its probability map is blurred or
misplaced, while a network trained on the same supports does far better. Much of that
gap is recoverable cheaply: each support is segmented from the others (leave-one-out, as
for the cut), and a tiny per-pixel classifier (:class:`PixelHead`, two hidden layers of
32 units, about 1,600 weights; 1,800 with colour) learns to map the model's probability,
smoothed at a few scales, and classic local filters of the image (Gaussian smoothing,
gradient magnitude and Hessian eigenvalues at 1–4 px; R, G, B where the images have
colour) to the support's label.
The queries' probabilities then go through the same head. The model's weights are not
changed; fitting takes about a second per label on a CPU.

``"auto"`` decides per label on the supports: the head is fitted on one half of them and
scored on the other, both ways (2-fold cross-validation), at the best cut on those
predictions, and used when that Dice beats the model's leave-one-out Dice on the same
supports at the model's cut. No query label is used. Chosen on the training pool's val
split (benchmarks/refine_gate.py); ``segment``'s default from 2 supports, where it raised
the pool's mean Dice by 0.9 to 3.6 (val and test, N = 2 to 16) and the held-out mean at
N = 16 from 51.7 to 62.7 (docs/segment.md, MODEL_CARD.md). :data:`REFINE_CHOICES` are
``segment``'s and the benchmark's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the CLI parser imports this module
    import torch

__all__ = ["AveragedHeads", "FAILED_FIT_MARGIN", "MAX_REFINE_SUPPORTS", "MIN_REFINE_SUPPORTS",
           "REFINE_CHOICES", "PixelHead", "RefineCheck", "check_refine", "choose_refine",
           "default_refine", "fit_pixel_head", "hessian_eigenvalues", "pixel_features",
           "refine_probabilities", "resolve_refine"]

REFINE_CHOICES: tuple[str, ...] = ("off", "on", "auto", "default")  # default: see below
MAX_REFINE_SUPPORTS = 16  # supports segmented from the others to fit the head on
MIN_REFINE_SUPPORTS = 2  # fewer: nothing to fit and check the head on
# the head fitted on all the checked supports has failed when its Dice on them falls this
# far below the 2-fold Dice (a small shortfall is the fold heads' cut not suiting it)
FAILED_FIT_MARGIN = 0.1
HEAD_STEPS = 300  # Adam steps of the head on batches of HEAD_BATCH support pixels
HEAD_BATCH = 4096
HEAD_HIDDEN = 32
_GREY_SIGMAS = (1.0, 2.0, 4.0)
_GRADIENT_SIGMAS = (1.0, 2.0)
_HESSIAN_SIGMAS = (1.0, 2.0, 3.0)
_COARSE_GREY_SIGMA = 8.0  # pixel_features(coarse=True): an experiment's extra filters
_COARSE_SIGMA = 6.0  # Hessian and colour
_COARSE_LOGIT_SIGMAS = (6.0, 12.0)
_EPS = 1e-4

# predict(queries (Q,H,W), support_images (S,H,W), support_labels (S,H,W)) -> (Q,H,W)
Predict = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


def check_refine(value: str) -> str:
    """Validate a refine setting (``off``, ``on``, ``auto`` or ``default``, which is
    :func:`default_refine` of the supports per pass); returns it."""
    if value not in REFINE_CHOICES:
        raise ValueError(f"refine must be one of {', '.join(REFINE_CHOICES)}, got {value!r}")
    return value


def default_refine(supports_per_pass: int) -> str:
    """The default setting for ``supports_per_pass`` supports: ``"auto"`` from
    :data:`MIN_REFINE_SUPPORTS` on (the head needs supports to fit and check on), else
    ``"off"``."""
    return "auto" if supports_per_pass >= MIN_REFINE_SUPPORTS else "off"


def resolve_refine(value: str | None, supports_per_pass: int) -> str:
    """``off``, ``on`` or ``auto``: ``value`` itself, or for None / ``"default"`` the
    default for ``supports_per_pass`` supports."""
    if value is None or value == "default":
        return default_refine(supports_per_pass)
    return value


def pixel_features(image: np.ndarray, prob: np.ndarray | None,
                   colour: np.ndarray | None = None, coarse: bool = False) -> np.ndarray:
    """Per-pixel features of one image: (H, W) grey image in [0, 1], (H, W) model
    probability (None: image filters only, as the ``pixel-classifier`` baseline) and
    optional (3, H, W) R, G, B -> (H·W, F) float32. F is 15 for grey images (12 without
    the probability) and 6 more with colour. ``coarse`` appends coarser filters (grey
    smoothed at 8 px, Hessian eigenvalues at 6 px; R, G, B smoothed at 6 px; the logit
    smoothed at 6 and 12 px: 3, +3, +2 columns), which ``segment`` does not use
    (benchmarks/refine_variants.py, docs/segment.md)."""
    from scipy import ndimage

    image = np.asarray(image, np.float32)
    maps = [image]
    maps += [ndimage.gaussian_filter(image, s) for s in _GREY_SIGMAS]
    maps += [ndimage.gaussian_gradient_magnitude(image, s) for s in _GRADIENT_SIGMAS]
    for s in _HESSIAN_SIGMAS:
        maps += hessian_eigenvalues(image, s)
    if colour is not None:
        for channel in np.asarray(colour, np.float32):
            maps += [channel, ndimage.gaussian_filter(channel, 2.0)]
    if prob is not None:
        p = np.clip(np.asarray(prob, np.float32), _EPS, 1 - _EPS)
        logit = np.log(p / (1 - p))
        maps += [logit, ndimage.gaussian_filter(logit, 1.0), ndimage.gaussian_filter(logit, 3.0)]
    if coarse:
        maps += [ndimage.gaussian_filter(image, _COARSE_GREY_SIGMA),
                 *hessian_eigenvalues(image, _COARSE_SIGMA)]
        if colour is not None:
            maps += [ndimage.gaussian_filter(np.asarray(c, np.float32), _COARSE_SIGMA)
                     for c in colour]
        if prob is not None:
            maps += [ndimage.gaussian_filter(logit, s) for s in _COARSE_LOGIT_SIGMAS]
    return np.stack([m.ravel() for m in maps], axis=1).astype(np.float32)


def hessian_eigenvalues(image: np.ndarray, sigma: float) -> list[np.ndarray]:
    """The two eigenvalues (larger first) of the scale-normalised Hessian of a (H, W) image
    at ``sigma`` px: ridges and blobs (vessels, membranes, nuclei)."""
    from scipy import ndimage

    hxx = ndimage.gaussian_filter(image, sigma, order=(2, 0))
    hyy = ndimage.gaussian_filter(image, sigma, order=(0, 2))
    hxy = ndimage.gaussian_filter(image, sigma, order=(1, 1))
    half_trace = (hxx + hyy) / 2
    root = np.sqrt(((hxx - hyy) / 2) ** 2 + hxy ** 2)
    return [(half_trace + root) * sigma * sigma, (half_trace - root) * sigma * sigma]


@dataclass
class PixelHead:
    """A fitted per-pixel classifier: features standardised with the supports' ``mean`` and
    ``std``, then ``net`` (logits)."""

    mean: np.ndarray
    std: np.ndarray
    net: torch.nn.Module

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(P, F) features -> (P,) foreground probabilities."""
        import torch

        x = torch.from_numpy((features - self.mean) / self.std)
        with torch.inference_mode():
            return torch.sigmoid(self.net(x)[:, 0]).numpy()


@dataclass
class AveragedHeads:
    """Several fitted heads whose probabilities are averaged (the same ``predict``)."""

    heads: tuple[PixelHead, ...]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(P, F) features -> (P,) the heads' mean foreground probability."""
        return np.mean([h.predict(features) for h in self.heads], axis=0).astype(np.float32)


def fit_pixel_head(features: np.ndarray, targets: np.ndarray, seed: int = 0,
                   steps: int = HEAD_STEPS) -> PixelHead:
    """Fit a :class:`PixelHead` on (P, F) ``features`` and (P,) binary ``targets`` (binary
    cross-entropy, Adam, ``steps`` batches of sampled pixels; deterministic for a seed).
    Works inside ``torch.inference_mode()`` and ``torch.no_grad()`` too."""
    import torch

    with torch.inference_mode(False), torch.enable_grad():
        return _fit(features, targets, seed, steps)


def _fit(features: np.ndarray, targets: np.ndarray, seed: int, steps: int) -> PixelHead:
    import torch

    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-6
    x = torch.from_numpy((features - mean) / std)
    y = torch.from_numpy((np.asarray(targets) >= 0.5).astype(np.float32))
    generator = torch.Generator().manual_seed(int(seed))
    init = torch.Generator().manual_seed(int(seed) + 1)
    width = x.shape[1]
    layers = [torch.nn.Linear(width, HEAD_HIDDEN), torch.nn.ReLU(),
              torch.nn.Linear(HEAD_HIDDEN, HEAD_HIDDEN), torch.nn.ReLU(),
              torch.nn.Linear(HEAD_HIDDEN, 1)]
    with torch.no_grad():  # seeded initialisation, independent of the global RNG
        for layer in layers:
            if isinstance(layer, torch.nn.Linear):
                bound = 1.0 / layer.in_features ** 0.5
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=init) * 2 * bound
                                   - bound)
                layer.bias.copy_(torch.rand(layer.bias.shape, generator=init) * 2 * bound
                                 - bound)
    net = torch.nn.Sequential(*layers)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        batch = torch.randint(0, x.shape[0], (HEAD_BATCH,), generator=generator)
        # index_select: the same rows as x[batch], about 15 % faster for the whole fit
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(x.index_select(0, batch))[:, 0], y.index_select(0, batch))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return PixelHead(mean.astype(np.float32), std.astype(np.float32), net.eval())


def _features(images: np.ndarray, probs: np.ndarray, colour: np.ndarray | None,
              ) -> np.ndarray:
    return np.concatenate([pixel_features(images[i], probs[i],
                                          None if colour is None else colour[i])
                           for i in range(images.shape[0])])


@dataclass(frozen=True)
class RefineCheck:
    """One label's decision: ``use`` the head or not, from the mean Dice on ``supports``
    supports of the model (each segmented from the others, at its cut) and of the head
    (2-fold cross-validated on them, at ``cut``, the best of the cuts tried on those
    predictions); both None when nothing was checked (``"on"``, or fewer than 2
    supports). ``head`` is fitted on all of them when used; its probabilities are cut at
    ``cut``. With ``"auto"``, ``seen`` is that fit's Dice on its own supports at ``cut``;
    ``folds_kept``: it fell more than :data:`FAILED_FIT_MARGIN` below ``fitted`` (a failed
    fit: it should do better on supports it has seen than the fold heads on those they have
    not), so ``head`` is the two cross-validated fold heads averaged instead, the heads the
    check scored."""

    use: bool
    model: float | None = None
    fitted: float | None = None
    supports: int = 0
    head: PixelHead | AveragedHeads | None = None
    cut: float = 0.5
    seen: float | None = None
    folds_kept: bool = False


def choose_refine(predict: Predict, images: torch.Tensor, labels: torch.Tensor,
                  colour: np.ndarray | None = None, cut: float = 0.5, seed: int = 0,
                  mode: str = "auto", max_supports: int = MAX_REFINE_SUPPORTS,
                  head_cuts: Sequence[float] = (0.5,)) -> RefineCheck:
    """Fit the pixel head on supports segmented from the others, and say whether to use it.

    ``predict`` as in :func:`incontext.support_flips.choose_support_flips`; images and
    labels (S, H, W) at the size ``predict`` works at, ``colour`` (S, 3, H, W) or None.
    Up to ``max_supports`` supports (a seeded choice) are segmented from all the others;
    ``mode="on"`` fits the head on them (its cut: 0.5), ``"auto"`` first compares its
    2-fold cross-validated Dice, at the best of ``head_cuts`` on those predictions, with the
    model's leave-one-out Dice at ``cut``. Fewer than 2 supports: the head is not used.
    """
    import torch

    from incontext.calibration import dice_at

    mode = resolve_refine(check_refine(mode), int(images.shape[0]))
    n = int(images.shape[0])
    if mode == "off" or n < MIN_REFINE_SUPPORTS:
        return RefineCheck(False)
    chosen = np.sort(np.random.default_rng(seed).permutation(n)[:max(2, max_supports)])
    probs = []
    for i in chosen:
        rest = torch.from_numpy(np.delete(np.arange(n), i))
        probs.append(predict(images[i:i + 1], images[rest], labels[rest])[0].clamp(0, 1))
    prob = torch.stack(probs).numpy()
    img = images[torch.from_numpy(chosen)].numpy()
    truth = (labels[torch.from_numpy(chosen)].numpy() >= 0.5).astype(np.float32)
    col = None if colour is None else np.asarray(colour)[chosen]
    feats = _features(img, prob, col)
    pixels = img.shape[1] * img.shape[2]
    model_dice = head_dice = None
    use = mode == "on"
    if mode == "auto":
        model_dice = float(dice_at(torch.from_numpy(prob), torch.from_numpy(truth), cut).mean())
        fold = np.arange(len(chosen)) % 2
        held_out = np.zeros_like(truth)  # each support's head probabilities from the other fold
        fold_heads = []
        for f in (0, 1):
            train = np.repeat(fold != f, pixels)
            fold_heads.append(fit_pixel_head(feats[train], truth.reshape(-1)[train], seed))
            held_out[fold == f] = fold_heads[-1].predict(feats[~train]).reshape(
                -1, *img.shape[1:])
        scores = {float(t): float(dice_at(torch.from_numpy(held_out), torch.from_numpy(truth),
                                          float(t)).mean()) for t in head_cuts}
        head_cut = max(scores, key=lambda t: (round(scores[t], 6), -abs(t - 0.5)))
        head_dice = scores[head_cut]
        use = head_dice > model_dice
    head = fit_pixel_head(feats, truth.reshape(-1), seed) if use else None
    seen_dice, folds_kept = None, False
    if head is not None and mode == "auto":  # a failed fit must not reach the queries
        seen = head.predict(feats).reshape(truth.shape)
        seen_dice = float(dice_at(torch.from_numpy(seen), torch.from_numpy(truth),
                                  head_cut).mean())
        if seen_dice < head_dice - FAILED_FIT_MARGIN:
            head, folds_kept = AveragedHeads(tuple(fold_heads)), True
    return RefineCheck(use, model_dice, head_dice, len(chosen), head,
                       head_cut if use and mode == "auto" else 0.5, seen_dice, folds_kept)


def refine_probabilities(head: PixelHead | AveragedHeads, images: np.ndarray, probs: np.ndarray,
                         colour: np.ndarray | None = None) -> np.ndarray:
    """The head's foreground probabilities (Q, H, W) for (Q, H, W) grey ``images`` and the
    model's ``probs`` on them, with (Q, 3, H, W) ``colour`` where the head was fitted on
    colour."""
    out = np.empty(probs.shape, np.float32)
    for i in range(images.shape[0]):
        feats = pixel_features(images[i], probs[i], None if colour is None else colour[i])
        out[i] = head.predict(feats).reshape(probs.shape[1:])
    return out
