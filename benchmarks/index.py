"""Benchmark the task index: build throughput and support-set sampling throughput.

    OMP_NUM_THREADS=1 python benchmarks/index.py [--json benchmarks/results/index.json]
        [--slices 2000] [--seconds 3] [--shared]

Builds generated 2D (png-pairs) and 3D (nnunet) datasets, then samples episodes with
support sets of 64 (+1 query) at 128x128 on one core: warm (pixels cached in memory after
the first read), cold (a freshly opened index, first episode included) and uncached (every
episode read from the HDF5 chunks). ``--shared`` also builds ``left_atrium_3d`` from
``$INCONTEXT_SHARED_DATA`` when present. Prints a rich table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_build(name: str, recipe: str, source: Path, out: Path, workers: int, **kw) -> dict:
    from incontext.data import build_index

    report = build_index(recipe, source, out, workers=workers, progress=False, **kw)
    return {"case": name, "workers": workers, "subjects": report.built, "slices": report.slices,
            "seconds": report.seconds, "slices_per_s": report.slices_per_second}


def bench_sampling(path: Path, task: str, support: int, seconds: float, mode: str) -> dict:
    from incontext.data import TaskIndex

    cache = 0 if mode == "uncached" else 8 * 1024**3
    rng = np.random.default_rng(0)
    t_open = time.perf_counter()
    index = TaskIndex.open(path, cache_bytes=cache)
    first = None
    if mode == "cold":  # fresh open + first episode (fills the cache)
        index.episode(task, "train", support, 1, rng)
        first = time.perf_counter() - t_open
    elif mode == "warm":
        index.episode(task, "train", support, 1, rng)
    rates = []  # episodes/s in 5 rounds; the best is least disturbed by other processes
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            index.episode(task, "train", support, 1, rng)
            n += 1
        rates.append(n / (time.perf_counter() - start))
    index.close()
    row = {"case": f"episodes S={support}+1 ({mode})", "episodes_per_s": max(rates),
           "slices_per_s": max(rates) * (support + 1),
           "median_slices_per_s": float(np.median(rates)) * (support + 1)}
    if first is not None:
        row["open_and_first_episode_s"] = first
    return row


def bench_stream(path: Path, support: int, seconds: float) -> dict:
    from incontext.data import EpisodeDataset

    ds = EpisodeDataset(path, support_size=support, n_queries=1, seed=0)
    it = iter(ds)
    next(it)
    rates = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            next(it)
            n += 1
        rates.append(n / (time.perf_counter() - start))
    return {"case": f"EpisodeDataset S={support}+1 (tensors, warm)",
            "episodes_per_s": max(rates), "slices_per_s": max(rates) * (support + 1),
            "median_slices_per_s": float(np.median(rates)) * (support + 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "index.json")
    parser.add_argument("--slices", type=int, default=2000, help="2D images for the sampling index")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per sampling case")
    parser.add_argument("--support", type=int, default=64)
    parser.add_argument("--shared", action="store_true", help="also build left_atrium_3d")
    args = parser.parse_args(argv)

    import torch
    from rich.console import Console
    from rich.table import Table

    from incontext.data.fixtures import write_nnunet, write_png_pairs

    torch.set_num_threads(1)
    console = Console()
    builds, sampling = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with console.status("generating fixtures"):
            png = write_png_pairs(tmp / "png", n=args.slices, shape=(192, 256), seed=0)
            vol = write_nnunet(tmp / "raw", n=20, shape=(96, 96, 64), seed=0)
        with console.status("building"):
            builds.append(bench_build("png-pairs 256x192 -> 128", "png-pairs", png,
                                      tmp / "png1.h5", 1, size=128))
            builds.append(bench_build("png-pairs 256x192 -> 128", "png-pairs", png,
                                      tmp / "png2.h5", 2, size=128))
            builds.append(bench_build("nnunet 96x96x64 CT -> 128", "nnunet", vol, tmp / "vol.h5",
                                      1, size=128))
            builds.append(bench_build("nnunet 96x96x64 CT -> 128", "nnunet", vol,
                                      tmp / "vol2.h5", 2, size=128))
            shared = Path(os.environ.get("INCONTEXT_SHARED_DATA", REPO.parent / "shared" /
                                         "datasets")) / "train" / "left_atrium_3d"
            if args.shared and shared.exists():
                builds.append(bench_build("left_atrium_3d (shared)", "left_atrium_3d", shared,
                                          tmp / "la.h5", 1, size=128))
        with console.status("sampling"):
            task = "png/2d/foreground"
            for mode in ("warm", "cold", "uncached"):
                sampling.append(bench_sampling(tmp / "png1.h5", task, args.support,
                                               args.seconds, mode))
            sampling.append(bench_stream(tmp / "png1.h5", args.support, args.seconds))

    table = Table(title="index build (slices/s)")
    for col in ("case", "workers", "subjects", "slices", "seconds", "slices/s"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for b in builds:
        table.add_row(b["case"], str(b["workers"]), str(b["subjects"]), str(b["slices"]),
                      f"{b['seconds']:.2f}", f"{b['slices_per_s']:.0f}")
    console.print(table)
    table = Table(title=f"sampling, one core, 128x128, index of {args.slices} slices")
    for col in ("case", "episodes/s", "slices/s (best)", "slices/s (median)",
                "open + 1st episode (s)"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for s in sampling:
        first = s.get("open_and_first_episode_s")
        table.add_row(s["case"], f"{s['episodes_per_s']:.0f}", f"{s['slices_per_s']:.0f}",
                      f"{s['median_slices_per_s']:.0f}",
                      f"{first:.3f}" if first is not None else "")
    console.print(table)

    result = {"machine": {"python": platform.python_version(), "cpu": platform.processor(),
                          "cores_visible": os.cpu_count(),
                          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "build": builds, "sampling": sampling, "support_size": args.support,
              "index_slices": args.slices}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_name(f".{args.json.name}.tmp")
    tmp_json.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_json, args.json)
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
