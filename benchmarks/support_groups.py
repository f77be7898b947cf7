"""Experiment: with many supports, one pass with all of them or the mean of a few groups?

The default model was trained with 2 to 16 supports per episode. With 64 it still takes them
all in one pass. This script compares that with splitting the support set into k disjoint
groups (a seeded split), running the model once per group and averaging the k probability
maps (what an ensemble of k members of 64/k supports each would do, without reusing any
support). Grey images, whole image, 0.5 cut, the model alone (no head, no flips), so only
the grouping differs between the variants ``groups=1`` (all at once), ``groups=2``, ...

Run it on training-pool indexes only:

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/support_groups.py $I --support-size 64 --query-split val

Prints a table (Dice x 100 per dataset) and writes results/support_groups.json. About 90 s
per task at N = 64 with groups 1, 2 and 4 on 1 thread.
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


def run_task(model, task, support_size: int, repeats: int, groups: list[int]) -> list[dict]:
    """One row per draw: query Dice at 0.5 for each number of support groups."""
    import numpy as np
    import torch

    from incontext.benchmark.protocol import support_draws
    from incontext.calibration import dice_at
    from incontext.inference import predict_probabilities

    queries = torch.from_numpy(task.query_images)
    truth = torch.from_numpy(task.query_labels)
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        order = np.random.default_rng(draw.seed).permutation(np.asarray(draw.indices))
        row = {"draw": draw.repeat}
        for k in groups:
            parts = np.array_split(order, k)
            prob = sum(predict_probabilities(model, queries,
                                             torch.from_numpy(task.pool_images[p]),
                                             torch.from_numpy(task.pool_labels[p]))
                       for p in parts) / k
            row[f"groups={k}"] = float(dice_at(prob, truth).mean())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = model_task_parser(__doc__, RESULTS / "support_groups.json")
    parser.add_argument("--groups", default="1,2,4", help="comma-separated group counts")
    args = parser.parse_args(argv)
    groups = [int(g) for g in args.groups.split(",")]
    model = load_eval_model(args.model)
    run_scored_tasks(args, parser,
                     lambda task: run_task(model, task, args.support_size, args.repeats, groups),
                     lambda row: {k: v for k, v in row.items() if k != "draw"},
                     lambda k: True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
