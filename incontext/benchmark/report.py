"""Benchmark outputs: results.json, results.csv, rich tables, PNG plots and report.md.

Plots need matplotlib (the optional ``plots`` extra); without it everything else is still
written and report.md says the plots were skipped.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from incontext.atomic import atomic_write, atomic_write_text
from incontext.benchmark.results import BenchmarkResults, method_label

CSV_COLUMNS = (
    "method", "ensemble", "dataset", "task", "support_size", "draws", "support_used",
    "pool_size", "pool_limited", "members", "queries", "dice_mean", "dice_std", "iou_mean",
    "hd95_px", "hd95_mm", "hd95_undefined", "empty_targets", "empty_empty", "seconds",
    "seconds_per_query",
)
PLOT_FILES = ("dice_vs_support.png", "dataset_bars.png", "overlays.png")


# ---------------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def progress_bar(enabled: bool = True, console: Console | None = None) -> Iterator[Progress]:
    """A rich progress display (disabled: same API, prints nothing)."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                   disable=not enabled, transient=False)
    with bar:
        yield bar


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_sizes(results: BenchmarkResults) -> list[int]:
    """Support sizes for the per-dataset tables: 16 and 64 when run, else the largest."""
    sizes = results.support_sizes()
    chosen = [n for n in (16, 64) if n in sizes]
    return chosen or sizes[-1:]


