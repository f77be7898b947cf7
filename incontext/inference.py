"""In-context inference: segment queries from a support set, no training.

``segment(model, query, support_images, support_labels)`` takes 2D arrays of any
size and dtype, normalises and resizes them to the model's resolution, runs one
binary task per foreground label value, optionally ensembles over random support
subsets, and returns masks, probabilities and uncertainty at each query's size.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from incontext.calibration import (
    THRESHOLD_GRID,
    Calibration,
    rescale_from_half,
    rescale_to_threshold,
    support_calibration,
)
from incontext.colour import (
    DEFAULT_COLOUR,
    candidates,
    check_colour,
    choose_rendering,
    render_query,
)
from incontext.device import default_batch_size
from incontext.preprocessing import (
    PreprocessingError,
    check_finite,
    colour_channels,
    normalize_intensity,
    pad_to_square,
    resize_image,
    resize_mask_soft,
    resize_probabilities,
    to_grayscale,
)
from incontext.refine import check_refine, choose_refine, refine_probabilities, resolve_refine
from incontext.support_cache import (
    PreparedSupports,
    cached,
    fingerprint,
    keep,
    rendered_supports,
)
from incontext.support_flips import (
    check_support_flips,
    choose_support_flips,
    flipped_copies,
    resolve_support_flips,
)
from incontext.support_selection import check_nearest, resolve_nearest
from incontext.tiling import (
    TiledRunner,
    check_tiles,
    default_tiles,
    resize_stack,
    tile_calibration,
    tile_options,
    tiled_size,
)
from incontext.tta import check_tta, with_tta

ArrayLike = np.ndarray | torch.Tensor
DEFAULT_SUPPORT_SIZE = 64


class SupportSetError(ValueError):
    """The support set or the queries cannot be used; the message says why."""


@dataclass
class Segmentation:
    """Result for one query image (at the query's own size).

    mask:          (H, W) label map (values from ``labels``; 0 = background)
    probabilities: (L, H, W) mean foreground probability per label
    uncertainty:   (L, H, W) std of the probability across ensemble members
    labels:        the L foreground label values, in the order of the first axis
    tiles:         per label, the tiling used (1 = whole image; see ``segment(tiles=)``)
    thresholds:    per label, the cut applied to the model's probabilities (with
                   ``threshold="auto"`` the chosen one; ``probabilities`` are then rescaled
                   so that this cut is at 0.5)
    colours:       per label, the grey rendering of colour images used (``segment(colour=)``;
                   "luma" for grey images)
    support_dice:  per label, the mean Dice of the chosen settings on supports segmented
                   from the other supports (leave-one-out; no query label; with their
                   flipped copies where those were added): an estimate of
                   the Dice to expect on the queries; where the pixel head was used, its
                   2-fold Dice (``segment(refine=)``). None where nothing was chosen on
                   the supports (fixed tiles, cut and rendering, refine off) or too few
                   supports had foreground to check (3 for a cut, 1 otherwise)
    support_checks: per label, how many supports that estimate averages (0: not measured)
    methods:       per label, what segmented it: ``"model"``, or ``"unet"`` where
                   :class:`incontext.hand_over.UNetHandOver` handed it to a U-Net
    flips:         per label, whether flipped copies of the supports were added
                   (``segment(support_flips=)``)
    refined:       per label, whether the model's probabilities went through a pixel head
                   fitted on the supports (``segment(refine=)``; ``thresholds`` then gives
                   the cut on the head's probabilities)
    nearest:       how many supports, the most alike, each query was run with (``segment(
                   nearest=)``, 16 by default above 16 supports); None: all of them
    """

    mask: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    labels: list[int]
    tiles: list[int] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    colours: list[str] = field(default_factory=list)
    support_dice: list[float | None] = field(default_factory=list)
    support_checks: list[int] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    flips: list[bool] = field(default_factory=list)
    refined: list[bool] = field(default_factory=list)
    nearest: int | None = None


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _is_single_image(arr: np.ndarray) -> bool:
    """(H,W) grey or (H,W,3|4) colour."""
    return arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))


def _as_image_list(images, what: str) -> list[np.ndarray]:
    """One 2D image, a (N,H,W) stack, or a sequence of 2D images -> list of arrays."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        arr = _to_numpy(images)
        if _is_single_image(arr):
            return [arr]
        if arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] in (3, 4)):
            return list(arr)
        if arr.ndim == 4 and arr.shape[1] == 1:  # (N,1,H,W)
            return list(arr[:, 0])
        raise SupportSetError(f"{what}: expected a 2D image, a (N,H,W) stack or a list of "
                              f"2D images, got an array of shape {arr.shape}")
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        return [_to_numpy(im) for im in images]
    raise SupportSetError(f"{what}: expected arrays, got {type(images).__name__}")


