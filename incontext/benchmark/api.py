"""``run_benchmark``: the held-out benchmark as one Python call."""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from incontext.atomic import check_output_folder
from incontext.baselines import SupervisedUNet
from incontext.benchmark.methods import load_model_method, make_baselines, resolve_baselines
from incontext.benchmark.protocol import QUERY_SPLITS, ProtocolError, load_task
from incontext.benchmark.results import BenchmarkResults
from incontext.benchmark.runner import BenchmarkConfig, RowCache, run_task
from incontext.data import TaskIndex

DEFAULT_SUPPORT_SIZES = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_ENSEMBLES = (1, 5)


def _positive_ints(values: Sequence[int], what: str) -> list[int]:
    out = sorted({int(v) for v in values})
    if not out or out[0] < 1:
        raise ValueError(f"{what}: need one or more integers >= 1, got {list(values)}")
    return out


def _evaluation_masks(index: TaskIndex, dataset: str) -> set[str]:
    """Labels a dataset records as evaluation masks (e.g. DRIVE's field of view)."""
    try:
        extra = index.dataset_attrs(dataset).get("extra", "{}")
        extra = json.loads(extra) if isinstance(extra, str) else dict(extra or {})
    except (KeyError, ValueError, TypeError):
        return set()
    mask = extra.get("evaluation_mask")
    return {mask} if isinstance(mask, str) else set(mask or [])


def select_tasks(index: TaskIndex, patterns: Sequence[str] | None) -> list[str]:
    """Task names matching any glob pattern.

    Without patterns: every task except those whose label the dataset records as an
    evaluation mask (``extra["evaluation_mask"]``, e.g. DRIVE's field of view), which
    is not a segmentation target; a pattern that names such a task includes it.
    """
    names = [t.name for t in index.tasks]
    if not patterns:
        return [t.name for t in index.tasks
                if t.label not in _evaluation_masks(index, t.dataset)]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"no task matches {list(patterns)}; tasks: {names}")
    return chosen


def _device_of(method: Any) -> str | None:
    """Where an in-context model method's network runs (``None`` without one)."""
    first = None if method is None else next(method.model.parameters(), None)
    return None if first is None else str(first.device)


