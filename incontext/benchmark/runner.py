"""Run methods on held-out tasks under the protocol; cache each finished row.

A *row* is one (task, method, support size N, ensemble K). Per support draw, Dice (and
IoU, HD95) is computed per query on the 0.5-thresholded probabilities and averaged over
queries; the row holds the mean and std of those per-draw means over draws. Rows are
written to ``out/cache/`` as soon as they finish, keyed by everything that determines
them, so rerunning an interrupted benchmark recomputes only the missing rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from incontext.atomic import atomic_write, atomic_write_text
from incontext.benchmark.protocol import (
    Draw,
    TaskData,
    ensemble_members,
    support_draws,
)
from incontext.metrics import dice, hd95, iou

THRESHOLD = 0.5
CACHE_VERSION = 1


@dataclass
class Row:
    """The result of one (task, method, N, ensemble)."""

    method: str
    dataset: str
    task: str
    support_size: int  # N requested
    ensemble: int  # K requested (1 = no ensembling)
    draws: int  # support draws evaluated (1 when the pool is <= N)
    support_used: int  # supports per prediction (N, or the whole pool when smaller)
    pool_size: int
    pool_limited: bool
    members: int  # distinct ensemble members per draw (1 when pool-limited)
    queries: int
    dice_mean: float  # mean over draws of the per-draw mean over queries
    dice_std: float  # std over draws (0 with one draw)
    iou_mean: float
    hd95_px: float  # mean over draws of the mean over queries where HD95 is defined
    hd95_mm: float | None  # same in mm; None when the index records no spacing
    hd95_undefined: int  # query evaluations with an empty prediction or target (all draws)
    empty_targets: int  # queries whose ground truth is empty
    empty_empty: int  # query evaluations with empty target and prediction (Dice 1), all draws
    seconds: float  # prediction time of this row (all draws and members)
    seconds_per_query: float  # seconds / (draws * queries)
    draw_dice: list[float] = field(default_factory=list)
    # per draw, what segmented the queries when the method chooses (``--model-hand-over``):
    # "model", "unet", or "mixed" (ensemble members chose differently); empty otherwise
    draw_methods: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchmarkConfig:
    """Everything besides the methods that determines the results."""

    support_sizes: list[int]
    ensembles: list[int]
    repeats: int
    method_repeats: dict[str, int]
    queries_per_task: int | None
    seed: int
    threshold: float = THRESHOLD
    query_split: str = "test"  # "val": tuning on a training pool (protocol.QUERY_SPLITS)

    def repeats_for(self, method: str) -> int:
        return int(self.method_repeats.get(method, self.repeats))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60]


def row_key(task: TaskData, method: Any, n: int, ensemble: int, config: BenchmarkConfig
            ) -> dict[str, Any]:
    """Everything a cached row depends on."""
    return {
        "version": CACHE_VERSION, "task": task.name, "dataset": task.dataset,
        "method": method.describe(), "support_size": n, "ensemble": ensemble,
        "repeats": config.repeats_for(method.name), "seed": config.seed,
        "queries_per_task": config.queries_per_task, "threshold": config.threshold,
        "pool_size": task.pool_size, "total_queries": task.total_queries,
        "pool_subjects": hashlib.sha256("\n".join(task.pool_subjects).encode()).hexdigest(),
        "query_subjects": hashlib.sha256("\n".join(task.query_subjects).encode()).hexdigest(),
    }


class RowCache:
    """One JSON file per finished row under ``root`` (plus an overlay example .npz)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        name = f"{_slug(key['task'])}-{_slug(key['method'].get('name', 'm'))}"
        return self.root / f"{name}-N{key['support_size']}-K{key['ensemble']}-" \
                           f"{digest.hexdigest()[:16]}.json"

    def get(self, key: dict[str, Any]) -> Row | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.get("key") != json.loads(json.dumps(key, default=str)):
                return None
            return Row(**data["row"])
        except (OSError, ValueError, TypeError, KeyError):
            return None  # damaged or outdated: recompute

    def put(self, key: dict[str, Any], row: Row, example: dict[str, np.ndarray] | None) -> None:
        path = self.path(key)
        if example is not None:
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, **example)

            atomic_write(path.with_suffix(".npz"), write)
        text = json.dumps({"key": key, "row": row.to_dict()}, indent=1, default=str)
        atomic_write_text(path, text)

    def example(self, key: dict[str, Any]) -> dict[str, np.ndarray] | None:
        path = self.path(key).with_suffix(".npz")
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            return None