def _check_label_map(label: np.ndarray, i: int) -> np.ndarray:
    if label.ndim != 2:
        raise SupportSetError(f"support label {i}: expected a 2D label map, got shape "
                              f"{label.shape}")
    if label.dtype == bool:
        return label.astype(np.int64)
    if np.issubdtype(label.dtype, np.floating):
        if not np.isfinite(label).all():
            raise SupportSetError(f"support label {i}: contains NaN/inf")
        if not np.array_equal(label, np.round(label)):
            raise SupportSetError(
                f"support label {i}: values are not integers (e.g. "
                f"{label[label != np.round(label)].flat[0]:.3g}); give a label map of integer "
                "values (0 = background)")
        return label.astype(np.int64)
    if not np.issubdtype(label.dtype, np.integer):
        raise SupportSetError(f"support label {i}: unsupported dtype {label.dtype}")
    return label.astype(np.int64)


def _prepare_images(images: list[np.ndarray], size: int, what: str, modality: str,
                    window, normalized: bool = False) -> np.ndarray:
    out = np.empty((len(images), size, size), dtype=np.float32)
    for i, image in enumerate(images):
        try:
            gray = to_grayscale(image, f"{what} {i}")
            if normalized:
                check_finite(gray, f"{what} {i}")
                norm = np.clip(gray, 0.0, 1.0)
            else:
                norm = normalize_intensity(gray, modality, window, f"{what} {i}")
        except PreprocessingError as exc:
            raise SupportSetError(str(exc)) from exc
        out[i] = resize_image(pad_to_square(norm), size)
    return out


def _prepare_colour(images: list[np.ndarray], size: int, what: str, modality: str,
                    window, normalized: bool = False) -> np.ndarray:
    """(N, 3, size, size): R, G, B of each image normalised and resized like the grey image
    (grey images give their grey three times)."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        rgb = colour_channels(image)
        channels = [rgb[..., c] for c in range(3)] if rgb is not None else [image] * 3
        out[i] = _prepare_images(channels, size, f"{what} {i}", modality, window, normalized)
    return out


def _pick_rendering(run: TiledRunner, names: Sequence[str],
                    s_rend: dict[str, dict[int, torch.Tensor]], soft: dict[int, torch.Tensor],
                    first: torch.Tensor, options: Sequence[int], thresholds: Sequence[float],
                    seed: int) -> tuple[str, Calibration | None]:
    """The rendering to use for one label, and its calibration when one was computed.

    Renderings are compared on the whole image (the smallest tiling); with several tilings
    only the chosen rendering is then calibrated over all of them (session 31: the same
    choices as comparing every rendering at every tiling on the training pool's 256-px
    colour tasks, in half the time)."""
    if len(names) == 1:
        return names[0], None
    big, whole = max(options), (min(options),)
    cals = {name: support_calibration(run.resized, s_rend[name][big][first], soft[big][first],
                                      whole, thresholds, seed=seed, always_score=True)
            for name in names}
    chosen = choose_rendering({k: max(c.scores.values()) if c.scores else None
                               for k, c in cals.items()})
    if len(options) == 1:
        return chosen, cals[chosen]
    return chosen, support_calibration(run.resized, s_rend[chosen][big][first],
                                       soft[big][first], options, thresholds, seed=seed,
                                       always_score=True)


def checked_label_maps(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]
                       ) -> list[np.ndarray]:
    """Support label maps as int64, each checked and matched to its image's (H, W)."""
    maps = []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        lab = _check_label_map(lab, i)
        if img.shape[:2] != lab.shape:
            raise SupportSetError(f"support pair {i}: image shape {img.shape} does not match "
                                  f"label shape {lab.shape}")
        maps.append(lab)
    return maps


