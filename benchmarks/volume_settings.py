"""Which ``incontext segment`` settings suit volumes? 3D Dice of query volumes per setting.

For each draw, ``--supports`` labelled volumes of an nnU-Net-style dataset are the support
set and ``--queries`` others the queries (disjoint, seeded as in ``volume_check.py``).
Every query is segmented with :func:`incontext.volumes.segment_volume` under each setting
and scored with one 3D Dice per volume and label:

* ``default``: one plane (the default axis), 16 support slices per query slice, cut 0.5;
* ``largest``: the same masks, each label's largest connected component kept
  (``--largest-component``);
* ``planes3`` / ``planes3+largest``: the three axes averaged (``--planes 3``);
* ``support32``: 32 support slices per query slice (``--support-size 32``).

Run it on training-pool data only (settings are chosen there):

    OMP_NUM_THREADS=1 python benchmarks/volume_settings.py \\
        ../shared/datasets/train/left_atrium_3d/Dataset101_LeftAtrium --modality mr

Prints Dice x 100 per setting (mean over queries and draws, and per draw); writes
results/volume_settings.json.
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
    args, pairs, model = volume_setup(__doc__, RESULTS / "volume_settings.json", 3, 3, argv)

    import numpy as np

    from incontext.io import load_image
    from incontext.metrics import mask_scores
    from incontext.postprocess import postprocess
    from incontext.volumes import segment_volume

    runs = {"default": {}, "planes3": {"planes": 3}, "support32": {"support_size": 32}}
    rows = []
    for draw in range(args.draws):
        start = time.perf_counter()
        s_img, s_lab, axis, sup, qry = volume_draw(pairs, draw, args.supports, args.queries)
        for image, label in qry:
            truth = np.rint(load_image(label, as_label=True).data).astype(np.int64)
            values = sorted(int(v) for v in np.unique(truth) if v)
            scores: dict[str, float] = {}
            for name, options in runs.items():
                mask = segment_volume(model, load_image(image).data, s_img, s_lab,
                                      labels=values, axis=axis, seed=draw,
                                      modality=args.modality, **options).mask
                variants = {name: mask}
                if name != "support32":
                    variants[f"{name}+largest" if name != "default" else "largest"] = \
                        postprocess(mask, largest_component=True, labels=values)
                for variant, m in variants.items():
                    scores[variant] = float(np.mean([mask_scores(m == v, truth == v)["dice"]
                                                     for v in values]))
            rows.append({"draw": draw, "query": image.name, "scores": scores})
        print(f"draw {draw}: " + "  ".join(
            f"{v} {100 * np.mean([r['scores'][v] for r in rows if r['draw'] == draw]):.1f}"
            for v in rows[-1]["scores"]) + f"  ({time.perf_counter() - start:.0f} s)",
            flush=True)
    variants = list(rows[0]["scores"])
    mean = {v: 100 * float(np.mean([r["scores"][v] for r in rows])) for v in variants}
    print("mean over queries and draws: " + ", ".join(f"{v} {x:.1f}" for v, x in mean.items()))
    write_json(args.json, {"dataset": str(args.dataset), "supports": args.supports,
                           "queries": args.queries, "draws": args.draws,
                           "model": args.model or "default", "modality": args.modality,
                           "mean": mean, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
