"""Experiment: variants of the pixel head (``segment --refine``) and a post-processing choice.

For each task and draw (supports from the train split, queries from ``--query-split``) the
model (grey luma, whole image, cut chosen on the supports as ``support_calibration`` does)
segments every support from the others and the queries from all the supports, as in
``refine_gate.py``. Each head variant is fitted on the supports' leave-one-out
probabilities, 2-fold cross-validated on them (the cut: the best of the grid on those
predictions) and refitted on all of them:

* ``base``: the shipped head (:mod:`incontext.refine`);
* ``scales``: plus the coarser filters of ``pixel_features(coarse=True)`` (grey smoothed
  at 8 px, Hessian eigenvalues at 6 px, R, G, B smoothed at 6 px, the logit smoothed at 6
  and 12 px), for large structures;
* ``wide``: 64 hidden units per layer and 600 steps instead of 32 and 300;
* ``deep``: plus the model's last-layer query features (the 32 channels before its 1x1
  output convolution), captured with a forward hook.

Each is scored ``<variant>`` (the head where its 2-fold Dice beats the model's
leave-one-out Dice, as ``--refine auto``) and ``<variant>-always`` (the head everywhere).
``pick`` (with ``base`` and ``scales`` both run) uses, per task draw, whichever of the two
heads has the higher 2-fold Dice, where that beats the model's leave-one-out Dice (session
28: tried as ``segment``'s default from 4 supports, not adopted; docs/segment.md).
``base+post`` then applies to ``base``'s masks the post-processing (none, largest
component, fill holes, both; ``segment --largest-component / --fill-holes``) that best
segments the supports' cross-validated masks. ``base+self-app`` / ``base+self-coarse``
refine ``base``'s output on each image from that image's own pixels (:func:`self_refine`, a
GrabCut-like appearance head; session 32: tried, not adopted; docs/segment.md), where that
raises the supports' cross-validated Dice. No query label is used by any choice.

Run it on training-pool indexes only, on the val split (choices are tuned there):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/refine_variants.py $I --query-split val

``--variants base,scales`` runs a subset (about half the time). Prints a table (Dice x 100
per dataset) and writes results/refine_variants.json. 50-90 s per task at N = 16 with 2
draws on 1 thread (about 20 minutes for the command above).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pool_tasks import (  # noqa: E402
    load_eval_model,
    model_task_parser,
    run_scored_tasks,
)

VARIANTS = {"base": {}, "scales": {"scales": True}, "wide": {"hidden": 64, "steps": 600},
            "deep": {"deep": True}}
POST = ("none", "largest", "fill", "largest+fill")
SELF = ("none", "app", "coarse")  # base+self: see self_refine
SELF_WEIGHT = 0.25  # of the appearance head's logit, added to the base logit
SELF_STEPS = 150


def self_refine(image, prob, cut: float, colour, name: str):
    """``prob`` (H, W) refined from its own image: an appearance head (the pixel head's image
    filters, without the probability; ``coarse``: plus the logit smoothed at 4 px) fitted on
    the pixels sure to be inside (the mask at ``cut`` eroded by 2 px) and outside (farther
    than 4 px from it), its logit clipped at ±3.9 and added with weight
    :data:`SELF_WEIGHT` to the logit of ``prob``. ``prob`` unchanged for ``none`` and where
    either side has under 20 pixels."""
    import numpy as np
    from scipy import ndimage

    from incontext.refine import fit_pixel_head, pixel_features

    if name == "none":
        return prob
    mask = prob >= cut
    inside = ndimage.binary_erosion(mask, iterations=2)
    outside = ~ndimage.binary_dilation(mask, iterations=4)
    if inside.sum() < 20 or outside.sum() < 20:
        return prob
    p = np.clip(prob, 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p))
    feats = pixel_features(image, None, colour)
    if name == "coarse":
        feats = np.concatenate([feats, ndimage.gaussian_filter(logit, 4.0).reshape(-1, 1)], 1)
    keep = (inside | outside).reshape(-1)
    head = fit_pixel_head(feats[keep], inside.reshape(-1)[keep].astype(np.float32), 0,
                          steps=SELF_STEPS)
    a = np.clip(head.predict(feats).reshape(prob.shape), 0.02, 0.98)
    return 1 / (1 + np.exp(-(logit + SELF_WEIGHT * np.log(a / (1 - a)))))


def image_features(images, probs, colour, deep, variant: dict) -> list:
    """Per image (P, F) features of ``variant`` (``deep``: (K, P, 32) last-layer features)."""
    import numpy as np

    from incontext.refine import pixel_features

    out = []
    for i in range(images.shape[0]):
        c = None if colour is None else colour[i]
        parts = [pixel_features(images[i], probs[i], c, coarse=bool(variant.get("scales")))]
        if variant.get("deep"):
            parts.append(deep[i])
        out.append(np.concatenate(parts, 1))
    return out


def post_process(mask, name: str):
    """``mask`` (H, W) bool after one of :data:`POST`."""
    import numpy as np

    from incontext.postprocess import postprocess

    if name == "none":
        return mask
    return postprocess(mask.astype(np.uint8), largest_component="largest" in name,
                       fill="fill" in name) > 0


def mean_dice(masks, truths) -> float:
    import numpy as np

    from incontext.metrics import dice

    return float(np.mean([dice(m, t) for m, t in zip(masks, truths, strict=True)]))


def fit_head(feats, targets, seed: int, variant: dict):
    """:func:`incontext.refine.fit_pixel_head` with the variant's width and steps."""
    import incontext.refine as refine

    width = refine.HEAD_HIDDEN
    refine.HEAD_HIDDEN = variant.get("hidden", width)
    try:
        return refine.fit_pixel_head(feats, targets, seed, steps=variant.get("steps", 300))
    finally:
        refine.HEAD_HIDDEN = width


