"""What the task-by-task experiment scripts here share: their options, the tasks of their
indexes, images as ``segment`` takes them, and an atomic JSON write.

Used by ``support_dice.py``, ``method_gate.py``, ``model_choice.py``, ``unet_gate.py``,
``refine_gate.py`` and ``refine_variants.py`` (each imports it from this folder);
``volume_check.py`` and ``volume_settings.py`` share ``labelled_volumes``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path


def add_task_options(parser: argparse.ArgumentParser, json_default: Path) -> None:
    """--index, --tasks, --support-size, --repeats, --queries-per-task, --query-split, --json."""
    parser.add_argument("--index", action="append", required=True, help="task index")
    parser.add_argument("--tasks", default=None, help="comma-separated task patterns")
    parser.add_argument("--support-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--queries-per-task", type=int, default=16)
    parser.add_argument("--query-split", default="val", choices=("val", "test"))
    parser.add_argument("--json", default=str(json_default))
    parser.add_argument("--remap", type=int, default=None, metavar="SEED",
                        help="pseudo-unseen tasks: pass every image of a task through one "
                             "random non-monotone intensity curve (see remap_task)")


def model_task_parser(doc: str, json_default: Path) -> argparse.ArgumentParser:
    """A parser with :func:`add_task_options` and --model, described by ``doc``'s first
    paragraph."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_task_options(parser, json_default)
    parser.add_argument("--model", default=None, help="registry name or weights (default model)")
    return parser


def load_eval_model(name: str | None):
    """The model named ``name`` (None: the default), in eval mode."""
    import incontext

    model = incontext.load_model(name) if name else incontext.load_model()
    return model.eval()


def pool_tasks(args: argparse.Namespace) -> Iterator[tuple[str, object]]:
    """(name, :class:`incontext.benchmark.protocol.TaskData`) for every matching task of
    every ``--index``; a task without slices in ``--query-split`` is skipped, with a line."""
    from incontext.benchmark.api import select_tasks
    from incontext.benchmark.protocol import ProtocolError, load_task
    from incontext.data import TaskIndex

    patterns = args.tasks.split(",") if args.tasks else None
    for path in args.index:
        index = TaskIndex(path)
        for name in select_tasks(index, patterns):
            try:
                task = load_task(index, name, queries_per_task=args.queries_per_task,
                                 query_split=args.query_split)
            except ProtocolError as exc:  # e.g. a dataset too small for a val split
                print(f"{name}: skipped ({exc})", flush=True)
                continue
            if getattr(args, "remap", None) is not None:
                task = remap_task(task, args.remap)
            yield name, task


def remap_curve(seed: int, knots: int = 6):
    """A random piecewise-linear intensity curve on [0, 1]: ``knots`` evenly spaced points
    with values drawn uniformly from [0, 1], so almost always non-monotone. Training's
    task augmentations (inversion, brightness/contrast, blur, noise, Sobel edges) are all
    monotone or local, so tasks seen through such a curve stand in for an unseen domain."""
    import numpy as np

    xs = np.linspace(0.0, 1.0, knots)
    ys = np.random.default_rng(seed).uniform(0.0, 1.0, knots)
    return lambda a: np.interp(a, xs, ys).astype(np.float32)


def remap_task(task, seed: int):
    """``task`` with every grey image (pool and queries) passed through one
    :func:`remap_curve`, seeded by ``seed`` and the task's name; colour images are dropped
    (the scripts using this work on grey images). Labels are unchanged."""
    import dataclasses
    import zlib

    curve = remap_curve(zlib.crc32(f"{seed}/{task.name}".encode()))
    return dataclasses.replace(task, pool_images=curve(task.pool_images),
                               query_images=curve(task.query_images),
                               pool_colour=None, query_colour=None)


def as_images(grey, colour, indices: Sequence[int]) -> list:
    """Index slices as ``segment`` takes files: 2D grey, or (H, W, 3) where colour is stored."""
    if colour is None:
        return [grey[i] for i in indices]
    return [colour[i].transpose(1, 2, 0) for i in indices]


def labelled_volumes(dataset: Path) -> list[tuple[Path, Path]]:
    """(image, label) files of an nnU-Net dataset folder (imagesTr/*_0000, labelsTr/)."""
    pairs = []
    for image in sorted((dataset / "imagesTr").glob("*_0000.nii*")):
        stem = image.name.split("_0000.nii")[0]
        label = next(iter((dataset / "labelsTr").glob(f"{stem}.nii*")), None)
        if label is not None:
            pairs.append((image, label))
    return pairs


