"""Look at one task query by query: what ``segment`` chose, and where its masks go wrong.

The supports are ``--support-size`` slices of the task's train split (a seeded draw; all of
them when the split holds fewer), the queries the first ``--queries`` slices of
``--query-split``, as R, G, B where the index stores colour. One ``incontext.segment``
call with its defaults (or ``--model``) segments them all. Printed per query: Dice,
the predicted and true foreground fractions, and how much of the truth the mask covers.
Also printed: the choices made on the supports (tiling, cut, rendering, estimate, flips,
pixel head). An overlay PNG is written (each row: the image, then the mask in red with the
truth outlined in green).

For failure analysis only: nothing here feeds a choice. Example (session 32, the held-out
polyps; MODEL_CARD.md, "Known failure modes"):

    python benchmarks/query_report.py heldout-colour/kvasir_mini.h5 kvasir_mini/2d/polyp \
        --query-split test --png kvasir.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pool_tasks import as_images  # noqa: E402


def overlay_rows(images: list, masks: list, truths: list):
    """(rows·H, 2W, 3) uint8: each row the image, then the mask in red, truth outlined green."""
    import numpy as np
    from scipy import ndimage

    rows = []
    for image, mask, truth in zip(images, masks, truths, strict=True):
        rgb = np.asarray(image, np.float32)
        rgb = np.repeat(rgb[..., None], 3, -1) if rgb.ndim == 2 else rgb
        rgb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
        shown = rgb.copy()
        shown[mask] = (0.5 * shown[mask] + [127, 0, 0]).astype(np.uint8)
        shown[truth & ~ndimage.binary_erosion(truth)] = [0, 255, 0]
        rows.append(np.concatenate([rgb, shown], 1))
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from PIL import Image

    import incontext
    from incontext.data import TaskIndex
    from incontext.metrics import dice

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("task")
    parser.add_argument("--support-size", type=int, default=16)
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--query-split", default="val", choices=("val", "test"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="registry name or weights (default model)")
    parser.add_argument("--png", type=Path, default=None, help="overlay PNG to write")
    args = parser.parse_args(argv)
    if not args.index.is_file():
        parser.error(f"{args.index}: no such index")
    with TaskIndex.open(args.index) as index:
        if args.task not in {t.name for t in index.tasks}:
            parser.error(f"{args.index}: no task {args.task!r}")
        s_grey, s_lab, _ = index.load_split(args.task, "train")
        q_grey, q_lab, q_ids = index.load_split(args.task, args.query_split)
        s_rgb = index.load_split_colour(args.task, "train")
        q_rgb = index.load_split_colour(args.task, args.query_split)
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(s_grey))[:args.support_size])
    n_q = min(args.queries, len(q_grey))
    supports, queries = as_images(s_grey, s_rgb, pick), as_images(q_grey, q_rgb, range(n_q))
    model = incontext.load_model(args.model) if args.model else incontext.load_model()
    reuse: dict = {}
    out = incontext.segment(model.eval(), queries, supports,
                            [(s_lab[i] >= 0.5).astype(np.uint8) for i in pick],
                            reuse=reuse, seed=args.seed)
    for value, kept in reuse.items():
        if isinstance(value, int):
            tiles, cut, rendering, (estimate, checks), flips = kept[:5]
            shown = "–" if estimate is None else f"{estimate:.3f}"
            print(f"label {value}: {len(pick)} supports, tiles {tiles}, cut {cut}, rendering "
                  f"{rendering}, estimate {shown} ({checks} checks), flips {flips}, "
                  f"pixel head {kept[5] is not None}")
    masks = [o.mask > 0 for o in out]
    truths = [q_lab[i] >= 0.5 for i in range(n_q)]
    scores = [dice(m, t) for m, t in zip(masks, truths, strict=True)]
    print("| query | Dice | predicted fg | true fg | truth covered |")
    print("|---|---:|---:|---:|---:|")
    for i, (m, t) in enumerate(zip(masks, truths, strict=True)):
        covered = (m & t).sum() / max(int(t.sum()), 1)
        print(f"| {q_ids[i]} | {100 * scores[i]:.1f} | {m.mean():.3f} | {t.mean():.3f} | "
              f"{covered:.2f} |")
    print(f"mean Dice {100 * np.mean(scores):.1f}")
    if args.png is not None:
        Image.fromarray(overlay_rows(queries, masks, truths)).save(args.png)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