def run_benchmark(
    index: str | os.PathLike | Sequence[str | os.PathLike] | TaskIndex,
    *,
    model: str | os.PathLike | nn.Module | None = None,
    baselines: str | Sequence[str] | None = "all",
    baseline_settings: Mapping[str, Mapping[str, Any]] | None = None,
    support_sizes: Sequence[int] = DEFAULT_SUPPORT_SIZES,
    ensembles: Sequence[int] = DEFAULT_ENSEMBLES,
    repeats: int = 5,
    method_repeats: Mapping[str, int] | None = None,
    queries_per_task: int | None = None,
    query_split: str = "test",
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    tasks: Sequence[str] | None = None,
    methods: Sequence[Any] = (),
    model_tiles: int | str = 1,
    model_threshold: float | str = 0.5,
    model_tta: int = 1,
    model_colour: str = "luma",
    model_nearest: int | str | None = None,
    model_hand_over: bool = False,
    model_support_flips: str = "off",
    model_refine: str = "off",
    model_device: str = "cpu",
    baseline_device: str = "cpu",
    progress: bool = True,
    plots: bool = True,
    console: Any = None,
) -> BenchmarkResults:
    """Benchmark the model and baselines on the held-out tasks of ``index``.

    ``model``: None = the default model (baselines only, with a note, when none is
    shipped), ``"none"`` = no model, a registry name or weights path, or an ``nn.Module``.
    ``baselines``: ``"all"``, ``"a,b"``, a list, or None; ``baseline_settings`` =
    {name: {setting: value}}. ``method_repeats`` overrides ``repeats`` per method.
    ``methods``: extra objects with ``name``, ``describe()`` and ``predict(...)``.
    ``model_tiles`` > 1 runs the model on tiles (:mod:`incontext.tiling`); ``"auto"`` /
    ``"autoG"`` choose 1..2 / 1..G per task on the supports; rows are named
    ``<model>-tiles<g>`` / ``-tiles-auto`` / ``-tiles-autoG``. ``model_threshold`` other than 0.5
    cuts the model's
    probabilities there (``"auto"``: chosen per task and draw on the supports,
    :mod:`incontext.calibration`); rows named ``<model>-thr-auto`` / ``-thr<t>``.
    ``model_tta`` > 1 averages the model over flipped/rotated copies of each task
    (:mod:`incontext.tta`); rows named ``<model>-...-tta<n>``. ``model_colour`` other than
    ``"luma"`` renders colour tasks (indexes with a ``colour`` array) to grey another way,
    ``"auto"`` choosing per task and draw on the supports (:mod:`incontext.colour`); rows
    named ``<model>-...-colour-<c>``. ``model_nearest`` = k runs each query with its k most
    similar supports (:mod:`incontext.support_selection`); rows named ``<model>-...-nn<k>``;
    ``"default"`` as ``segment`` does by default (rows ``<model>-...-nn-default``).
    ``model_hand_over`` lets a ``supervised-unet`` trained on the supports segment a task and
    draw when it beats the model on them (:mod:`incontext.hand_over`); rows named
    ``<model>-...-hand-over``. ``model_support_flips`` ``"on"`` adds flipped copies of the
    supports, ``"auto"`` where they segment the supports better (:mod:`incontext.support_flips`);
    rows named ``<model>-...-flips-<f>``. ``model_refine`` ``"on"`` / ``"auto"`` /
    ``"default"`` passes the model's probabilities through a pixel head fitted on the
    supports (:mod:`incontext.refine`); rows named ``<model>-...-refine-<r>``.
    ``model_device``: where a model loaded by name runs (``"auto"``, ``"cpu"``, ``"cuda"``,
    ...; :mod:`incontext.device`); ``baseline_device``: where the baselines that train a
    network (``supervised-unet``, ``-rgb``) do it; the other baselines run on the CPU.
    ``query_split="val"`` takes the queries from each task's val split instead of its test
    split: for choosing settings on a training pool without touching its test split.
    With ``out_dir`` finished rows are cached there (a rerun reuses them) and results.json,
    results.csv, report.md and plots (when matplotlib is installed) are written.
    """
    from incontext.benchmark import report

    t_start = time.perf_counter()
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if queries_per_task is not None and queries_per_task < 1:
        raise ValueError(f"queries_per_task must be >= 1, got {queries_per_task}")
    if query_split not in QUERY_SPLITS:
        raise ValueError(f"query_split must be one of {QUERY_SPLITS}, got {query_split!r}")
    if out_dir is not None:
        check_output_folder(out_dir)  # before any work
    config = BenchmarkConfig(
        support_sizes=_positive_ints(support_sizes, "support_sizes"),
        ensembles=_positive_ints(ensembles, "ensembles"),
        repeats=int(repeats), method_repeats={k: int(v) for k, v in (method_repeats or {}
                                                                     ).items()},
        queries_per_task=queries_per_task, seed=int(seed), query_split=query_split)
    if any(v < 1 for v in config.method_repeats.values()):
        raise ValueError(f"method_repeats must be >= 1, got {config.method_repeats}")

    notes: list[str] = []
    all_methods: list[Any] = []
    model_method, note = load_model_method(model, tiles=model_tiles,
                                           threshold=model_threshold, tta=model_tta,
                                           colour=model_colour, nearest=model_nearest,
                                           hand_over=model_hand_over,
                                           support_flips=model_support_flips,
                                           refine=model_refine,
                                           device=model_device)
    if note:
        notes.append(note)
        if progress:
            from rich.console import Console

            (console or Console()).print(f"[yellow]note:[/] {note}")
    if model_method is not None:
        all_methods.append(model_method)
    all_methods += make_baselines(resolve_baselines(baselines), baseline_settings,
                                  device=baseline_device)
    all_methods += list(methods)
    names = [m.name for m in all_methods]
    if not all_methods:
        raise ValueError("nothing to benchmark: no model and no baselines")
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    unknown = sorted(set(config.method_repeats) - set(names))
    if unknown:
        raise ValueError(f"method_repeats for method(s) not being run: {unknown}")

    own_index = not isinstance(index, TaskIndex)
    opened = TaskIndex.open(index) if own_index else index
    out = Path(out_dir) if out_dir is not None else None
    cache = RowCache(out / "cache") if out is not None else None
    results = BenchmarkResults(rows=[], config=config,
                               methods={m.name: m.describe() for m in all_methods},
                               indexes=[str(p) for p in opened.paths], out_dir=out, notes=notes,
                               model_device=_device_of(model_method),
                               baseline_device=next((str(m.device) for m in all_methods
                                                     if isinstance(m, SupervisedUNet)), None))
    try:
        task_names = select_tasks(opened, tasks)
        colour_users = [m.name for m in all_methods if getattr(m, "uses_colour", False)]
        if colour_users and not any(opened.has_colour(t) for t in task_names):
            note = (f"{', '.join(colour_users)}: no task has R, G, B in these indexes (grey "
                    "sources, or indexes built before colour was stored: rebuild them with "
                    "`incontext index build`), so they ran on the grey images")
            notes.append(note)
            if progress:
                from rich.console import Console

                (console or Console()).print(f"[yellow]note:[/] {note}")
        rows_per_task = sum(len(config.support_sizes)
                            * (len(config.ensembles) if getattr(m, "ensembles", False) else 1)
                            for m in all_methods)
        with report.progress_bar(progress, console) as bar:
            t_tasks = bar.add_task("tasks", total=len(task_names))
            t_rows = bar.add_task("rows", total=len(task_names) * rows_per_task)

            def on_row(_: str, info: dict[str, Any]) -> None:
                if info["cached"]:
                    results.cached_rows += 1
                else:
                    results.computed_rows += 1
                row = info["row"]
                if info.get("example") is not None:
                    results.examples[(row.task, row.method, row.support_size,
                                      row.ensemble)] = info["example"]
                bar.advance(t_rows)

            for name in task_names:
                bar.update(t_tasks, description=f"tasks [dim]{name}[/]")
                try:
                    data = load_task(opened, name, queries_per_task=queries_per_task,
                                     seed=config.seed, query_split=query_split)
                except ProtocolError as exc:
                    results.skipped_tasks[name] = str(exc)
                    bar.advance(t_rows, rows_per_task)
                    bar.advance(t_tasks)
                    continue
                for method in all_methods:
                    bar.update(t_rows, description=f"rows [dim]{method.name}[/]")
                    results.rows += run_task(method, data, config, cache, on_row)
                bar.advance(t_tasks)
                if out is not None:  # partial results survive an interrupted run
                    report.write_tables(results, out)
    finally:
        if own_index:
            opened.close()
    results.seconds = time.perf_counter() - t_start
    if out is not None:
        report.write_reports(results, out, plots=plots)
    return results
