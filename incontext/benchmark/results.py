"""Benchmark results and their aggregation: tasks -> datasets -> headline.

Row Dice is already the mean over queries, then over draws (see runner). Here tasks are
averaged within a dataset (each task weighs the same) and datasets are averaged for the
headline (each dataset weighs the same, whatever its number of tasks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from incontext.benchmark.runner import BenchmarkConfig, Row


def _nanmean(values) -> float:
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def method_label(method: str, ensemble: int) -> str:
    """``method`` for K = 1, ``method (ens K)`` otherwise."""
    return method if ensemble == 1 else f"{method} (ens {ensemble})"


@dataclass
class BenchmarkResults:
    """All rows of a benchmark run plus what produced them."""

    rows: list[Row]
    config: BenchmarkConfig
    methods: dict[str, dict[str, Any]]  # name -> describe()
    indexes: list[str]
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    skipped_tasks: dict[str, str] = field(default_factory=dict)  # task -> reason
    seconds: float = 0.0
    computed_rows: int = 0
    cached_rows: int = 0
    model_device: str | None = None  # where the in-context model ran in this invocation
    baseline_device: str | None = None  # where supervised-unet(-rgb) trained, when they ran
    # (task, method, N, ensemble) -> overlay example .npz in the cache
    examples: dict[tuple[str, str, int, int], Path] = field(default_factory=dict)

    # -- aggregation --------------------------------------------------------------------
    def variants(self) -> list[tuple[str, int]]:
        """(method, ensemble) pairs in first-seen order."""
        return list(dict.fromkeys((r.method, r.ensemble) for r in self.rows))

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.rows))

    def support_sizes(self) -> list[int]:
        return sorted({r.support_size for r in self.rows})

    def dataset_summary(self) -> list[dict[str, Any]]:
        """One entry per (method, ensemble, N, dataset): the mean over the dataset's tasks."""
        groups: dict[tuple, list[Row]] = {}
        for r in self.rows:
            groups.setdefault((r.method, r.ensemble, r.support_size, r.dataset), []).append(r)
        out = []
        for (method, k, n, dataset), rows in groups.items():
            out.append({
                "method": method, "ensemble": k, "support_size": n, "dataset": dataset,
                "tasks": len(rows),
                "dice_mean": float(np.mean([r.dice_mean for r in rows])),
                "dice_std": float(np.mean([r.dice_std for r in rows])),
                "hd95_px": _nanmean(r.hd95_px for r in rows),
                "hd95_mm": _nanmean(r.hd95_mm for r in rows),
                "queries": int(sum(r.queries for r in rows)),
                "empty_empty": int(sum(r.empty_empty for r in rows)),
                "pool_limited_tasks": int(sum(r.pool_limited for r in rows)),
                "seconds": float(sum(r.seconds for r in rows)),
            })
        return out

    def headline(self) -> list[dict[str, Any]]:
        """One entry per (method, ensemble, N): the mean over datasets of the dataset means."""
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for d in self.dataset_summary():
            groups.setdefault((d["method"], d["ensemble"], d["support_size"]), []).append(d)
        out = []
        for (method, k, n), ds in groups.items():
            out.append({
                "method": method, "ensemble": k, "support_size": n, "datasets": len(ds),
                "dice_mean": float(np.mean([d["dice_mean"] for d in ds])),
                "per_dataset": {d["dataset"]: d["dice_mean"] for d in ds},
                "hd95_px": _nanmean(d["hd95_px"] for d in ds),
                "seconds": float(sum(d["seconds"] for d in ds)),
            })
        return out

    def timing(self) -> list[dict[str, Any]]:
        """Per (method, ensemble): total prediction seconds and seconds per query."""
        out = []
        for method, k in self.variants():
            rows = [r for r in self.rows if r.method == method and r.ensemble == k]
            evals = sum(r.draws * r.queries for r in rows)
            secs = sum(r.seconds for r in rows)
            out.append({"method": method, "ensemble": k, "seconds": float(secs),
                        "predictions": int(sum(r.draws for r in rows)),
                        "query_evaluations": int(evals),
                        "seconds_per_query": float(secs / evals) if evals else float("nan")})
        return out

    def dice(self, method: str, support_size: int, dataset: str | None = None,
             ensemble: int = 1) -> float:
        """Headline Dice (dataset=None) or one dataset's Dice for a method and N."""
        if dataset is None:
            for h in self.headline():
                if (h["method"], h["ensemble"], h["support_size"]) == (method, ensemble,
                                                                       support_size):
                    return h["dice_mean"]
        else:
            for d in self.dataset_summary():
                if (d["method"], d["ensemble"], d["support_size"], d["dataset"]) == (
                        method, ensemble, support_size, dataset):
                    return d["dice_mean"]
        raise KeyError(f"no result for {method!r} (ens {ensemble}) N={support_size}"
                       + (f" on {dataset!r}" if dataset else ""))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "format": "incontext-benchmark", "version": 1,
            "config": asdict(self.config), "indexes": self.indexes,
            "methods": self.methods, "notes": self.notes,
            "skipped_tasks": self.skipped_tasks,
            "run": {"seconds": self.seconds, "computed_rows": self.computed_rows,
                    "cached_rows": self.cached_rows, "model_device": self.model_device,
                    "baseline_device": self.baseline_device},
            "protocol": {
                "support_split": "train", "query_split": self.config.query_split,
                "aggregation": "Dice per query -> mean over queries -> mean/std over draws "
                               "-> mean over tasks of a dataset -> mean over datasets",
                "threshold": self.config.threshold,
                "empty_vs_empty": "Dice 1 (counted in empty_empty)",
            },
            "headline": self.headline(), "datasets": self.dataset_summary(),
            "timing": self.timing(), "rows": [r.to_dict() for r in self.rows],
        }
