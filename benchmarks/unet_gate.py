"""Experiment: let the supports choose between the model and a U-Net trained on them.

On the held-out datasets a U-Net trained per task on the N supports (``supervised-unet``,
100 steps) beats the in-context model on thin vessels and polyps, and loses on WBC. A
per-task choice between the two, made on the supports alone, would train only where the
supports say it pays. This script measures such a gate on a training pool: for each task
and draw (supports from the train split, queries from ``--query-split``) the supports are
cut into ``--folds`` parts; the model (grey luma, whole image, cut chosen on the supports as
``support_calibration`` does) and a U-Net trained on the other parts each segment every
part, and both segment the queries from all supports. Scores:

* ``model``, ``unet``: each alone;
* ``gate@m``: the U-Net replaces the model when its cross-validated support Dice beats the
  model's by more than m;
* ``oracle``: the better of the two on the queries (an upper bound, not a method).

Run it on training-pool indexes only, on the val split (choices are tuned there):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/unet_gate.py $I --query-split val

Prints a table (Dice x 100 per dataset) and writes results/unet_gate.json.
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
from pool_tasks import add_task_options, dataset_table, pool_tasks, write_json  # noqa: E402

MARGINS = (0.0, 0.03, 0.05, 0.1)


def fold_parts(n: int, folds: int, seed: int) -> list:
    """``folds`` disjoint, non-empty index arrays covering range(n) (seeded order)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    return [p for p in np.array_split(order, min(folds, n)) if p.size]


def run_task(model, unet, task, support_size: int, repeats: int, folds: int) -> list[dict]:
    import numpy as np
    import torch

    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import THRESHOLD_GRID, dice_at, support_calibration
    from incontext.inference import predict_probabilities

    def run_model(q, si, sl):
        with torch.inference_mode():  # not around the U-Net: it trains
            return predict_probabilities(model, q, si, sl).clamp(0, 1)

    def run_unet(q, si, sl, seed):
        return torch.from_numpy(unet.predict(si.numpy(), sl.numpy(), q.numpy(), seed=seed))

    q = torch.from_numpy(task.query_images)
    q_true = torch.from_numpy(task.query_labels)
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        si = torch.from_numpy(task.pool_images[draw.indices])
        sl = torch.from_numpy(task.pool_labels[draw.indices])
        if si.shape[0] < 2 or not bool((sl >= 0.5).any()):
            continue
        cal = support_calibration(lambda g, a, b, c: run_model(a, b, c), si, sl, (1,),
                                  THRESHOLD_GRID, seed=draw.seed)
        held = {"model": [], "unet": []}
        for part in fold_parts(si.shape[0], folds, draw.seed):
            rest = torch.from_numpy(np.setdiff1d(np.arange(si.shape[0]), part))
            part = torch.from_numpy(part)
            held["model"].append(dice_at(run_model(si[part], si[rest], sl[rest]), sl[part],
                                         cal.threshold))
            held["unet"].append(dice_at(run_unet(si[part], si[rest], sl[rest], draw.seed),
                                        sl[part]))
        support = {k: float(np.concatenate(v).mean()) for k, v in held.items()}
        query = {"model": float(dice_at(run_model(q, si, sl), q_true, cal.threshold).mean()),
                 "unet": float(dice_at(run_unet(q, si, sl, draw.seed), q_true).mean())}
        rows.append({"draw": draw.repeat, "support": support, "query": query})
    return rows


def gate(row: dict, margin: float) -> str:
    """``unet`` when its cross-validated support Dice beats the model's by > margin."""
    return "unet" if row["support"]["unet"] - row["support"]["model"] > margin else "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_task_options(parser, RESULTS / "unet_gate.json")
    parser.add_argument("--model", default=None, help="registry name or weights (default model)")
    parser.add_argument("--folds", type=int, default=4, help="support folds (default 4)")
    parser.add_argument("--unet-steps", type=int, default=100,
                        help="supervised-unet training steps (default 100, as the model card)")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error("--folds must be at least 2")

    import numpy as np

    import incontext
    from incontext.baselines import get_baseline

    model = incontext.load_model(args.model) if args.model else incontext.load_model()
    model.eval()
    unet = get_baseline("supervised-unet", steps=args.unet_steps)
    results: dict[str, dict] = {}
    for name, task in pool_tasks(args):
        start = time.perf_counter()
        rows = run_task(model, unet, task, args.support_size, args.repeats, args.folds)
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
                           "unet_steps": args.unet_steps, "query_split": args.query_split,
                           "model": args.model or "default", "mean": mean,
                           "datasets": by_dataset, "tasks": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
