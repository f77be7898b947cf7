"""How well ``incontext segment --check-supports`` predicts the Dice of query volumes.

For each draw, ``--supports`` labelled volumes of an nnU-Net-style dataset (``imagesTr/``,
``labelsTr/``) are the support set and ``--queries`` others are the queries (disjoint,
seeded). The estimate is :func:`incontext.volume_check.check_support_volumes` (each support
volume segmented from the others); the truth is the mean 3D Dice of the query volumes
segmented from all the supports, with the same settings as ``incontext segment`` for
volumes (whole slices, 16 support slices per query slice, default axis), at the cut 0.5
and at the cut the check chooses from :data:`incontext.calibration.THRESHOLD_GRID`
(``--threshold auto`` for volumes).

    OMP_NUM_THREADS=1 python benchmarks/volume_check.py \\
        ../shared/datasets/train/left_atrium_3d/Dataset101_LeftAtrium --modality mr

Prints one row per draw and label, then the mean absolute and signed error of the
estimate at 0.5 and the query Dice at both cuts; writes results/volume_check.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pool_tasks import volume_draw, volume_setup, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args, pairs, model = volume_setup(__doc__, RESULTS / "volume_check.json", 4, 4, argv)

    import numpy as np

    from incontext.calibration import THRESHOLD_GRID
    from incontext.io import load_image
    from incontext.volume_check import check_support_volumes, volume_dice
    from incontext.volumes import segment_volume

    rows = []
    for draw in range(args.draws):
        start = time.perf_counter()
        s_img, s_lab, axis, sup, qry = volume_draw(pairs, draw, args.supports, args.queries)
        options = {"axis": axis, "modality": args.modality}
        checks = check_support_volumes(model, s_img, s_lab, seed=draw,
                                       thresholds=THRESHOLD_GRID, **options)
        for check in checks:
            at_half, at_cut = [], []
            for image, label in qry:
                truth = np.rint(load_image(label, as_label=True).data).astype(np.int64)
                prob = segment_volume(model, load_image(image).data, s_img, s_lab,
                                      labels=[check.label], seed=draw,
                                      **options).probabilities[0]
                at_half.append(volume_dice(prob >= 0.5, truth == check.label))
                at_cut.append(volume_dice(prob >= check.threshold, truth == check.label))
            rows.append({"draw": draw, "label": check.label, "estimate": check.scores[0.5],
                         "queries": float(np.mean(at_half)), "per_query": at_half,
                         "cut": check.threshold, "estimate_at_cut": check.dice,
                         "queries_at_cut": float(np.mean(at_cut)), "per_query_at_cut": at_cut,
                         "cut_scores": check.scores, "supports": [p.name for p, _ in sup],
                         "query_files": [p.name for p, _ in qry], "axis": options["axis"]})
            print(f"draw {draw} label {check.label}: cut 0.5: estimate "
                  f"{100 * check.scores[0.5]:5.1f}  queries {100 * np.mean(at_half):5.1f}; "
                  f"chosen cut {check.threshold:g}: estimate {100 * check.dice:5.1f}  queries "
                  f"{100 * np.mean(at_cut):5.1f}  ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    est = np.array([r["estimate"] for r in rows])
    got = np.array([r["queries"] for r in rows])
    gain = np.array([r["queries_at_cut"] - r["queries"] for r in rows])
    summary = {"rows": len(rows), "mean_abs_error": float(np.abs(est - got).mean()),
               "mean_signed_error": float((est - got).mean()),
               "queries_at_half": float(got.mean()),
               "queries_at_chosen_cut": float(np.mean([r["queries_at_cut"] for r in rows])),
               "chosen_cut_gain_min": float(gain.min())}
    print(f"{len(rows)} draws x labels, cut 0.5: mean |estimate - query Dice| "
          f"{100 * summary['mean_abs_error']:.1f} points, mean signed "
          f"{100 * summary['mean_signed_error']:+.1f}; query Dice at 0.5 "
          f"{100 * summary['queries_at_half']:.1f}, at the chosen cut "
          f"{100 * summary['queries_at_chosen_cut']:.1f} (worst draw {100 * gain.min():+.1f})")
    write_json(args.json, {"dataset": str(args.dataset), "supports": args.supports,
                           "queries": args.queries, "model": args.model or "default",
                           "modality": args.modality, "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