def _window_key(window) -> object:
    """A hashable, printable form of a ``window`` setting (for the support-set key)."""
    if window is None or isinstance(window, str):
        return window
    return tuple(float(v) for v in window)


def _prepare_supports(s_images: list[np.ndarray], s_labels: list[np.ndarray],
                      sizes: dict[int, int], modality: str, window, normalized: bool,
                      use_colour: bool, wanted: tuple[int, ...] | None,
                      key: str) -> PreparedSupports:
    """Check the support pairs and make the model's inputs for every tiling in ``sizes``."""
    label_maps = checked_label_maps(s_images, s_labels)
    present = sorted({int(v) for lab in label_maps for v in np.unique(lab) if v != 0})
    targets = list(wanted) if wanted is not None else present
    if not present:
        warnings.warn("every support label is empty: the prediction will be all background",
                      stacklevel=3)
    missing = [v for v in targets if v not in present]
    if missing and present:
        warnings.warn(f"label value(s) {missing} do not occur in any support label",
                      stacklevel=3)
    grey = {g: torch.from_numpy(_prepare_images(s_images, n, "support image", modality,
                                                window, normalized=normalized))
            for g, n in sizes.items()}
    colour = None
    if use_colour:
        colour = {g: _prepare_colour(s_images, n, "support image", modality, window,
                                     normalized=normalized) for g, n in sizes.items()}
    soft = {value: {g: torch.stack([resize_mask_soft(pad_to_square(
        (lab == value).astype(np.float32)), n) for lab in label_maps]) for g, n in sizes.items()}
        for value in targets if value in present}
    return PreparedSupports(key=key, present=present, grey=grey, colour=colour, soft=soft)


def draw_support_subsets(pool: int, size: int, ensemble: int, seed: int) -> list[np.ndarray]:
    """Sorted support indices for each ensemble member (all of them when size >= pool)."""
    if size >= pool:
        return [np.arange(pool) for _ in range(ensemble)]
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(pool, size, replace=False)) for _ in range(ensemble)]


def _model_resolution(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "resolution", 128))


@torch.inference_mode()
def predict_probabilities(model: nn.Module, queries: torch.Tensor, support_images: torch.Tensor,
                          support_labels: torch.Tensor, batch_size: int | None = None,
                          tta: int = 1) -> torch.Tensor:
    """Sigmoid probabilities at model resolution.

    queries (Q,H,W), support_images/labels (S,H,W) -> (Q,H,W); queries are run in
    batches of ``batch_size`` against the same support set (default: 1 on the CPU, 8 on a
    GPU; :func:`incontext.device.default_batch_size`). ``tta`` > 1 averages over
    flipped and rotated copies of the whole task (:mod:`incontext.tta`).
    """
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = default_batch_size(device)

    def once(qs: torch.Tensor, si: torch.Tensor, sl: torch.Tensor) -> torch.Tensor:
        s_img = si.to(device)[None, :, None]
        s_lab = sl.to(device)[None, :, None]
        outs = []
        for start in range(0, qs.shape[0], batch_size):
            q = qs[start:start + batch_size].to(device)[:, None]
            b = q.shape[0]
            logits = model(q, s_img.expand(b, -1, -1, -1, -1),
                           s_lab.expand(b, -1, -1, -1, -1))
            outs.append(torch.sigmoid(logits[:, 0].float()).cpu())
        return torch.cat(outs)

    return with_tta(once, tta)(queries, support_images, support_labels)


