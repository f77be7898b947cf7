"""How well the support-set check predicts the Dice on the queries.

``incontext.segment`` chooses its settings per label by segmenting a few supports from the
others (``Segmentation.support_dice``, printed by ``incontext segment``). This script asks
whether that number is a usable estimate: for each task and benchmark draw (supports from
the train split, queries from ``--query-split``) it runs ``incontext.segment`` with its
defaults, as a user with image files would (colour images in colour), and compares the
estimate with the mean Dice on the queries.

    I=""; for d in jsrt busi ph2 hc18 drions_od monuseg isbi_em left_atrium_3d drions_vessels; do
        I="$I --index /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/support_dice.py $I --query-split val

and, to see how it holds on tasks the model never saw (an evaluation; nothing is chosen
from it): ``--index`` the held-out wbc, drive and kvasir_mini indexes with
``--query-split test --json results/support_dice-heldout.json``.

Prints one row per task and draw, then Pearson r, mean absolute error and mean signed
error (estimate − query Dice) over all rows; writes results/support_dice.json.
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
    as_images,
    load_eval_model,
    model_task_parser,
    pool_tasks,
    write_json,
)


def run_task(model, task, support_size: int, repeats: int,
             support_flips: str | None = None, refine: str | None = None) -> list[dict]:
    import numpy as np

    from incontext.benchmark.protocol import support_draws
    from incontext.inference import segment
    from incontext.metrics import dice

    queries = as_images(task.query_images, task.query_colour, range(len(task.query_images)))
    rows = []
    for draw in support_draws(task.name, task.pool_size, support_size, repeats):
        supports = as_images(task.pool_images, task.pool_colour, draw.indices)
        labels = [task.pool_labels[i].astype(np.uint8) for i in draw.indices]
        result = segment(model, queries, supports, labels, seed=draw.seed,
                         support_flips=support_flips, refine=refine)
        estimate = result[0].support_dice[0]
        if estimate is None:
            continue
        query = float(np.mean([dice(r.mask > 0, t > 0.5)
                               for r, t in zip(result, task.query_labels, strict=True)]))
        rows.append({"draw": draw.repeat, "estimate": float(estimate), "query": query,
                     "checks": result[0].support_checks[0], "tiles": result[0].tiles[0],
                     "cut": result[0].thresholds[0], "rendering": result[0].colours[0],
                     "flips": bool(result[0].flips[0]),
                     "refined": bool(result[0].refined[0])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = model_task_parser(__doc__, RESULTS / "support_dice.json")
    parser.add_argument("--support-flips", default=None, choices=("off", "on", "auto"),
                        help="segment's support_flips (default: its default, auto with 2 "
                             "to 4 supports)")
    parser.add_argument("--refine", default=None, choices=("off", "on", "auto"),
                        help="segment's refine (default: its default, auto from 2 supports; "
                             "the rows before session 26 were measured without it: off)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    model = load_eval_model(args.model)
    results: dict[str, dict] = {}
    for name, task in pool_tasks(args):
        start = time.perf_counter()
        with torch.inference_mode():
            rows = run_task(model, task, args.support_size, args.repeats, args.support_flips,
                            args.refine)
        results[name] = {"dataset": task.dataset, "rows": rows}
        for r in rows:
            print(f"{name:45s} draw {r['draw']}: estimate {100 * r['estimate']:5.1f}  "
                  f"queries {100 * r['query']:5.1f}  ({r['rendering']}, tiles "
                  f"{r['tiles']}, cut {r['cut']:g}{', flipped supports' if r['flips'] else ''}"
                  f"{', pixel head' if r['refined'] else ''})",
                  flush=True)
        print(f"{'':45s} ({time.perf_counter() - start:.0f} s)", flush=True)
    rows = [r for t in results.values() for r in t["rows"]]
    if not rows:
        parser.error("no task gave an estimate (check --tasks)")
    est = np.array([r["estimate"] for r in rows])
    got = np.array([r["query"] for r in rows])
    summary = {"rows": len(rows), "pearson_r": float(np.corrcoef(est, got)[0, 1]),
               "mean_abs_error": float(np.abs(est - got).mean()),
               "mean_signed_error": float((est - got).mean()),
               "within_10_points": float((np.abs(est - got) <= 0.1).mean())}
    print(f"{len(rows)} task draws: Pearson r {summary['pearson_r']:.3f}, mean |estimate - "
          f"query Dice| {100 * summary['mean_abs_error']:.1f} points, mean signed "
          f"{100 * summary['mean_signed_error']:+.1f}, within 10 points "
          f"{100 * summary['within_10_points']:.0f} %")
    write_json(args.json, {"support_size": args.support_size, "repeats": args.repeats,
                           "queries_per_task": args.queries_per_task,
                           "query_split": args.query_split, "indexes": args.index,
                           "model": args.model or "default",
                           "support_flips": args.support_flips or "default",
                           "refine": args.refine or "default", "summary": summary,
                           "tasks": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
