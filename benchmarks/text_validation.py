"""Per-class validation Dice of a TextDriven model: class name only, examples only, both.

    OMP_NUM_THREADS=1 python benchmarks/text_validation.py MODEL.safetensors \
        --index /work/indexes/train/{jsrt,busi,...}.h5 [--support-size 2] [--seeds 3]
        [--json benchmarks/results/text_validation.json]

Uses the val split of the training-pool indexes (the split the model was selected on).
Examples for a class are ``--support-size`` other val slices of its dataset, drawn
``--seeds`` times; Dice is aggregated over all val slices of the class (as in training's
validation). Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("text", "support", "both")


def main(argv: list[str] | None = None) -> int:
    import torch

    from incontext.models import load_model
    from incontext.text.train import MultiLabelData, embed_vocabulary, evaluate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--index", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--split", default="val")
    parser.add_argument("--support-size", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(args.model)
    data = MultiLabelData.from_index(args.index, args.split, datasets=args.datasets)
    text = embed_vocabulary(model.config, data.prompts)
    t0 = time.perf_counter()
    per_mode: dict[str, dict[str, float]] = {}
    for mode in MODES:
        runs = [evaluate(model, data, text, mode=mode, support_size=args.support_size, seed=s)
                for s in range(1 if mode == "text" else args.seeds)]
        per_mode[mode] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    seconds = time.perf_counter() - t0
    classes = list(per_mode["text"])
    print(f"| class (prompt) | val slices | text | {args.support_size} examples | both |")
    print("|---|---:|---:|---:|---:|")
    counts = {}
    for k, prompt in enumerate(data.prompts):
        counts[prompt] = int(data.annotated[:, k].sum())
    for c in classes:
        print(f"| {c} | {counts.get(c, 0)} | " + " | ".join(
            f"{100 * per_mode[m][c]:.1f}" for m in MODES) + " |")
    means = {m: float(np.mean(list(per_mode[m].values()))) for m in MODES}
    print("| **mean over classes** | | " + " | ".join(f"**{100 * means[m]:.1f}**"
                                                     for m in MODES) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "model": args.model, "indexes": args.index, "split": args.split,
            "support_size": args.support_size, "seeds": args.seeds, "seconds": seconds,
            "machine": platform.processor() or platform.machine(),
            "mean": means, "per_class": per_mode, "val_slices": counts}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