def _uncertainty(members: list[np.ndarray], mean: np.ndarray) -> np.ndarray:
    """Ensemble std (K > 1), else the Bernoulli std 2*sqrt(p(1-p)) scaled to [0, 1]."""
    if len(members) > 1:
        return np.stack(members).std(axis=0)
    return 2.0 * np.sqrt(np.clip(mean * (1.0 - mean), 0.0, None))


def example_query(task: TaskData) -> int:
    """The query shown in overlays: the one with the most foreground (first on ties)."""
    return int(np.argmax(task.query_labels.reshape(task.n_queries, -1).sum(axis=1)))


def score_draw(prob: np.ndarray, task: TaskData, threshold: float = THRESHOLD
               ) -> dict[str, Any]:
    """Per-query metrics of one draw's probabilities against the task's queries."""
    pred = prob >= threshold
    target = task.query_labels > 0.5
    d = np.asarray(dice(pred, target))
    h = np.asarray(hd95(pred, target))
    hmm = None if task.query_spacing is None else np.asarray(hd95(pred, target,
                                                                  task.query_spacing))
    empty_t = ~target.reshape(target.shape[0], -1).any(axis=1)
    empty_p = ~pred.reshape(pred.shape[0], -1).any(axis=1)
    return {"dice": d, "iou": np.asarray(iou(pred, target)), "hd95": h, "hd95_mm": hmm,
            "empty_empty": int((empty_t & empty_p).sum()), "empty_targets": int(empty_t.sum())}


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def make_row(method: str, task: TaskData, n: int, ensemble: int, draws: Sequence[Draw],
             members: int, scores: Sequence[dict[str, Any]], seconds: float,
             draw_methods: Sequence[str] = ()) -> Row:
    """Aggregate per-draw scores: queries -> mean per draw -> mean/std over draws."""
    per_draw = [float(s["dice"].mean()) for s in scores]
    hd_px = [_nanmean(s["hd95"]) for s in scores]
    hd_mm = None if scores[0]["hd95_mm"] is None else _nanmean(
        [_nanmean(s["hd95_mm"]) for s in scores])
    q = task.n_queries
    return Row(
        method=method, dataset=task.dataset, task=task.name, support_size=int(n),
        ensemble=int(ensemble), draws=len(draws), support_used=int(draws[0].indices.size),
        pool_size=task.pool_size, pool_limited=bool(draws[0].pool_limited),
        members=int(members), queries=q,
        dice_mean=float(np.mean(per_draw)), dice_std=float(np.std(per_draw)),
        iou_mean=float(np.mean([s["iou"].mean() for s in scores])),
        hd95_px=_nanmean(hd_px), hd95_mm=hd_mm,
        hd95_undefined=int(sum(int(np.isnan(s["hd95"]).sum()) for s in scores)),
        empty_targets=int(scores[0]["empty_targets"]),
        empty_empty=int(sum(s["empty_empty"] for s in scores)),
        seconds=float(seconds), seconds_per_query=float(seconds / max(len(draws) * q, 1)),
        draw_dice=per_draw, draw_methods=list(draw_methods),
    )


