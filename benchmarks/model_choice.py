"""Experiment: several shipped models per task — choose one on the supports, or average them.

incontext ships several in-context models trained on the same pool with different
emphases (thin structures, vessels, colour renderings, twice the width). For each task and
benchmark draw (supports from the train split, queries from ``--query-split``) this runs
``incontext.segment`` with its defaults once per model and scores:

* each model alone;
* ``choose``: per task, the model whose support-set check (``support_dice``: supports
  segmented from the others) is highest, the first model unless another beats it by more
  than ``--margin``;
* ``mean``: the average of the models' probabilities (each already rescaled so its own
  chosen cut sits at 0.5), cut at 0.5 — a model ensemble at the models' summed cost.

Run it on training-pool indexes only, on the val split (choices are tuned there):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/model_choice.py $I --query-split val \\
        --models incontext-universeg-s128-colour,incontext-universeg-w64-vessels,\\
incontext-universeg-s128-vessels

Prints Dice x 100 per dataset and variant; writes results/model_choice.json.
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
from pool_tasks import add_task_options, as_images, pool_tasks, write_json  # noqa: E402


def run_task(models: dict, task, support_size: int, repeats: int, margin: float) -> list[dict]:
    import numpy as np

    from incontext.benchmark.protocol import support_draws
    from incontext.inference import segment
    from incontext.metrics import dice

    queries = as_images(task.query_images, task.query_colour, range(len(task.query_images)))
    truth = task.query_labels > 0.5
    names = list(models)
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        supports = as_images(task.pool_images, task.pool_colour, draw.indices)
        labels = [task.pool_labels[i].astype(np.uint8) for i in draw.indices]
        probs, estimates, scores = {}, {}, {}
        for name, model in models.items():
            # refine off: segment's defaults when this was measured (before session 26)
            result = segment(model, queries, supports, labels, seed=draw.seed, refine="off")
            probs[name] = np.stack([r.probabilities[0] for r in result])
            estimates[name] = result[0].support_dice[0]
            scores[name] = float(np.mean(dice(probs[name] >= 0.5, truth)))
        known = {n: e for n, e in estimates.items() if e is not None}
        pick = names[0]
        if names[0] in known:
            best = max(known, key=known.get)
            if known[best] - known[names[0]] > margin:
                pick = best
        mean = np.mean([probs[n] for n in names], axis=0)
        rows.append({"draw": draw.repeat, "estimates": estimates, "models": scores,
                     "choose": scores[pick], "picked": pick,
                     "mean": float(np.mean(dice(mean >= 0.5, truth)))})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_task_options(parser, RESULTS / "model_choice.json")
    parser.add_argument("--models", required=True,
                        help="comma-separated registry names, a+b for the mean of a and b "
                             "(incontext.models.ensemble); the first is the default")
    parser.add_argument("--margin", type=float, default=0.01)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import incontext
    from incontext.models.ensemble import ModelEnsemble

    def build(name: str):  # "a+b": the mean of models a and b (incontext.models.ensemble)
        parts = name.split("+")
        if len(parts) == 1:
            return incontext.load_model(name)
        return ModelEnsemble([incontext.load_model(p) for p in parts], parts)

    models = {name: build(name) for name in args.models.split(",")}
    results: dict[str, dict] = {}
    for name, task in pool_tasks(args):
        start = time.perf_counter()
        with torch.inference_mode():
            rows = run_task(models, task, args.support_size, args.repeats, args.margin)
        results[name] = {"dataset": task.dataset, "rows": rows}
        row = {**{m: np.mean([r["models"][m] for r in rows]) for m in models},
               "choose": np.mean([r["choose"] for r in rows]),
               "mean": np.mean([r["mean"] for r in rows])}
        print(f"{name:45s} " + " ".join(f"{k.replace('incontext-universeg-', '')}="
                                        f"{100 * v:5.1f}" for k, v in row.items())
              + f" picked {[r['picked'].replace('incontext-universeg-', '') for r in rows]}"
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    variants = [*models, "choose", "mean"]

    def value(row, v):
        return row["models"][v] if v in models else row[v]

    datasets = sorted({t["dataset"] for t in results.values()})
    by_dataset = {d: {v: 100 * float(np.mean([np.mean([value(r, v) for r in t["rows"]])
                                              for t in results.values() if t["dataset"] == d]))
                      for v in variants} for d in datasets}
    per_draw = {v: [100 * float(np.mean([np.mean([value(r, v) for r in t["rows"]
                                                  if r["draw"] == k])
                                         for t in results.values()
                                         if any(r["draw"] == k for r in t["rows"])]))
                    for k in range(args.repeats)] for v in variants}
    print("\n| variant | " + " | ".join(datasets) + " | mean | per draw |")
    print("|---|" + "---:|" * (len(datasets) + 2))
    for v in variants:
        mean = np.mean([by_dataset[d][v] for d in datasets])
        print(f"| {v} | " + " | ".join(f"{by_dataset[d][v]:.1f}" for d in datasets)
              + f" | {mean:.2f} | " + " / ".join(f"{x:.1f}" for x in per_draw[v]) + " |")
    write_json(args.json, {"models": list(models), "support_size": args.support_size,
                           "repeats": args.repeats, "query_split": args.query_split,
                           "margin": args.margin, "datasets": by_dataset,
                           "per_draw": per_draw, "tasks": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
