"""Experiment: when should the pixel head (``segment --refine``) replace the model's output?

For each task and draw (supports from the train split, queries from ``--query-split``) the
model (grey luma, whole image, cut chosen on the supports as ``support_calibration`` does)
segments every support from the others and the queries from all the supports; the pixel
head of :mod:`incontext.refine` is fitted on the supports' leave-one-out probabilities,
once per half of them (2-fold: each half predicted by the head fitted on the other) and
once on all. Scores (query Dice; no query label is used by any gate):

* ``model``: the model alone;
* ``always``: the head at a 0.5 cut; ``always-cvcut``: at the cut that is best on the
  2-fold predictions;
* ``gate@m`` / ``gcut@m``: the head (at 0.5 / at the 2-fold cut) where its 2-fold Dice beats
  the model's leave-one-out Dice by more than m, else the model (``segment --refine auto``
  is ``gcut@0``);
* ``oracle``: the better of the model and the head at 0.5 on the queries (a bound).

With ``--alternatives threshold,prototype`` (training-free baselines) each is also run on
the queries and on every support from the others, and ``alt@m`` scores a method gate on top
of ``gcut@0``: the alternative with the best leave-one-out Dice replaces the model (with or
without its head) where it beats the better of the model's and the head's support Dice by
more than m. ``--remap SEED`` runs it all on pseudo-unseen tasks (``pool_tasks.remap_task``).

Run it on training-pool indexes only, on the val split (choices are tuned there):

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/refine_gate.py $I --query-split val --support-size 16

Prints a table (Dice x 100 per dataset) and writes results/refine_gate.json. About 20 s per
task and draw pair at N = 16 on 1 thread.
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

MARGINS = (-0.05, 0.0, 0.03)
ALT_MARGINS = (0.0, 0.05, 0.1)


def run_task(model, task, support_size: int, repeats: int,
             alternatives: tuple[str, ...] = ()) -> list[dict]:
    """One row per draw: the model's query and leave-one-out Dice, the head's 2-fold Dice and
    query Dice at every cut of the grid; each alternative's leave-one-out and query Dice."""
    import numpy as np
    import torch

    from incontext.baselines import BASELINES
    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import THRESHOLD_GRID, dice_at, support_calibration
    from incontext.inference import predict_probabilities
    from incontext.refine import _features, fit_pixel_head, refine_probabilities

    def run(q, si, sl):
        return predict_probabilities(model, q, si, sl).clamp(0, 1)

    queries = torch.from_numpy(task.query_images)
    truth_q = torch.from_numpy(task.query_labels)
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        si = torch.from_numpy(task.pool_images[draw.indices])
        sl = torch.from_numpy(task.pool_labels[draw.indices])
        n = si.shape[0]
        cal = support_calibration(lambda g, a, b, c: run(a, b, c), si, sl, (1,),
                                  THRESHOLD_GRID, seed=draw.seed)
        prob_q = run(queries, si, sl)
        loo = torch.stack([run(si[i:i + 1], si[[j for j in range(n) if j != i]],
                               sl[[j for j in range(n) if j != i]])[0] for i in range(n)])
        colour = None if task.pool_colour is None else task.pool_colour[draw.indices]
        truth = (sl.numpy() >= 0.5).astype(np.float32)
        feats = _features(si.numpy(), loo.numpy(), colour)
        pixels = si.shape[1] * si.shape[2]
        fold = np.arange(n) % 2
        held_out = np.zeros_like(truth)
        for f in (0, 1):
            train = np.repeat(fold != f, pixels)
            head = fit_pixel_head(feats[train], truth.reshape(-1)[train], draw.seed)
            held_out[fold == f] = head.predict(feats[~train]).reshape(-1, *si.shape[1:])
        head = fit_pixel_head(feats, truth.reshape(-1), draw.seed)
        refined = torch.from_numpy(refine_probabilities(head, task.query_images,
                                                        prob_q.numpy(), task.query_colour))
        alts = {}
        others = [[j for j in range(n) if j != i] for i in range(n)]
        for alt in alternatives:
            method = BASELINES[alt]()
            loo_alt = np.stack([method.predict(si.numpy()[o], sl.numpy()[o],
                                               si.numpy()[i:i + 1], seed=draw.seed)[0]
                                for i, o in enumerate(others)])
            q_alt = method.predict(si.numpy(), sl.numpy(), task.query_images, seed=draw.seed)
            alts[alt] = {"loo": float(dice_at(torch.from_numpy(loo_alt), sl).mean()),
                         "query": float(dice_at(torch.from_numpy(q_alt), truth_q).mean())}
        rows.append({"alternatives": alts,
            "draw": draw.repeat,
            "model": float(dice_at(prob_q, truth_q, cal.threshold).mean()),
            "model_loo": float(dice_at(loo, sl, cal.threshold).mean()),
            "head_cv": {str(t): float(dice_at(torch.from_numpy(held_out),
                                              torch.from_numpy(truth), t).mean())
                        for t in THRESHOLD_GRID},
            "head": {str(t): float(dice_at(refined, truth_q, t).mean())
                     for t in THRESHOLD_GRID}})
    return rows


def variants(row: dict) -> dict[str, float]:
    """Every scored variant of one row (see the module docstring)."""
    cv = {float(k): v for k, v in row["head_cv"].items()}
    head = {float(k): v for k, v in row["head"].items()}
    best = max(cv, key=lambda t: (round(cv[t], 6), -abs(t - 0.5)))
    out = {"model": row["model"], "always": head[0.5], "always-cvcut": head[best]}
    for m in MARGINS:
        out[f"gate@{m:g}"] = head[0.5] if cv[0.5] > row["model_loo"] + m else row["model"]
        out[f"gcut@{m:g}"] = head[best] if cv[best] > row["model_loo"] + m else row["model"]
    out["oracle"] = max(row["model"], head[0.5])
    alts = row.get("alternatives", {})
    if alts:
        own = max(row["model_loo"], cv[best])
        pick = max(alts, key=lambda a: alts[a]["loo"])
        for m in ALT_MARGINS:
            out[f"alt@{m:g}"] = (alts[pick]["query"] if alts[pick]["loo"] > own + m
                                 else out["gcut@0"])
        for a, v in alts.items():
            out[a] = v["query"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = model_task_parser(__doc__, RESULTS / "refine_gate.json")
    parser.add_argument("--alternatives", default="",
                        help="comma-separated baselines for a method gate, e.g. "
                             "threshold,prototype")
    args = parser.parse_args(argv)
    alternatives = tuple(a for a in args.alternatives.split(",") if a)
    model = load_eval_model(args.model)
    run_scored_tasks(args, parser, lambda task: run_task(model, task, args.support_size,
                                                         args.repeats, alternatives),
                     variants, lambda k: k in ("model", "always", "gcut@0", "alt@0")
                     or k in alternatives)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