def add_volume_options(parser: argparse.ArgumentParser, json_default: Path, queries: int,
                       draws: int) -> None:
    """The dataset argument and --model, --supports, --queries, --draws, --modality, --json."""
    parser.add_argument("dataset", type=Path, help="nnU-Net dataset folder (imagesTr, labelsTr)")
    parser.add_argument("--model", default=None, help="registry name or weights (default model)")
    parser.add_argument("--supports", type=int, default=3, help="support volumes per draw")
    parser.add_argument("--queries", type=int, default=queries, help="query volumes per draw")
    parser.add_argument("--draws", type=int, default=draws)
    parser.add_argument("--modality", default="other", choices=("ct", "mr", "other"))
    parser.add_argument("--json", default=str(json_default))


def volume_setup(doc: str, json_default: Path, queries: int, draws: int,
                 argv: list[str] | None):
    """Parse a volume script's options; return (args, the dataset's labelled volumes, model)."""
    import incontext

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_volume_options(parser, json_default, queries=queries, draws=draws)
    args = parser.parse_args(argv)
    model = incontext.load_model(args.model) if args.model else incontext.load_model()
    return args, labelled_volumes(args.dataset), model


def volume_draw(pairs: list[tuple[Path, Path]], draw: int, supports: int, queries: int):
    """Draw ``draw``'s support volumes (images, label maps, the default slicing axis, their
    files) and its query (image, label) files, disjoint, from a seeded permutation."""
    import numpy as np

    from incontext.io import load_image
    from incontext.volumes import choose_axis

    if len(pairs) < supports + queries:
        raise SystemExit(f"{len(pairs)} labelled volumes, need {supports + queries}")
    order = np.random.default_rng(draw).permutation(len(pairs))
    sup = [pairs[i] for i in order[:supports]]
    images = [load_image(p).data for p, _ in sup]
    labels = [np.rint(load_image(q, as_label=True).data).astype(np.int64) for _, q in sup]
    axis = choose_axis(labels, [load_image(p).nifti.spacing for p, _ in sup])
    return images, labels, axis, sup, [pairs[i] for i in order[supports:supports + queries]]


def write_task_table(args: argparse.Namespace, results: dict[str, dict]) -> None:
    """Print :func:`dataset_table` of ``results`` and write them, the table and the run's
    options to ``args.json`` (for the scripts built on :func:`model_task_parser`)."""
    by_dataset, mean = dataset_table(results)
    write_json(args.json, {"support_size": args.support_size, "repeats": args.repeats,
                           "queries_per_task": args.queries_per_task,
                           "query_split": args.query_split, "model": args.model or "default",
                           "mean": mean, "datasets": by_dataset, "tasks": results})


def run_scored_tasks(args: argparse.Namespace, parser: argparse.ArgumentParser, run_task,
                     score_row, shown) -> None:
    """For each task of :func:`pool_tasks`: ``run_task(task)`` (under inference mode) gives
    one row per draw, ``score_row(row)`` its {variant: Dice} (0..1); prints each task's
    mean of the variants for which ``shown(variant)`` holds, then :func:`write_task_table`."""
    import time

    import numpy as np
    import torch

    results: dict[str, dict] = {}
    for name, task in pool_tasks(args):
        start = time.perf_counter()
        with torch.inference_mode():
            rows = run_task(task)
        scored = [score_row(r) for r in rows]
        scores = {k: float(np.mean([s[k] for s in scored])) for k in scored[0]}
        results[name] = {"dataset": task.dataset, "rows": rows, "scores": scores}
        print(f"{name:45s} " + " ".join(f"{k}={100 * v:5.1f}" for k, v in scores.items()
                                        if shown(k))
              + f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    if not results:
        parser.error("no task matched --tasks")
    write_task_table(args, results)


def dataset_table(results: dict[str, dict]) -> tuple[dict, dict]:
    """Per-dataset and overall means (x 100) of each task's ``scores``; prints them as a
    Markdown table. ``results``: task -> {"dataset": ..., "scores": {variant: 0..1}}."""
    import numpy as np

    datasets = sorted({r["dataset"] for r in results.values()})
    names = list(next(iter(results.values()))["scores"])
    by_dataset = {d: {v: 100 * float(np.mean([r["scores"][v] for r in results.values()
                                               if r["dataset"] == d])) for v in names}
                  for d in datasets}
    mean = {v: float(np.mean([by_dataset[d][v] for d in datasets])) for v in names}
    print("\n| variant | " + " | ".join(datasets) + " | mean |")
    print("|---|" + "---:|" * (len(datasets) + 1))
    for v in names:
        print(f"| {v} | " + " | ".join(f"{by_dataset[d][v]:.1f}" for d in datasets)
              + f" | {mean[v]:.2f} |")
    return by_dataset, mean


def write_json(path: str | Path, data: dict) -> None:
    """``data`` as indented JSON at ``path``, through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
