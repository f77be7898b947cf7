"""Experiment: let the supports choose between the model and a classic training-free method.

The in-context model loses to a grey-level ``threshold`` on some tasks it was never trained
for (endoscopic polyps), and to copying the nearest support's label on registered anatomy
(the offline demo). Both alternatives need no training, so a per-task choice among them,
made the way ``--threshold auto`` is made (leave-one-out Dice on the supports, no query
label), is still in-context segmentation. This script measures whether such a gate helps
or costs: for each task and benchmark draw (supports from the train split, queries from
``--query-split``) it computes once the leave-one-out support predictions and the query
predictions of the model (grey luma, whole image, cut chosen on the supports as
``support_calibration`` does), ``threshold`` and ``nearest-support``, then scores:

* ``model``: the model alone;
* ``gate-thr``: the alternative ``threshold`` replaces the model when its leave-one-out
  Dice beats the model's by more than the margin;
* ``gate-all``: the same with ``threshold`` and ``nearest-support``;
* ``oracle``: the best of the three on the queries (an upper bound, not a method).

Run it on training-pool indexes only, on the val split (choices are tuned there):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/method_gate.py $I --query-split val

Prints a table (Dice x 100 per task) and writes results/method_gate.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pool_tasks import (  # noqa: E402
    load_eval_model,
    model_task_parser,
    pool_tasks,
    write_task_table,
)

MARGINS = (0.0, 0.03, 0.05, 0.1)


def run_task(model, task, support_size: int, repeats: int) -> list[dict]:
    import torch

    from incontext.baselines import NearestSupport, Threshold
    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import (
        DEFAULT_CHECKS,
        THRESHOLD_GRID,
        dice_at,
        leave_one_out,
        leave_one_out_checks,
        support_calibration,
    )
    from incontext.inference import predict_probabilities

    def run(q, si, sl):
        return predict_probabilities(model, q, si, sl)

    alternatives = {"threshold": Threshold(), "nearest-support": NearestSupport()}
    q = torch.from_numpy(task.query_images)
    q_true = torch.from_numpy(task.query_labels)
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        si = torch.from_numpy(task.pool_images[draw.indices])
        sl = torch.from_numpy(task.pool_labels[draw.indices])
        checks = leave_one_out_checks(sl, DEFAULT_CHECKS, draw.seed)
        if len(checks) < 3:
            continue
        targets = sl[checks]
        cal = support_calibration(lambda g, a, b, c: run(a, b, c), si, sl, (1,),
                                  THRESHOLD_GRID, seed=draw.seed, always_score=True)
        loo = {"model": cal.scores[(1, cal.threshold)]}
        query = {"model": float(dice_at(run(q, si, sl).clamp(0, 1), q_true,
                                        cal.threshold).mean())}
        for name, method in alternatives.items():
            def alt(a, b, c, method=method, seed=draw.seed):
                return torch.from_numpy(method.predict(b.numpy(), c.numpy(), a.numpy(),
                                                       seed=seed))
            loo[name] = float(dice_at(leave_one_out(alt, si, sl, checks), targets).mean())
            query[name] = float(dice_at(alt(q, si, sl), q_true).mean())
        rows.append({"draw": draw.repeat, "loo": loo, "query": query})
    return rows


def gate(row: dict, names: tuple[str, ...], margin: float) -> str:
    """The method a gate over ``names`` picks: the model unless beaten by > margin."""
    best = max(names, key=lambda n: row["loo"][n])
    return best if row["loo"][best] - row["loo"]["model"] > margin else "model"


def main(argv: list[str] | None = None) -> int:
    parser = model_task_parser(__doc__, RESULTS / "method_gate.json")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    model = load_eval_model(args.model)
    variants = {"model": ((), 0.0)}
    for m in MARGINS:
        variants[f"gate-thr@{m:g}"] = (("threshold",), m)
        variants[f"gate-all@{m:g}"] = (("threshold", "nearest-support"), m)
    results: dict[str, dict] = {}
    for name, task in pool_tasks(args):
        start = time.perf_counter()
        with torch.inference_mode():
            rows = run_task(model, task, args.support_size, args.repeats)
        if not rows:
            continue
        scores = {v: float(np.mean([r["query"][gate(r, ns, m) if ns else "model"]
                                    for r in rows])) for v, (ns, m) in variants.items()}
        scores["oracle"] = float(np.mean([max(r["query"].values()) for r in rows]))
        for alt in ("threshold", "nearest-support"):
            scores[alt] = float(np.mean([r["query"][alt] for r in rows]))
        results[name] = {"dataset": task.dataset, "rows": rows, "scores": scores}
        print(f"{name:45s} " + " ".join(f"{v}={100 * x:5.1f}" for v, x in scores.items()
                                        if "@0.03" not in v and "@0.1" not in v)
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if not results:
        parser.error("no task matched --tasks")
    write_task_table(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