def run_task(model, task, support_size: int, repeats: int,
             variants: tuple[str, ...] = tuple(VARIANTS)) -> list[dict]:
    """One row per draw: query Dice of the model, of each variant gated and always on, and
    of ``base`` with each post-processing, with the supports' cross-validated Dice."""
    import numpy as np
    import torch

    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import THRESHOLD_GRID, support_calibration
    from incontext.inference import predict_probabilities

    captured: list[np.ndarray] = []  # last-layer query features, one (B·H·W, C) per batch

    def keep(module, inputs, output):
        x = inputs[0].detach().float()
        captured.append(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).numpy())

    def run(q, si, sl):
        return predict_probabilities(model, q, si, sl).clamp(0, 1)

    hook = model.out_conv.register_forward_hook(keep)
    try:
        rows = []
        truth_q = task.query_labels >= 0.5
        for draw in support_draws(task.name, task.pool_size, support_size, repeats):
            si = torch.from_numpy(task.pool_images[draw.indices])
            sl = torch.from_numpy(task.pool_labels[draw.indices])
            n, shape = si.shape[0], tuple(si.shape[1:])
            cal = support_calibration(lambda g, a, b, c: run(a, b, c), si, sl, (1,),
                                      THRESHOLD_GRID, seed=draw.seed)
            captured.clear()
            prob_q = run(torch.from_numpy(task.query_images), si, sl).numpy()
            deep_q = np.concatenate(captured).reshape(len(prob_q), -1, captured[0].shape[1])
            captured.clear()
            rest = [[j for j in range(n) if j != i] for i in range(n)]
            loo = torch.stack([run(si[i:i + 1], si[rest[i]], sl[rest[i]])[0]
                               for i in range(n)]).numpy()
            deep_s = np.concatenate(captured).reshape(n, -1, captured[0].shape[1])
            colour = None if task.pool_colour is None else task.pool_colour[draw.indices]
            truth = sl.numpy() >= 0.5
            model_loo = mean_dice(loo >= cal.threshold, truth)
            model_q = mean_dice(prob_q >= cal.threshold, truth_q)
            fold = np.arange(n) % 2
            row = {"draw": draw.repeat, "model": model_q, "model_loo": model_loo}
            for name in variants:
                variant = VARIANTS[name]
                fs = image_features(si.numpy(), loo, colour, deep_s, variant)
                fq = image_features(task.query_images, prob_q, task.query_colour, deep_q,
                                    variant)
                targets = truth.reshape(n, -1).astype(np.float32)
                held = np.zeros(truth.shape, np.float32)
                for f in (0, 1):
                    train = np.flatnonzero(fold != f)
                    head = fit_head(np.concatenate([fs[i] for i in train]),
                                    targets[train].reshape(-1), draw.seed, variant)
                    for i in np.flatnonzero(fold == f):
                        held[i] = head.predict(fs[i]).reshape(shape)
                cv = {t: mean_dice(held >= t, truth) for t in THRESHOLD_GRID}
                cut = max(cv, key=lambda t: (round(cv[t], 6), -abs(t - 0.5)))
                head = fit_head(np.concatenate(fs), targets.reshape(-1), draw.seed, variant)
                probs_q = np.stack([head.predict(f).reshape(shape) for f in fq])
                masks_q = probs_q >= cut
                use = cv[cut] > model_loo
                row[f"{name}_cv"] = cv[cut]
                row[f"{name}-always"] = mean_dice(masks_q, truth_q)
                row[name] = row[f"{name}-always"] if use else model_q
                if name == "base":  # post-processing chosen on the supports' masks
                    masks_s = held >= cut if use else loo >= cal.threshold
                    masks_q = masks_q if use else prob_q >= cal.threshold
                    row["post_supports"] = {p: mean_dice([post_process(m, p) for m in masks_s],
                                                         truth) for p in POST}
                    row["post_queries"] = {p: mean_dice([post_process(m, p) for m in masks_q],
                                                        truth_q) for p in POST}
                    row["self_supports"], row["self_queries"] = self_scores(
                        (si.numpy(), held if use else loo, colour, truth),
                        (task.query_images, probs_q if use else prob_q, task.query_colour,
                         truth_q), cut if use else cal.threshold)
            rows.append(row)
        return rows
    finally:
        hook.remove()


