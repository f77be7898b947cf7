"""Experiment: let the supports choose between the model and a U-Net trained on them.

On the held-out datasets a U-Net trained per task on the N supports (``supervised-unet``,
100 steps) beats the in-context model on thin vessels and polyps, and loses on WBC. A
per-task choice between the two, made on the supports alone, would train only where the
supports say it pays (now ``incontext segment --hand-over``, :mod:`incontext.hand_over`,
whose margin, 0.03, was chosen here). This script measures such a gate on a training pool:
for each task
and draw (supports from the train split, queries from ``--query-split``) the supports are
cut into ``--folds`` parts; the model (``incontext.segment``'s defaults: cut and colour
rendering chosen on the supports) and a U-Net trained on the other parts (grey, as the
``supervised-unet`` baseline) each segment every part, and both segment the queries from
all supports. Scores:

* ``model``, ``unet``: each alone;
* ``gate@m``: the U-Net replaces the model when its cross-validated support Dice beats the
  model's by more than m;
* ``oracle``: the better of the two on the queries (an upper bound, not a method).

Run it on training-pool indexes only, on the val split (choices are tuned there):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/unet_gate.py $I --query-split val

Prints a table (Dice x 100 per dataset) and writes results/unet_gate.json. The U-Net
trainings dominate the time (about 5 min per task on 1 thread); ``--unet-from JSON`` takes
the U-Net's scores from an earlier run with the same draws, folds and steps instead.
``--fixed-choices`` keeps the model's cut, tiling and rendering chosen on all the supports in
its folds (cheaper; tried in session 19 and not adopted by ``segment --hand-over``, which
chooses again in every fold: MODEL_CARD.md; results/unet_gate-fixed.json);
``--unet-size S`` trains and runs the U-Net on images resized to S px (e.g. 128 on 256-px
indexes, to compare U-Net working sizes). ``--no-prior-bias`` trains the U-Net as before
session 20 (results/unet_gate.json, -fixed, -luma, unet_gate256-*: that recipe;
results/unet_gate-prior.json: the current one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pool_tasks import add_task_options, as_images, dataset_table, pool_tasks, write_json  # noqa: E402

from incontext.hand_over import fold_parts, prefers_unet  # noqa: E402

MARGINS = (0.0, 0.03, 0.05, 0.1)


def run_task(model, unet, task, support_size: int, repeats: int, folds: int,
             unet_rows: dict[int, dict] | None = None, fixed: bool = False,
             unet_size: int | None = None) -> list[dict]:
    """One row per draw: the support (cross-validated) and query Dice of the model and the
    U-Net; ``unet_rows`` (draw -> an earlier row) supplies the U-Net's instead of training.
    ``fixed``: the model's folds use the tiling, cut and rendering it chose on all the
    supports instead of choosing again from each fold's rest. ``unet_size``: the U-Net trains
    and predicts on images resized to that side (probabilities resized back) instead of the
    index's own size."""
    import numpy as np
    import torch

    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import dice_at
    from incontext.inference import segment
    from incontext.metrics import dice
    from incontext.tiling import resize_stack

    def model_dice(queries, truth, supports, labels, seed, **options) -> np.ndarray:
        with torch.inference_mode():
            # refine off: the model as it was when this gate was measured (before session 26)
            result = segment(model, queries, supports, labels, seed=seed, refine="off",
                             **options)
        return np.atleast_1d(dice(np.stack([r.mask > 0 for r in result]), truth >= 0.5))

    def full_choices(queries, supports, labels, seed) -> dict:
        """The tiling, cut and rendering segment() chooses on all the supports."""
        with torch.inference_mode():
            first = segment(model, queries[:1], supports, labels, seed=seed, refine="off")[0]
        return {"tiles": first.tiles[0], "threshold": first.thresholds[0],
                "colour": first.colours[0]}

    def resized(x: np.ndarray) -> np.ndarray:  # (N, H, W) at the U-Net's size
        return resize_stack(torch.from_numpy(x), unet_size).numpy()

    def unet_dice(q, truth, si, sl, seed) -> np.ndarray:
        if unet_size is None or unet_size == q.shape[-1]:
            prob = unet.predict(si, sl, q, seed=seed)
        else:
            prob = unet.predict(resized(si), (resized(sl) >= 0.5).astype(np.float32),
                                resized(q), seed=seed)
        prob = resize_stack(torch.from_numpy(prob), q.shape[-2:])
        return dice_at(prob, torch.from_numpy(truth))

    n_q = len(task.query_images)
    queries = as_images(task.query_images, task.query_colour, range(n_q))
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        idx = np.asarray(draw.indices)
        si, sl = task.pool_images[idx], task.pool_labels[idx]
        if len(idx) < 2 or not (sl >= 0.5).any():
            continue
        images = as_images(task.pool_images, task.pool_colour, idx)
        labels = [lab.astype(np.uint8) for lab in sl]
        held: dict[str, list] = {"model": [], "unet": []}
        options = full_choices(queries, images, labels, draw.seed) if fixed else {}
        model_check_s = 0.0
        for part in fold_parts(len(idx), folds, draw.seed):
            rest = np.setdiff1d(np.arange(len(idx)), part)
            start = time.perf_counter()
            held["model"].append(model_dice([images[i] for i in part], sl[part],
                                            [images[i] for i in rest],
                                            [labels[i] for i in rest], draw.seed, **options))
            model_check_s += time.perf_counter() - start
            if unet_rows is None:
                held["unet"].append(unet_dice(si[part], sl[part], si[rest], sl[rest],
                                              draw.seed))
        support = {"model": float(np.concatenate(held["model"]).mean())}
        query = {"model": float(model_dice(queries, task.query_labels, images, labels,
                                           draw.seed).mean())}
        if unet_rows is None:
            support["unet"] = float(np.concatenate(held["unet"]).mean())
            query["unet"] = float(unet_dice(task.query_images, task.query_labels, si, sl,
                                            draw.seed).mean())
        else:
            support["unet"] = unet_rows[draw.repeat]["support"]["unet"]
            query["unet"] = unet_rows[draw.repeat]["query"]["unet"]
        rows.append({"draw": draw.repeat, "support": support, "query": query,
                     "model_check_s": model_check_s})
    return rows


