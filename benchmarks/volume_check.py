"""How well ``incontext segment --check-supports`` predicts the Dice of query volumes.

For each draw, ``--supports`` labelled volumes of an nnU-Net-style dataset (``imagesTr/``,
``labelsTr/``) are the support set and ``--queries`` others are the queries (disjoint,
seeded). The estimate is :func:`incontext.volume_check.check_support_volumes` (each support
volume segmented from the others); the truth is the mean 3D Dice of the query volumes
segmented from all the supports, with the same settings as ``incontext segment`` for
volumes (cut 0.5, whole slices, 16 support slices per query slice, default axis).

    OMP_NUM_THREADS=1 python benchmarks/volume_check.py \\
        ../shared/datasets/train/left_atrium_3d/Dataset101_LeftAtrium --modality mr

Prints one row per draw and label, then the mean absolute and signed error of the
estimate; writes results/volume_check.json.
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
from pool_tasks import add_volume_options, labelled_volumes, volume_draw, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_volume_options(parser, RESULTS / "volume_check.json", queries=4, draws=4)
    args = parser.parse_args(argv)

    import numpy as np

    import incontext
    from incontext.io import load_image
    from incontext.metrics import dice
    from incontext.volume_check import check_support_volumes
    from incontext.volumes import segment_volume

    pairs = labelled_volumes(args.dataset)
    model = incontext.load_model(args.model) if args.model else incontext.load_model()
    rows = []
    for draw in range(args.draws):
        start = time.perf_counter()
        s_img, s_lab, axis, sup, qry = volume_draw(pairs, draw, args.supports, args.queries)
        options = {"axis": axis, "modality": args.modality}
        checks = check_support_volumes(model, s_img, s_lab, seed=draw, **options)
        for check in checks:
            truth = []
            for image, label in qry:
                q_lab = np.rint(load_image(label, as_label=True).data).astype(np.int64)
                result = segment_volume(model, load_image(image).data, s_img, s_lab,
                                        labels=[check.label], seed=draw, **options)
                truth.append(float(dice((result.mask == check.label).reshape(1, 1, -1),
                                        (q_lab == check.label).reshape(1, 1, -1))[0]))
            rows.append({"draw": draw, "label": check.label, "estimate": check.dice,
                         "per_support": check.per_volume, "queries": float(np.mean(truth)),
                         "per_query": truth, "supports": [p.name for p, _ in sup],
                         "query_files": [p.name for p, _ in qry], "axis": options["axis"]})
            print(f"draw {draw} label {check.label}: estimate {100 * check.dice:5.1f}  "
                  f"queries {100 * np.mean(truth):5.1f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    est = np.array([r["estimate"] for r in rows])
    got = np.array([r["queries"] for r in rows])
    summary = {"rows": len(rows), "mean_abs_error": float(np.abs(est - got).mean()),
               "mean_signed_error": float((est - got).mean())}
    print(f"{len(rows)} draws x labels: mean |estimate - query Dice| "
          f"{100 * summary['mean_abs_error']:.1f} points, mean signed "
          f"{100 * summary['mean_signed_error']:+.1f}")
    write_json(args.json, {"dataset": str(args.dataset), "supports": args.supports,
                           "queries": args.queries, "model": args.model or "default",
                           "modality": args.modality, "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