def _fmt(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


# ---------------------------------------------------------------------------------- tables

def write_tables(results: BenchmarkResults, out: Path) -> None:
    """results.json and results.csv (atomically)."""
    out = Path(out)
    atomic_write_text(out / "results.json",
                      json.dumps(_clean(results.to_dict()), indent=1, allow_nan=False) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in results.rows:
        d = row.to_dict()
        writer.writerow({k: ("" if d[k] is None or (isinstance(d[k], float)
                                                    and math.isnan(d[k])) else d[k])
                         for k in CSV_COLUMNS})
    atomic_write_text(out / "results.csv", buf.getvalue())


def dataset_table(results: BenchmarkResults, n: int) -> Table:
    """Dice x100 per dataset (mean over its tasks) and their mean, one row per method."""
    datasets = results.datasets()
    table = Table(title=f"Dice ×100 at N = {n} (tasks averaged per dataset; std over draws)")
    table.add_column("method")
    for d in datasets:
        table.add_column(d, justify="right")
    table.add_column("mean", justify="right", style="bold")
    summary = {(s["method"], s["ensemble"], s["dataset"]): s
               for s in results.dataset_summary() if s["support_size"] == n}
    for method, k in results.variants():
        cells = []
        for d in datasets:
            s = summary.get((method, k, d))
            cells.append("–" if s is None else
                         f"{_fmt(s['dice_mean'])} ± {_fmt(s['dice_std'])}")
        try:
            mean = _fmt(results.dice(method, n, ensemble=k))
        except KeyError:
            mean = "–"
        table.add_row(method_label(method, k), *cells, mean)
    return table


def curve_table(results: BenchmarkResults) -> Table:
    """Headline Dice x100 (mean over datasets) for every support size."""
    sizes = results.support_sizes()
    table = Table(title="Mean Dice ×100 over datasets, by support size N")
    table.add_column("method")
    for n in sizes:
        table.add_column(f"N={n}", justify="right")
    head = {(h["method"], h["ensemble"], h["support_size"]): h for h in results.headline()}
    for method, k in results.variants():
        table.add_row(method_label(method, k),
                      *[_fmt(head[(method, k, n)]["dice_mean"]) if (method, k, n) in head
                        else "–" for n in sizes])
    return table


def timing_table(results: BenchmarkResults) -> Table:
    table = Table(title="Prediction time")
    for col in ("method", "predictions", "seconds", "ms / query"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for t in results.timing():
        table.add_row(method_label(t["method"], t["ensemble"]), str(t["predictions"]),
                      f"{t['seconds']:.1f}", _fmt(t["seconds_per_query"], 1000.0, 2))
    return table


def print_tables(results: BenchmarkResults, console: Console | None = None) -> None:
    """The per-dataset tables, the support-size curve and timing, in the terminal."""
    console = console or Console()
    for n in report_sizes(results):
        console.print(dataset_table(results, n))
    console.print(curve_table(results))
    console.print(timing_table(results))
    for note in results.notes:
        console.print(f"[yellow]note:[/] {note}")
    for task, why in results.skipped_tasks.items():
        console.print(f"[yellow]skipped[/] {task}: {why}")


# ---------------------------------------------------------------------------------- plots

def _save_figure(fig: Any, path: Path) -> None:
    def write(tmp: Path) -> None:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")

    atomic_write(path, write)


def write_plots(results: BenchmarkResults, out: Path) -> list[str]:
    """The PNG plots; returns the file names written ([] without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    head = results.headline()
    if not head:
        return written
    # 1. headline Dice vs support size, one line per method
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, k in results.variants():
        pts = sorted((h["support_size"], h["dice_mean"]) for h in head
                     if h["method"] == method and h["ensemble"] == k)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o",
                linestyle="--" if k > 1 else "-", label=method_label(method, k))
    ax.set_xscale("log", base=2)
    sizes = results.support_sizes()
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_xlabel("support size N")
    ax.set_ylabel("Dice ×100 (mean over datasets)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    # below the axes: inside, long method names covered the curves near the top
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    _save_figure(fig, out / "dice_vs_support.png")
    plt.close(fig)
    written.append("dice_vs_support.png")
    # 2. per-dataset bars at one N
    n = report_sizes(results)[-1]
    datasets = results.datasets()
    variants = results.variants()
    summary = {(s["method"], s["ensemble"], s["dataset"]): s
               for s in results.dataset_summary() if s["support_size"] == n}
    fig, ax = plt.subplots(figsize=(max(6.4, 1.6 * len(datasets) * max(1, len(variants)) / 3),
                                    4.2))
    width = 0.8 / max(len(variants), 1)
    x = np.arange(len(datasets))
    for i, (method, k) in enumerate(variants):
        vals = [100 * summary[(method, k, d)]["dice_mean"] if (method, k, d) in summary
                else np.nan for d in datasets]
        errs = [100 * summary[(method, k, d)]["dice_std"] if (method, k, d) in summary
                else 0.0 for d in datasets]
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, vals, width, yerr=errs,
               capsize=2, label=method_label(method, k))
    ax.set_xticks(x, datasets)
    ax.set_ylabel(f"Dice ×100 at N = {n}")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    _save_figure(fig, out / "dataset_bars.png")
    plt.close(fig)
    written.append("dataset_bars.png")
    # 3. query overlays: one example query per dataset, one row per method
    if write_overlays(results, out, n, plt):
        written.append("overlays.png")
    return written


def _load_example(path: Path | None) -> dict[str, np.ndarray] | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError):
        return None


def write_overlays(results: BenchmarkResults, out: Path, n: int, plt: Any) -> bool:
    """overlays.png: per dataset (its first task) and method: image, truth, prediction,
    uncertainty of the query with the most foreground, support draw 0."""
    panels = []
    for dataset in results.datasets():
        task = next(r.task for r in results.rows if r.dataset == dataset)
        for method, k in results.variants():
            ex = _load_example(results.examples.get((task, method, n, k)))
            if ex is not None:
                panels.append((task, method_label(method, k), ex))
    if not panels:
        return False
    fig, axes = plt.subplots(len(panels), 4, figsize=(8, 2.1 * len(panels)), squeeze=False,
                             layout="constrained")
    for row, (task, label, ex) in enumerate(panels):
        img = ex["image"].astype(np.float32) / 255
        prob = ex["prob"].astype(np.float32) / 255
        items = [("image", img, "gray", None), ("ground truth", img, "gray", ex["label"]),
                 ("prediction", img, "gray", prob >= 0.5),
                 ("uncertainty", ex["uncertainty"].astype(np.float32) / 255, "magma", None)]
        for col, (title, base, cmap, mask) in enumerate(items):
            ax = axes[row, col]
            ax.imshow(base, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if mask is not None:
                ax.imshow(np.ma.masked_where(~mask.astype(bool), mask.astype(float)),
                          cmap="autumn", alpha=0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(f"{label}\n{task}", fontsize=7)
    fig.suptitle(f"Example queries at N = {n} (draw 0)", fontsize=10)
    _save_figure(fig, out / "overlays.png")
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------- report.md

def _devices_sentence(results: BenchmarkResults) -> str:
    """'; the model ran on `cpu`, the U-Net baselines trained on `cuda:0`', or ''."""
    parts = []
    if results.model_device:
        parts.append(f"the model ran on `{results.model_device}`")
    if results.baseline_device:
        parts.append(f"the U-Net baselines trained on `{results.baseline_device}`")
    return "; " + ", ".join(parts) if parts else ""


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(results: BenchmarkResults, plots: list[str]) -> str:
    """report.md text."""
    c = results.config
    out = ["# Held-out benchmark", ""]
    out.append(f"Indexes: {', '.join(f'`{p}`' for p in results.indexes)}. "
               f"Support sizes {c.support_sizes}, {c.repeats} support draws per task and N"
               + (f" (per method: {c.method_repeats})" if c.method_repeats else "")
               + f", ensembles {c.ensembles} (model only), seed {c.seed}, queries per task: "
               + (f"at most {c.queries_per_task}" if c.queries_per_task else "all") + ".")
    out.append("")
    out.append("Protocol: supports from each task's train split, queries from its "
               f"{c.query_split} split (no shared subjects); Dice per query on probabilities "
               "thresholded at "
               f"{c.threshold}, averaged over queries, then over draws (± = std over draws); "
               "tasks averaged within a dataset, datasets averaged for the mean. Empty "
               "prediction on an empty target scores Dice 1. See docs/benchmark.md.")
    out.append("")
    for note in results.notes:
        out += [f"> **Note:** {note}", ""]
    datasets = results.datasets()
    summary = {(s["method"], s["ensemble"], s["support_size"], s["dataset"]): s
               for s in results.dataset_summary()}
    for n in report_sizes(results):
        out += [f"## Dice ×100 at N = {n}", ""]
        rows = []
        for method, k in results.variants():
            cells = []
            for d in datasets:
                s = summary.get((method, k, n, d))
                cells.append("–" if s is None else
                             f"{_fmt(s['dice_mean'])} ± {_fmt(s['dice_std'])}")
            try:
                mean = _fmt(results.dice(method, n, ensemble=k))
            except KeyError:
                mean = "–"
            rows.append([method_label(method, k), *cells, f"**{mean}**"])
        out += [_md_table(["method", *datasets, "mean"], rows), ""]
    sizes = results.support_sizes()
    head = {(h["method"], h["ensemble"], h["support_size"]): h for h in results.headline()}
    out += ["## Mean Dice ×100 by support size", ""]
    out += [_md_table(["method", *[f"N={n}" for n in sizes]],
                      [[method_label(m, k), *[_fmt(head[(m, k, n)]["dice_mean"])
                                              if (m, k, n) in head else "–" for n in sizes]]
                       for m, k in results.variants()]), ""]
    if "dice_vs_support.png" in plots:
        out += ["![Dice vs support size](dice_vs_support.png)", ""]
    if "dataset_bars.png" in plots:
        out += ["![Dice per dataset](dataset_bars.png)", ""]
    if "overlays.png" in plots:
        out += ["![Example queries](overlays.png)", ""]
    if not plots:
        out += ["_Plots skipped: install the `plots` extra (matplotlib)._", ""]
    # HD95 and counts
    out += [f"## HD95 and empty masks at N = {report_sizes(results)[-1]}", ""]
    n = report_sizes(results)[-1]
    rows = []
    for r in results.rows:
        if r.support_size != n:
            continue
        rows.append([method_label(r.method, r.ensemble), r.task, _fmt(r.dice_mean),
                     _fmt(r.hd95_px, 1.0, 2), _fmt(r.hd95_mm, 1.0, 2), str(r.queries),
                     str(r.draws) + (" (whole pool)" if r.pool_limited else ""),
                     str(r.hd95_undefined), str(r.empty_targets), str(r.empty_empty)])
    out += [_md_table(["method", "task", "Dice", "HD95 px", "HD95 mm", "queries", "draws",
                       "HD95 undefined", "empty targets", "empty-empty"], rows), ""]
    out += ["HD95 is averaged over the query evaluations where both masks are non-empty; "
            "'HD95 undefined' counts the others (all draws). 'empty-empty' counts query "
            "evaluations with an empty target and prediction (all draws).", ""]
    out += ["## Time", ""]
    out += [_md_table(["method", "predictions", "seconds", "ms / query"],
                      [[method_label(t["method"], t["ensemble"]), str(t["predictions"]),
                        f"{t['seconds']:.1f}", _fmt(t["seconds_per_query"], 1000.0, 2)]
                       for t in results.timing()]), ""]
    out += ["Seconds are prediction time summed over rows (cached rows keep the time of the run "
            f"that computed them). This invocation: {results.seconds:.0f} s "
            f"({results.computed_rows} rows computed, {results.cached_rows} reused from the "
            "cache)" + _devices_sentence(results) + ".", ""]
    out += ["## Methods", ""]
    for name, desc in results.methods.items():
        out.append(f"- `{name}`: `{json.dumps(_clean(desc), sort_keys=True)}`")
    out.append("")
    if results.skipped_tasks:
        out += ["## Skipped tasks", ""]
        out += [f"- `{t}`: {why}" for t, why in results.skipped_tasks.items()] + [""]
    return "\n".join(out)


def write_reports(results: BenchmarkResults, out: Path, plots: bool = True) -> list[Path]:
    """results.json, results.csv, the plots (if possible) and report.md; returns the paths."""
    out = Path(out)
    write_tables(results, out)
    written = write_plots(results, out) if plots else []
    atomic_write_text(out / "report.md", markdown(results, written))
    return [out / "results.json", out / "results.csv", out / "report.md",
            *[out / p for p in written]]