def gate(row: dict, margin: float) -> str:
    """``unet`` when its cross-validated support Dice beats the model's by > margin."""
    return "unet" if prefers_unet(row["support"]["model"], row["support"]["unet"], margin) \
        else "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_task_options(parser, RESULTS / "unet_gate.json")
    parser.add_argument("--model", default=None, help="registry name or weights (default model)")
    parser.add_argument("--folds", type=int, default=4, help="support folds (default 4)")
    parser.add_argument("--unet-steps", type=int, default=100,
                        help="supervised-unet training steps (default 100, as the model card)")
    parser.add_argument("--unet-from", default=None, metavar="JSON",
                        help="the U-Net's scores from an earlier run of this script (same "
                             "indexes, draws, folds and steps) instead of training")
    parser.add_argument("--unet-size", type=int, default=None,
                        help="train and run the U-Net at this side (default: the index's)")
    parser.add_argument("--no-prior-bias", action="store_true",
                        help="the U-Net recipe before session 20 (output layer from PyTorch's "
                             "default start, not the supports' foreground fraction)")
    parser.add_argument("--fixed-choices", action="store_true",
                        help="the model's folds keep the tiling, cut and rendering chosen on "
                             "all the supports (cheaper) instead of choosing them again")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2")
    earlier = None
    if args.unet_from:
        import json

        earlier = json.loads(Path(args.unet_from).read_text())
        same = {k: earlier.get(k) == getattr(args, k) for k in
                ("support_size", "repeats", "queries_per_task", "folds", "unet_steps",
                 "unet_size", "query_split")}
        same["unet_prior_bias"] = (earlier.get("unet_prior_bias", False)
                                   == (not args.no_prior_bias))
        if not all(same.values()):
            parser.error(f"--unet-from {args.unet_from}: another setup "
                         f"({', '.join(k for k, ok in same.items() if not ok)} differ)")

    import numpy as np

    import incontext
    from incontext.baselines import get_baseline

    model = incontext.load_model(args.model) if args.model else incontext.load_model()
    model.eval()
    unet = get_baseline("supervised-unet", steps=args.unet_steps,
                        prior_bias=not args.no_prior_bias)
    results: dict[str, dict] = {}
    for name, task in pool_tasks(args):
        start = time.perf_counter()
        unet_rows = None
        if earlier is not None:
            if name not in earlier["tasks"]:
                print(f"{name}: not in --unet-from, skipped", flush=True)
                continue
            unet_rows = {r["draw"]: r for r in earlier["tasks"][name]["rows"]}
        rows = run_task(model, unet, task, args.support_size, args.repeats, args.folds,
                        unet_rows, fixed=args.fixed_choices, unet_size=args.unet_size)
        if not rows:
            continue
        scores = {k: float(np.mean([r["query"][k] for r in rows])) for k in ("model", "unet")}
        for m in MARGINS:
            scores[f"gate@{m:g}"] = float(np.mean([r["query"][gate(r, m)] for r in rows]))
        scores["oracle"] = float(np.mean([max(r["query"].values()) for r in rows]))
        results[name] = {"dataset": task.dataset, "rows": rows, "scores": scores}
        cv = " ".join(f"cv[{r['draw']}] {100 * r['support']['model']:.1f}/"
                      f"{100 * r['support']['unet']:.1f}" for r in rows)
        print(f"{name:45s} " + " ".join(f"{v}={100 * x:5.1f}" for v, x in scores.items())
              + f"  {cv}  ({time.perf_counter() - start:.0f} s)", flush=True)
    if not results:
        parser.error("no task matched --tasks")
    by_dataset, mean = dataset_table(results)
    write_json(args.json, {"support_size": args.support_size, "repeats": args.repeats,
                           "queries_per_task": args.queries_per_task, "folds": args.folds,
                           "unet_steps": args.unet_steps, "unet_size": args.unet_size,
                           "unet_prior_bias": not args.no_prior_bias,
                           "query_split": args.query_split,
                           "model": args.model or "default", "model_settings": "segment defaults",
                           "model_checks": "fixed" if args.fixed_choices else "rechosen",
                           "unet_from": args.unet_from, "mean": mean,
                           "datasets": by_dataset, "tasks": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
