"""Episode throughput of the training data path: in-process vs ``[data] workers = N``.

Times how fast augmented batches reach the training loop (no model): the in-process
path (``workers = 0``, the engine's own loop) and the spawned worker processes of
``incontext.training.loader`` for each requested count. Episodes come from a training
config's sources (synthetic tasks by default; ``--index`` adds real task indexes, as
``incontext train`` does). Worker start-up is excluded: the clock starts after the
first batch.

    python benchmarks/data_workers.py                     # table + results/data_workers.json
    python benchmarks/data_workers.py --workers 0,1,2,6 --batches 40 \
        --index /work/indexes/train/hc18.h5 --index /work/indexes/train/jsrt.h5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))  # run as a script: import the checkout's packages


def measure(config_path: Path, indexes: list[str], workers: int, batches: int) -> dict:
    import numpy as np

    from incontext.training.augment import EpisodeAugmenter
    from incontext.training.config import load_config
    from incontext.training.engine import build_sources
    from incontext.training.loader import EpisodeBatches, batch_iterator, close_batches

    cfg = load_config(config_path)
    index = None
    if indexes:
        from incontext.data import TaskIndex

        index = TaskIndex.open([Path(p) for p in indexes])
    source, _ = build_sources(cfg, index)
    augmenter = EpisodeAugmenter(cfg.augment)
    data = EpisodeBatches(source, augmenter, cfg.data.batch_size, cfg.data.support_size,
                          (cfg.seed, 0, 0))
    if workers == 0:
        stream = iter(data)  # the same work the engine does in-process
    else:
        stream = batch_iterator(data, workers, pin_memory=False)
    try:
        next(stream)  # start-up (and the first synthetic tasks) excluded
        start = time.perf_counter()
        sizes = [next(stream)[1].shape[1] for _ in range(batches)]
        seconds = time.perf_counter() - start
    finally:
        close_batches(stream if workers else None)
    return {"workers": workers, "batches": batches, "batch_size": cfg.data.batch_size,
            "resolution": cfg.model.resolution, "seconds": round(seconds, 3),
            "batches_per_s": round(batches / seconds, 3),
            "episodes_per_s": round(batches * cfg.data.batch_size / seconds, 2),
            "mean_support": float(np.mean(sizes))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path,
                        default=ROOT / "configs" / "incontext-universeg-s128-b16.toml")
    parser.add_argument("--index", action="append", default=[], metavar="FILE.h5")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated counts")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "data_workers.json")
    args = parser.parse_args()
    rows = [measure(args.config, args.index, int(w), args.batches)
            for w in args.workers.split(",")]
    print(f"{'workers':>7} {'batches/s':>10} {'episodes/s':>11} {'speed-up':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['batches_per_s']:>10.2f} {r['episodes_per_s']:>11.1f} "
              f"{r['episodes_per_s'] / rows[0]['episodes_per_s']:>8.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT)
                      else args.config),
        "indexes": args.index, "cpus": os.cpu_count(), "machine": platform.machine(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "rows": rows}, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
