"""The held-out protocol: which supports and queries every method sees.

Supports come from a task's ``train`` split (the support pool), queries from its ``test``
split; the two never share a subject (checked). For each task and support size N there are
``repeats`` independent seeded draws of N pool slices (without replacement). Seeds derive
from (seed, task name, N, repeat) only, never from the method, so every method sees the
same supports and queries. When the pool has at most N slices the whole pool is the
support set, drawn once (``pool_limited``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from incontext.data import TaskIndex

SUPPORT_SPLIT = "train"
QUERY_SPLIT = "test"
# where queries may come from: "test" (the benchmark), or "val" to tune inference
# settings on a training pool without touching its test split
QUERY_SPLITS = ("test", "val")


class ProtocolError(ValueError):
    """A task cannot be benchmarked under the protocol (no queries, shared subjects, ...)."""


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (SHA-256 of their repr; independent of Python's hash())."""
    digest = hashlib.sha256(repr(tuple(parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass
class TaskData:
    """The support pool and the queries of one task, at the index resolution."""

    name: str
    dataset: str
    pool_images: np.ndarray  # (P, H, W) float32 in [0, 1]
    pool_labels: np.ndarray  # (P, H, W) float32 {0, 1}
    pool_subjects: list[str]
    query_images: np.ndarray  # (Q, H, W)
    query_labels: np.ndarray  # (Q, H, W)
    query_subjects: list[str]
    query_spacing: np.ndarray | None  # (Q, 2) mm per pixel, None unless known for all queries
    total_queries: int  # test slices before the --queries-per-task cap
    label: str = ""  # the task's label name (text-prompted methods use it)
    modality_name: str = ""  # the dataset's modality in words, e.g. "chest X-ray"
    pool_colour: np.ndarray | None = None  # (P, 3, H, W) R, G, B when the index stores colour
    query_colour: np.ndarray | None = None  # (Q, 3, H, W)

    @property
    def pool_size(self) -> int:
        return int(self.pool_images.shape[0])

    @property
    def n_queries(self) -> int:
        return int(self.query_images.shape[0])


@dataclass(frozen=True)
class Draw:
    """One support draw: ``indices`` into the pool, and the seed the methods get."""

    repeat: int
    indices: np.ndarray
    seed: int
    pool_limited: bool  # the pool had <= N slices: indices is the whole pool


def _spacing(index: TaskIndex, task: str, split: str) -> np.ndarray | None:
    """(N, 2) mm per pixel of the split's slices, or None when any is unknown."""
    spacing = index.split_spacing(task, split)
    if spacing.size == 0 or not np.isfinite(spacing).all() or (spacing <= 0).any():
        return None
    return spacing


def load_task(index: TaskIndex, task: str, *, queries_per_task: int | None = None,
              seed: int = 0, query_split: str = QUERY_SPLIT) -> TaskData:
    """Load a task's support pool (train split) and queries (``query_split``: test, or val).

    ``queries_per_task`` caps the queries with a seeded choice (same for every method).
    Raises ProtocolError when the pool or the queries are empty, or a subject is in both.
    """
    if query_split not in QUERY_SPLITS:
        raise ProtocolError(f"query split must be one of {QUERY_SPLITS}, got {query_split!r}")
    info = index.task(task)
    pool_x, pool_y, pool_ids = index.load_split(task, SUPPORT_SPLIT)
    q_x, q_y, q_ids = index.load_split(task, query_split)
    pool_c = index.load_split_colour(task, SUPPORT_SPLIT)
    q_c = index.load_split_colour(task, query_split)
    where = f"task {task!r} in {', '.join(str(p) for p in index.paths)}"
    if pool_x.shape[0] == 0:
        raise ProtocolError(f"{where}: no slices in the {SUPPORT_SPLIT!r} split (support pool)")
    if q_x.shape[0] == 0:
        raise ProtocolError(f"{where}: no slices in the {query_split!r} split (queries)")
    shared = sorted(set(pool_ids) & set(q_ids))
    if shared:
        raise ProtocolError(f"{where}: subjects in both the support pool and the queries: "
                            f"{shared[:5]}")
    spacing = _spacing(index, task, query_split)
    total = int(q_x.shape[0])
    if queries_per_task is not None:
        if queries_per_task < 1:
            raise ProtocolError(f"queries_per_task must be >= 1, got {queries_per_task}")
        if total > queries_per_task:
            rng = np.random.default_rng(stable_seed(seed, task, "queries"))
            keep = np.sort(rng.choice(total, queries_per_task, replace=False))
            q_x, q_y = q_x[keep], q_y[keep]
            q_c = None if q_c is None else q_c[keep]
            q_ids = [q_ids[i] for i in keep]
            spacing = None if spacing is None else spacing[keep]
    return TaskData(
        name=task, dataset=info.dataset,
        pool_images=pool_x, pool_labels=pool_y, pool_subjects=list(pool_ids),
        query_images=q_x, query_labels=q_y, query_subjects=list(q_ids),
        query_spacing=spacing, total_queries=total,
        label=info.label, modality_name=info.modality_name,
        pool_colour=pool_c, query_colour=q_c,
    )


def support_draws(task: str, pool_size: int, support_size: int, repeats: int,
                  seed: int = 0) -> list[Draw]:
    """The ``repeats`` seeded support draws of ``support_size`` slices for ``task``.

    A pool of at most ``support_size`` slices gives one draw: the whole pool.
    """
    if support_size < 1:
        raise ProtocolError(f"support size must be >= 1, got {support_size}")
    if repeats < 1:
        raise ProtocolError(f"repeats must be >= 1, got {repeats}")
    if pool_size < 1:
        raise ProtocolError(f"task {task!r}: empty support pool")
    if pool_size <= support_size:
        return [Draw(0, np.arange(pool_size), stable_seed(seed, task, support_size, 0), True)]
    draws = []
    for r in range(repeats):
        s = stable_seed(seed, task, support_size, r)
        rng = np.random.default_rng(s)
        idx = np.sort(rng.choice(pool_size, support_size, replace=False))
        draws.append(Draw(r, idx, s, False))
    return draws


def ensemble_members(draw: Draw, pool_size: int, ensemble: int) -> list[np.ndarray]:
    """Support subsets for support-set ensembling of one draw.

    Member 0 is the draw itself (so ensemble 1 is the plain result); members 1..K-1 are
    further independent subsets of the same size from the whole pool, seeded by the draw.
    A pool-limited draw has one distinct member (the whole pool), so it is returned once.
    """
    if ensemble < 1:
        raise ProtocolError(f"ensemble must be >= 1, got {ensemble}")
    if draw.pool_limited:
        return [draw.indices]
    rng = np.random.default_rng(stable_seed(draw.seed, "ensemble"))
    n = draw.indices.size
    members = [draw.indices]
    for _ in range(ensemble - 1):
        members.append(np.sort(rng.choice(pool_size, n, replace=False)))
    return members