def self_scores(supports: tuple, queries: tuple, cut: float) -> tuple[dict, dict]:
    """Mean Dice at ``cut`` of the supports' and the queries' probabilities after each of
    :data:`SELF`; each tuple: (images, probabilities, colour or None, truth)."""
    out = []
    for images, probs, colour, truth in (supports, queries):
        out.append({name: mean_dice([self_refine(images[i], probs[i], cut,
                                                 None if colour is None else colour[i], name)
                                     >= cut for i in range(len(probs))], truth)
                    for name in SELF})
    return out[0], out[1]


def scores_of(row: dict) -> dict[str, float]:
    """Every scored variant of one row (see the module docstring)."""
    out = {k: v for k, v in row.items()
           if isinstance(v, float) and k != "model_loo" and not k.endswith("_cv")}
    if "base_cv" in row and "scales_cv" in row:
        best = "scales" if row["scales_cv"] > row["base_cv"] else "base"
        out["pick"] = (row[f"{best}-always"] if row[f"{best}_cv"] > row["model_loo"]
                       else row["model"])
    sup = row["post_supports"]
    best = max(POST, key=lambda p: (round(sup[p], 6), p == "none"))
    out["base+post"] = row["post_queries"][best if sup[best] > sup["none"] else "none"]
    if "self_supports" in row:
        sup, query = row["self_supports"], row["self_queries"]
        for name in SELF[1:]:
            out[f"base+self-{name}"] = query[name if sup[name] > sup["none"] else "none"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = model_task_parser(__doc__, RESULTS / "refine_variants.json")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated heads to run (base must be one)")
    args = parser.parse_args(argv)
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "base" not in variants:
        parser.error(f"--variants: base plus any of {', '.join(VARIANTS)}; got {args.variants}")
    model = load_eval_model(args.model)
    run_scored_tasks(args, parser, lambda task: run_task(model, task, args.support_size,
                                                         args.repeats, variants),
                     scores_of, lambda k: not k.endswith("-always"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
