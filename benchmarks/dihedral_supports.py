"""Tried, not adopted: eight dihedral copies of the supports instead of four flips.

``--support-flips auto`` adds the supports flipped left-right, up-down and both ways
where a leave-one-out check favours them. This script swaps those four copies for all
eight symmetries of the square (the flips and their transposes, i.e. also the 90°
rotations), keeps the same check, and runs the benchmark on a training pool's val split:

    I=""; for d in ph2 drions_od monuseg hc18 busi jsrt isbi_em left_atrium_3d; do
        I="$I /work/indexes/train-colour/$d.h5"; done
    OMP_NUM_THREADS=1 python benchmarks/dihedral_supports.py dihedral-val 2,4 $I

Prints the mean Dice ×100 per support size; the benchmark's results.json, report.md and
results.csv are written to the output folder. Compare with the benchmark command of
docs/segment.md ("Few supports") with ``--query-split val``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package


def dihedral_copies(x):
    """(S, R, R) -> (8S, R, R): the four flips of ``x`` and the four of its transpose
    (square, as the model's inputs are)."""
    import torch

    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral copies need square images, got {tuple(x.shape[-2:])}")

    t = x.transpose(-2, -1)
    return torch.cat([x, x.flip(-1), x.flip(-2), x.flip(-2, -1),
                      t, t.flip(-1), t.flip(-2), t.flip(-2, -1)], dim=0).contiguous()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    import incontext.benchmark.methods as methods
    import incontext.support_flips as support_flips
    from incontext.benchmark.api import run_benchmark

    support_flips.flipped_copies = dihedral_copies  # used by the check
    methods.flipped_copies = dihedral_copies  # used for the queries
    out, sizes, indexes = argv[0], [int(s) for s in argv[1].split(",")], argv[2:]
    results = run_benchmark(indexes, baselines="none", support_sizes=sizes, ensembles=[1],
                            repeats=3, queries_per_task=16, query_split="val",
                            model_threshold="auto", model_colour="auto",
                            model_support_flips="auto", progress=False, plots=False,
                            out_dir=out)
    print("N  mean Dice x100 (8 dihedral copies, checked)")
    for row in results.headline():
        print(f"{row['support_size']:<3d}{100 * row['dice_mean']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
