"""Experiment: blending whole-image and 2 x 2-tile probabilities, against ``--tiles auto``.

``--tiles auto`` keeps either the whole-image (1) or the 2 x 2-tile (2) probabilities per
task, chosen with the cut by leave-one-out Dice on the supports (``incontext.calibration``).
This script asks whether a weighted mean ``(1 - w) p1 + w p2`` should be a candidate too.
For each task and benchmark draw (``incontext.benchmark.protocol``: supports from the
train split, queries from the test split) it computes, once, the leave-one-out support
probabilities and the query probabilities with 1 and 2 tiles, then scores every variant
from them: fixed 1, fixed 2, fixed w = 0.5, ``auto`` (w in {0, 1}), ``auto+blend``
(w in {0, 0.5, 1}) and ``auto-weights`` (w in {0, 0.25, 0.5, 0.75, 1}); each variant
chooses (w, cut) on the supports the way ``support_calibration`` does (the default
(first w, 0.5) unless another beats it by more than the margin). Grey (luma) input.

Run it on training-pool indexes only (choices are tuned there, never on held-out data):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/tile_blend.py $I \\
        --tasks "jsrt/2d/heart,jsrt/2d/left clavicle,busi/*,ph2/*,hc18/*,drions_od/*,monuseg/*,\\
isbi_em/*,left_atrium_3d/axis0/*,drions_vessels/*"

Prints a table (Dice x 100 per task, mean over tasks) and writes results/tile_blend.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages

VARIANTS: dict[str, tuple[float, ...]] = {  # name -> candidate weights of the 2x2 tiles
    "1": (0.0,), "2": (1.0,), "blend0.5": (0.5,), "auto": (0.0, 1.0),
    "auto+blend": (0.0, 0.5, 1.0), "auto-weights": (0.0, 0.25, 0.5, 0.75, 1.0),
}


def choose(scores: dict[tuple[float, float], float], default: tuple[float, float],
           margin: float) -> tuple[float, float]:
    """The best (w, cut) by leave-one-out Dice; ``default`` unless beaten by > margin."""
    best = max(scores, key=lambda k: round(scores[k], 6))
    return default if scores[best] - scores[default] <= margin else best


def run_task(runner, task, support_size: int, repeats: int) -> dict[str, list[dict]]:
    import torch

    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import (
        DEFAULT_CHECKS,
        DEFAULT_MARGIN,
        THRESHOLD_GRID,
        dice_at,
        leave_one_out,
        leave_one_out_checks,
    )

    out: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    q = torch.from_numpy(task.query_images)
    q_true = torch.from_numpy(task.query_labels)
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        si = torch.from_numpy(task.pool_images[draw.indices])
        sl = torch.from_numpy(task.pool_labels[draw.indices])
        checks = leave_one_out_checks(sl, DEFAULT_CHECKS, draw.seed)
        loo = {g: leave_one_out(lambda a, b, c, g=g: runner.resized(g, a, b, c), si, sl, checks)
               for g in (1, 2)}
        query = {g: runner.resized(g, q, si, sl).clamp(0, 1) for g in (1, 2)}
        targets = sl[checks]
        for name, weights in VARIANTS.items():
            scores = {(w, t): float(dice_at((1 - w) * loo[1] + w * loo[2], targets, t).mean())
                      for w in weights for t in THRESHOLD_GRID}
            w, t = choose(scores, (weights[0], 0.5), DEFAULT_MARGIN)
            d = float(dice_at((1 - w) * query[1] + w * query[2], q_true, t).mean())
            out[name].append({"dice": d, "weight": w, "threshold": t})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", action="append", required=True, help="training-pool index")
    parser.add_argument("--tasks", default=None, help="comma-separated task patterns")
    parser.add_argument("--model", default=None, help="registry name or weights (default model)")
    parser.add_argument("--support-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--queries-per-task", type=int, default=8)
    parser.add_argument("--json", default=str(RESULTS / "tile_blend.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import incontext
    from incontext.benchmark.api import select_tasks
    from incontext.benchmark.protocol import load_task
    from incontext.data import TaskIndex
    from incontext.inference import predict_probabilities
    from incontext.tiling import TiledRunner

    model = incontext.load_model(args.model) if args.model else incontext.load_model()
    model.eval()
    runner = TiledRunner(lambda q, si, sl: predict_probabilities(model, q, si, sl),
                         int(model.config.resolution))
    patterns = args.tasks.split(",") if args.tasks else None
    results: dict[str, dict] = {}
    for path in args.index:
        index = TaskIndex(path)
        for name in select_tasks(index, patterns):
            start = time.perf_counter()
            task = load_task(index, name, queries_per_task=args.queries_per_task)
            with torch.inference_mode():
                results[name] = run_task(runner, task, args.support_size, args.repeats)
            row = {v: 100 * np.mean([d["dice"] for d in r]) for v, r in results[name].items()}
            print(f"{name:45s} " + " ".join(f"{v}={x:5.1f}" for v, x in row.items())
                  + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if not results:
        parser.error("no task matched --tasks")
    mean = {v: 100 * float(np.mean([np.mean([d["dice"] for d in r[v]])
                                    for r in results.values()])) for v in VARIANTS}
    print("mean over tasks: " + ", ".join(f"{v} {x:.2f}" for v, x in mean.items()))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.json).with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"support_size": args.support_size, "repeats": args.repeats,
                               "queries_per_task": args.queries_per_task,
                               "model": args.model or "default", "mean": mean,
                               "tasks": results}, indent=1))
    tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