def segment(
    model: nn.Module,
    query,
    support_images,
    support_labels,
    *,
    ensemble: int = 1,
    support_size: int | None = None,
    threshold: float | str = "auto",
    seed: int = 0,
    batch_size: int | None = None,
    labels: Sequence[int] | None = None,
    modality: str = "other",
    window: Sequence[float] | None = None,
    supports_normalized: bool = False,
    tiles: int | str | None = None,
    tta: int = 1,
    colour: str = "auto",
    nearest: int | str | None = None,
    reuse: dict | None = None,
    support_flips: str | None = None,
    refine: str | None = None,
) -> Segmentation | list[Segmentation]:
    """Segment ``query`` image(s) from a support set of (image, label map) pairs.

    query: one 2D image, a (Q,H,W) stack or a list of 2D images of any sizes.
    support_images / support_labels: (S,H,W) stacks or lists of 2D arrays; each
    label map holds integer values, 0 = background; every other value (or those
    in ``labels``) is one binary task. ``supports_normalized=True`` takes support
    images as already normalised to [0, 1] (e.g. slices from a task index, normalised
    over their whole volume) instead of min-max normalising each one again.
    support_size: entries per forward pass (default: all, at most 64); with a
    larger pool, each of the ``ensemble`` members uses a random subset (seeded)
    and probabilities are averaged. ``tiles`` > 1 runs the model on position-matched,
    overlapping tiles of a ``tiles``-times larger image (:mod:`incontext.tiling`), for
    structures too thin for the model's resolution; it costs ``(2·tiles − 1)²`` passes.
    ``tiles="auto"`` picks 1 or 2 per label by segmenting a few supports from the others
    (:func:`incontext.tiling.choose_tiles`), ``"auto3"`` 1, 2 or 3; ``Segmentation.tiles``
    says what was used. The default (None) is ``"auto"`` when the support images are at
    least twice the model's resolution (shorter side, median) and 1 otherwise
    (:func:`incontext.tiling.default_tiles`).
    ``threshold="auto"`` (the default) picks the foreground cut per label the same way, from
    :data:`incontext.calibration.THRESHOLD_GRID` (jointly with the tiling when both are
    auto); thin structures often need a cut below 0.5; with fewer than 3 labelled
    supports it stays 0.5. A number fixes the cut. ``Segmentation.thresholds`` says which.
    ``tta`` (1, 2, 4 or 8) averages every prediction over that many flipped and rotated
    copies of the whole task (:mod:`incontext.tta`), at ``tta`` times the cost.
    ``colour`` renders (H, W, 3) colour images to grey: ``"luma"``, ``"red"``, ``"green"``,
    ``"blue"``, ``"fisher"`` (the support set's foreground/background channel mix), or
    ``"auto"`` (the default): chosen per label by segmenting supports from the others
    (:mod:`incontext.colour`; luma unless another rendering does better on the supports);
    ``Segmentation.colours`` says which. Grey images are unaffected.
    ``nearest`` = k runs each query with only the k supports of its support set that look
    most like it (:mod:`incontext.support_selection`; also in the support-set checks),
    chosen among all the supports unless ``support_size`` is given. The default (None or
    ``"default"``) is k = 16 when a pass would have more than 16 supports, with one
    ensemble member (more members keep their random subsets); ``"off"`` uses all the
    supports (at most 64 per pass). With a large support set the 16 nearest were more
    accurate than all 64 on the training pool, at a third of the time (docs/segment.md).
    ``support_flips``: ``"on"`` adds left-right, up-down and both-ways flipped copies of
    every support (4× the support entries), ``"auto"`` only for labels where they segment
    held-out supports better, checked after the cut, tiling and rendering are chosen
    (:mod:`incontext.support_flips`); ``"off"`` never. The default (None or ``"default"``)
    is ``"auto"`` with 1 to 4 supports per pass, ``"off"`` with more or with ``nearest``
    (:func:`incontext.support_flips.default_support_flips`). ``Segmentation.flips`` says
    which.
    ``refine``: ``"on"`` passes the model's probabilities through a small per-pixel head
    fitted on the supports (each segmented from the others) with local image filters
    (:mod:`incontext.refine`; the model's weights are unchanged), ``"auto"`` only for labels
    where the head beats the model on the supports (2-fold cross-validation), ``"off"``
    never. The default (None or ``"default"``) is :func:`incontext.refine.default_refine`.
    ``Segmentation.refined`` says where it was used.
    ``reuse``: a dict owned by the caller that keeps each label's choices (tiles, cut,
    rendering; under the label value) and the preprocessed supports
    (:mod:`incontext.support_cache`); pass the same dict to later calls with the **same
    supports and settings** (e.g. one call per query file) and the support-set checks and
    preprocessing run only once (the supports are prepared again when their fingerprint
    differs). The choices depend on the supports alone, so the results are the same as
    without it.
    Returns one :class:`Segmentation` per query (a single one for a single 2D query).
    """
    if ensemble < 1:
        raise SupportSetError(f"ensemble must be >= 1, got {ensemble}")
    if batch_size is not None and batch_size < 1:
        raise SupportSetError(f"batch_size must be >= 1, got {batch_size}")
    try:
        if tiles is not None:
            check_tiles(tiles)
    except ValueError as exc:
        raise SupportSetError(str(exc)) from None
    auto_threshold = threshold == "auto"
    if not auto_threshold and not (isinstance(threshold, (int, float))
                                   and 0.0 < threshold < 1.0):
        raise SupportSetError(f"threshold must be in (0, 1) or 'auto', got {threshold!r}")
    try:
        check_tta(tta)
        check_colour(colour)
        check_nearest(nearest)
        if support_flips is not None:
            check_support_flips(support_flips)
        if refine is not None:
            check_refine(refine)
    except ValueError as exc:
        raise SupportSetError(str(exc)) from None
    # the cut on the returned probabilities: auto cuts are rescaled to sit at 0.5
    base_cut = 0.5 if auto_threshold else float(threshold)
    single = isinstance(query, (np.ndarray, torch.Tensor)) and _is_single_image(_to_numpy(query))
    queries = _as_image_list(query, "query")
    s_images = _as_image_list(support_images, "support_images")
    s_labels = _as_image_list(support_labels, "support_labels")
    if not s_images:
        raise SupportSetError("the support set is empty: give at least one (image, label) pair")
    if not queries:
        raise SupportSetError("no query images given")
    if len(s_images) != len(s_labels):
        raise SupportSetError(f"{len(s_images)} support images but {len(s_labels)} support labels")
    for i, q in enumerate(queries):
        if q.ndim not in (2, 3):
            raise SupportSetError(f"query {i}: expected a 2D image, got shape {q.shape}")

    resolution = _model_resolution(model)
    if tiles is None:  # the default: tiles only where the images hold more than the model sees
        tiles = default_tiles([im.shape for im in s_images], resolution)
    options = tile_options(tiles)
    sizes = {g: tiled_size(resolution, g) for g in options}  # working sizes
    size = sizes[max(options)]
    use_colour = colour != DEFAULT_COLOUR and any(
        colour_channels(im) is not None for im in (*queries, *s_images))
    wanted_arg = None if labels is None else tuple(int(v) for v in labels)
    key = None if reuse is None else fingerprint(
        reuse, s_images, s_labels, (sizes, modality, _window_key(window), supports_normalized,
                                    use_colour, wanted_arg))
    prepared = cached(reuse, key)
    if prepared is None:  # check, normalise and resize the supports (kept for the next call)
        prepared = _prepare_supports(s_images, s_labels, sizes, modality, window,
                                     supports_normalized, use_colour, wanted_arg, key or "")
        keep(reuse, prepared)
    present = prepared.present
    wanted = list(wanted_arg) if wanted_arg is not None else present
    s_by = prepared.grey
    q_by = {g: torch.from_numpy(_prepare_images(queries, sizes[g], "query", modality, window))
            for g in options}
    if use_colour:
        rgb_q = {g: _prepare_colour(queries, sizes[g], "query", modality, window)
                 for g in options}
        rgb_s = prepared.colour
    pool = len(s_images)
    if ensemble > 1 and (nearest is None or nearest == "default"):
        nearest = "off"  # each member keeps its own random subset
    nearest = resolve_nearest(nearest, min(support_size or pool, pool))
    if nearest is not None and support_size is None:  # the nearest K among all the supports
        k = pool
    else:
        k = min(support_size or DEFAULT_SUPPORT_SIZE, pool)
    subsets = draw_support_subsets(pool, k, ensemble, seed)
    support_flips = resolve_support_flips(support_flips, k, nearest)  # None: the default
    refine = resolve_refine(refine, k)

    # the support checks repeat calls, so remember them; a call whose every label reuses
    # earlier choices runs no checks and would only pay for the keys
    checks = reuse is None or any(reuse.get(v) is None for v in wanted if v in present)
    run = TiledRunner(lambda a, b, c: predict_probabilities(model, a, b, c, batch_size=batch_size,
                                                            tta=tta), resolution,
                      nearest=nearest, memo=checks)

    n_lab = len(wanted)
    n_q = len(queries)
    member_probs = torch.zeros((ensemble, n_lab, n_q, size, size))
    chosen: list[int] = []
    cuts: list[float] = []
    colours: list[str] = []
    flips: list[bool] = []
    refined: list[bool] = []
    estimates: list[tuple[float | None, int]] = []  # leave-one-out Dice on supports, checks
    was_training = model.training
    model.eval()
    try:
        for li, value in enumerate(wanted):
            if value not in present:
                chosen.append(options[0])
                cuts.append(base_cut)
                colours.append(DEFAULT_COLOUR)
                flips.append(False)
                refined.append(False)
                estimates.append((None, 0))
                continue  # probability stays 0
            soft = prepared.soft[value]
            g_lab = options[0]
            t_lab = base_cut
            first = torch.from_numpy(subsets[0])
            big = max(options)
            known = None if reuse is None else reuse.get(value)
            s_use, q_use, name, cal = s_by, q_by, DEFAULT_COLOUR, None
            if use_colour:  # grey renderings of this label's task, the best one on the supports
                names = (known[2],) if known is not None else candidates(colour)
                rend = {g: rendered_supports(prepared, value, g, names, rgb_s[g], soft[g])
                        for g in options}  # kept with the supports for the next call
                names = [n for n in rend[big] if all(n in rend[g] for g in options)]
                if names:
                    s_rend = {n: {g: torch.from_numpy(rend[g][n][0]) for g in options}
                              for n in names}
                    name = names[0]
                    if known is None:
                        name, cal = _pick_rendering(
                            run, names, s_rend, soft, first, options,
                            THRESHOLD_GRID if auto_threshold else (base_cut,), seed)
                    s_use = s_rend[name]
                    q_use = {g: torch.from_numpy(render_query(
                        name, rend[g][name][1], q_by[g].numpy(), rgb_q[g])) for g in options}
            estimate: tuple[float | None, int] = (None, 0)
            if known is not None:  # chosen by an earlier call with the same supports
                g_lab, t_lab, estimate = int(known[0]), float(known[1]), known[3]
            elif auto_threshold:  # tiling and cut that best segment the supports
                if cal is None:
                    cal = support_calibration(run.resized, s_use[big][first], soft[big][first],
                                              options, THRESHOLD_GRID, seed=seed)
                g_lab, t_lab = cal.tiles, cal.threshold
            elif len(options) > 1:  # tiles "auto": the tiling that best segments the supports
                cal = tile_calibration(run.resized, s_use[big][first], soft[big][first],
                                       options, seed=seed, threshold=base_cut)
                g_lab = cal.tiles
            if cal is not None and (g_lab, t_lab) in cal.scores:
                estimate = (cal.scores[(g_lab, t_lab)], cal.checks)
            use_flips = support_flips == "on"
            if known is not None:
                use_flips = bool(known[4])
            elif support_flips == "auto":  # flipped copies, where they help on the supports
                check = choose_support_flips(
                    lambda a, b, c, g=g_lab: run(g, a, b, c), s_use[g_lab][first],
                    soft[g_lab][first], t_lab, seed)
                use_flips = check.use
                if use_flips and check.flipped is not None:  # the estimate of what is used
                    estimate = (check.flipped, check.checks)
            head = None
            rgb_lab = None if not use_colour else rgb_s[g_lab][subsets[0]]
            if known is not None:
                head = known[5]
            elif refine != "off":  # a pixel head on the model's output, where it helps
                def flipped_run(a, b, c, g=g_lab, f=use_flips):
                    return run(g, a, flipped_copies(b), flipped_copies(c)) if f else run(g, a, b, c)
                check = choose_refine(flipped_run, s_use[g_lab][first], soft[g_lab][first],
                                      rgb_lab, t_lab, seed, refine,
                                      head_cuts=THRESHOLD_GRID if auto_threshold else (0.5,))
                head = check.head
                if head is not None:
                    t_lab = check.cut
                    if check.fitted is not None:
                        estimate = (check.fitted, check.supports)
            if reuse is not None:
                reuse[value] = (g_lab, t_lab, name, estimate, use_flips, head)
            chosen.append(g_lab)
            cuts.append(t_lab)
            colours.append(name)
            flips.append(use_flips)
            refined.append(head is not None)
            estimates.append(estimate)
            first_member: dict[bytes, int] = {}  # equal subsets (e.g. the whole pool) run once
            for m, subset in enumerate(subsets):
                seen = first_member.setdefault(subset.tobytes(), m)
                if seen != m:
                    member_probs[m, li] = member_probs[seen, li]
                    continue
                idx = torch.from_numpy(subset)
                s_img, s_lab = s_use[g_lab][idx], soft[g_lab][idx]
                if use_flips:
                    s_img, s_lab = flipped_copies(s_img), flipped_copies(s_lab)
                prob = run(g_lab, q_use[g_lab], s_img, s_lab)
                if head is not None:  # the head's probabilities, cut at its own cut
                    prob = torch.from_numpy(refine_probabilities(
                        head, q_use[g_lab].numpy(), prob.clamp(0, 1).numpy(),
                        None if rgb_lab is None else rgb_q[g_lab]))
                    if not auto_threshold:  # the head's 0.5 moved to the fixed cut
                        prob = rescale_from_half(prob, base_cut)
                if auto_threshold:
                    prob = rescale_to_threshold(prob.clamp(0, 1), t_lab)
                member_probs[m, li] = resize_stack(prob, size)
    finally:
        model.train(was_training)

    mean = member_probs.mean(dim=0)  # (L,Q,s,s)
    std = (member_probs - mean).square().mean(dim=0).sqrt()
    results = []
    for qi, q in enumerate(queries):
        shape = q.shape[:2]
        prob = resize_probabilities(mean[:, qi], shape).numpy()
        unc = resize_probabilities(std[:, qi], shape).numpy()
        mask = label_map(prob, wanted, base_cut)
        results.append(Segmentation(mask=mask, probabilities=prob.astype(np.float32),
                                    uncertainty=unc.astype(np.float32), labels=list(wanted),
                                    tiles=list(chosen), thresholds=list(cuts),
                                    colours=list(colours),
                                    support_dice=[e[0] for e in estimates],
                                    support_checks=[e[1] for e in estimates],
                                    methods=["model"] * n_lab, flips=list(flips),
                                    refined=list(refined),
                                    nearest=nearest if nearest is not None and nearest < k
                                    else None))
    return results[0] if single else results


def label_map(prob: np.ndarray, labels: Sequence[int], cut: float) -> np.ndarray:
    """(L, ...) per-label probabilities -> label map: the most probable label where its
    probability reaches ``cut``, else 0; the smallest integer dtype holding ``labels``."""
    mask = np.zeros(prob.shape[1:], dtype=np.int64)
    if len(labels):
        best = prob.argmax(axis=0)
        fg = prob.max(axis=0) >= cut
        mask[fg] = np.asarray(labels)[best[fg]]
    return mask.astype(_label_dtype(labels))


def _label_dtype(values: Sequence[int]) -> np.dtype:
    top = max(values, default=0)
    lo = min(values, default=0)
    if lo >= 0 and top <= 255:
        return np.dtype(np.uint8)
    if lo >= -32768 and top <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)