def run_method_on_task(method: Any, task: TaskData, n: int, ensembles: Sequence[int],
                       config: BenchmarkConfig) -> dict[int, tuple[Row, dict[str, np.ndarray]]]:
    """Rows for ``ensembles`` (K values) of one method, task and support size N.

    Ensemble members are predicted once per draw and shared: the K row averages the first K
    members, and its time counts only those members.
    """
    if hasattr(method, "set_task"):  # text-prompted methods need the task's label name
        method.set_task(task)
    draws = support_draws(task.name, task.pool_size, n, config.repeats_for(method.name),
                          config.seed)
    k_max = max(ensembles)
    show = example_query(task)
    member_probs: list[list[np.ndarray]] = []
    member_secs: list[list[float]] = []
    member_methods: list[list[str]] = []  # per draw and member, what predicted (when chosen)
    colour = getattr(method, "uses_colour", False) and task.pool_colour is not None
    for draw in draws:
        probs, secs, methods = [], [], []
        for idx in ensemble_members(draw, task.pool_size, k_max):
            extra = ({"support_colour": task.pool_colour[idx], "query_colour": task.query_colour}
                     if colour else {})
            t0 = time.perf_counter()
            p = method.predict(task.pool_images[idx], task.pool_labels[idx], task.query_images,
                               seed=draw.seed, **extra)
            secs.append(time.perf_counter() - t0)
            if getattr(method, "last_method", None) is not None:
                methods.append(method.last_method)
            p = np.asarray(p, dtype=np.float32)
            if p.shape != task.query_images.shape:
                raise RuntimeError(f"{method.name}: predicted shape {p.shape} for queries "
                                   f"{task.query_images.shape} on task {task.name!r}")
            probs.append(p)
        member_probs.append(probs)
        member_secs.append(secs)
        member_methods.append(methods)
    out = {}
    for k in ensembles:
        scores, seconds, example = [], 0.0, None
        for r, (probs, secs) in enumerate(zip(member_probs, member_secs, strict=True)):
            used = probs[:k]
            mean = used[0] if len(used) == 1 else np.mean(used, axis=0)
            seconds += float(sum(secs[:k]))
            scores.append(score_draw(mean, task, config.threshold))
            if r == 0:
                unc = _uncertainty([u[show] for u in used], mean[show])
                example = {
                    "image": (task.query_images[show] * 255).round().astype(np.uint8),
                    "label": (task.query_labels[show] > 0.5).astype(np.uint8),
                    "prob": (mean[show] * 255).round().astype(np.uint8),
                    "uncertainty": (np.clip(unc, 0, 1) * 255).round().astype(np.uint8),
                }
        members = len(member_probs[0][:k])
        chosen = [_one_method(m[:k]) for m in member_methods if m]
        out[k] = (make_row(method.name, task, n, k, draws, members, scores, seconds, chosen),
                  example)
    return out


def _one_method(methods: Sequence[str]) -> str:
    """One draw's members' choices as one word: the shared choice, or "mixed"."""
    return methods[0] if len(set(methods)) == 1 else "mixed"


ProgressHook = Callable[[str, dict[str, Any]], None]


def run_task(method: Any, task: TaskData, config: BenchmarkConfig, cache: RowCache | None,
             on_row: ProgressHook | None = None) -> list[Row]:
    """All rows of one method on one task (cached rows reused, missing ones computed)."""
    ks = sorted(set(config.ensembles)) if getattr(method, "ensembles", False) else [1]
    rows: list[Row] = []
    for n in config.support_sizes:
        keys = {k: row_key(task, method, n, k, config) for k in ks}
        cached = {k: cache.get(key) for k, key in keys.items()} if cache else {}
        missing = [k for k in ks if cached.get(k) is None]
        fresh = run_method_on_task(method, task, n, missing, config) if missing else {}
        for k in ks:
            if k in fresh:
                row, example = fresh[k]
                if cache:
                    cache.put(keys[k], row, example)
            else:
                row = cached[k]
            rows.append(row)
            if on_row:
                example = cache.path(keys[k]).with_suffix(".npz") if cache else None
                on_row("row", {"row": row, "cached": k not in fresh, "example": example})
    return rows
