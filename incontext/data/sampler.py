"""Read a task index and sample support sets: ``TaskIndex`` and the ``EpisodeDataset`` stream.

``TaskIndex.open(path)`` reads the small per-slice metadata of every shard at once and the
pixels lazily: a dataset's images (and each label's masks) are read whole into memory on
first use when they fit in ``cache_bytes`` (per process), else slice by slice. HDF5 handles
are opened per process, so an index can be handed to DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from incontext.data.episode import Episode
from incontext.data.index_format import (
    SPLITS,
    GroupMeta,
    IndexFormatError,
    TaskInfo,
    group_tasks,
    open_h5,
    read_group_meta,
    resolve_paths,
)

DEFAULT_CACHE_BYTES = 4 * 1024**3


class SamplingError(ValueError):
    """A task/split cannot give the requested episode (too few subjects, unknown name)."""


@dataclass
class _Pool:
    """Slices of one (task, split[, non-empty]) grouped by subject."""

    rows: np.ndarray  # slice rows, grouped by subject
    starts: np.ndarray  # per subject: first position in rows
    counts: np.ndarray  # per subject: number of slices
    subjects: np.ndarray  # per subject: id (str)

    @property
    def n_subjects(self) -> int:
        return int(self.starts.shape[0])


class TaskIndex:
    """An opened index (one or more shards): task table, split loading and episode sampling."""

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike],
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]  # one index file
        self.paths = [Path(p) for p in paths]
        self.cache_bytes = int(cache_bytes)
        self._groups: list[tuple[Path, str, GroupMeta]] = []
        self._tasks: dict[str, tuple[TaskInfo, int, np.ndarray]] = {}
        for path in self.paths:
            with open_h5(path) as f:
                for key in sorted(f["datasets"]):
                    meta = read_group_meta(path, f["datasets"][key])
                    gi = len(self._groups)
                    self._groups.append((path, key, meta))
                    for info, rows in group_tasks(meta):
                        if info.name in self._tasks:
                            raise IndexFormatError(
                                f"{path}: task {info.name!r} also in "
                                f"{self._groups[self._tasks[info.name][1]][0]}")
                        self._tasks[info.name] = (info, gi, rows)
        self._pools: dict[tuple[str, str, bool], _Pool] = {}
        self._reset_process_state()

    # -- construction, lifetime -------------------------------------------------------------
    @classmethod
    def open(cls, path_or_paths, cache_bytes: int = DEFAULT_CACHE_BYTES) -> TaskIndex:
        """Open an .h5 index, a manifest .json, or a list of either."""
        return cls(resolve_paths(path_or_paths), cache_bytes=cache_bytes)

    def _reset_process_state(self) -> None:
        self._pid = os.getpid()
        self._files: dict[Path, h5py.File] = {}
        self._cache: dict[tuple, np.ndarray] = {}
        self._cached_bytes = 0

    def close(self) -> None:
        """Close file handles and drop cached pixels."""
        if getattr(self, "_pid", None) == os.getpid():
            for f in self._files.values():
                try:
                    f.close()
                except Exception:  # already closed / interpreter exit
                    pass
        self._reset_process_state()

    def __enter__(self) -> TaskIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_files", "_cache", "_cached_bytes", "_pid"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_process_state()

    # -- task table -------------------------------------------------------------------------
    @property
    def tasks(self) -> list[TaskInfo]:
        return [info for info, _, _ in self._tasks.values()]

    @property
    def datasets(self) -> list[str]:
        return sorted({meta.name for _, _, meta in self._groups})

    def task(self, name: str) -> TaskInfo:
        return self._entry(name)[0]

    def _entry(self, name: str) -> tuple[TaskInfo, int, np.ndarray]:
        try:
            return self._tasks[name]
        except KeyError:
            close = [t for t in self._tasks if name.split("/")[0] in t]
            shown = close or list(self._tasks)
            listing = ", ".join(shown[:10]) + (f", ... ({len(shown)} in all)"
                                               if len(shown) > 10 else "")
            raise SamplingError(f"unknown task {name!r}; "
                                + ("tasks of that dataset" if close else "tasks here")
                                + f": {listing}") from None

    def dataset_attrs(self, dataset: str) -> dict:
        """Attributes (modality, label names, source, preprocessing, ...) of a dataset."""
        for _, _, meta in self._groups:
            if meta.name == dataset:
                return dict(meta.attrs)
        raise SamplingError(f"unknown dataset {dataset!r}; known: {self.datasets}")

    def pool(self, task_name: str, split: str, skip_empty: bool = False) -> _Pool:
        """The task's slices in ``split`` grouped by subject (cached)."""
        key = (task_name, split, bool(skip_empty))
        pool = self._pools.get(key)
        if pool is not None:
            return pool
        if split not in SPLITS:
            raise SamplingError(f"split must be one of {SPLITS}, got {split!r}")
        info, gi, rows = self._entry(task_name)
        meta = self._groups[gi][2]
        rows = rows[meta.split[rows] == SPLITS.index(split)]
        if skip_empty:
            rows = rows[meta.foreground[rows, info.label_index] > 0]
        subj = meta.subject[rows]
        order = np.argsort(subj, kind="stable")
        rows, subj = rows[order], subj[order]
        if rows.size:
            change = np.flatnonzero(subj[1:] != subj[:-1]) + 1
            starts = np.concatenate([[0], change]).astype(np.int64)
        else:
            starts = np.zeros(0, dtype=np.int64)
        counts = np.diff(np.concatenate([starts, [rows.size]])).astype(np.int64)
        pool = _Pool(rows.astype(np.int64), starts, counts, subj[starts])
        self._pools[key] = pool
        return pool

    # -- pixels -----------------------------------------------------------------------------
    def _file(self, gi: int) -> h5py.Group:
        if self._pid != os.getpid():  # forked into a worker: never share handles
            self._reset_process_state()
        path, key, _ = self._groups[gi]
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open_h5(path)
        return f["datasets"][key]

    def _read(self, gi: int, what: str, label: int, rows: np.ndarray) -> np.ndarray:
        """Rows of images (what="images") or of one label's masks, cached when they fit."""
        try:
            return self._read_rows(gi, what, label, rows)
        except OSError as exc:  # a damaged chunk: name the file, not h5py's internals
            raise self._damaged(gi, what, exc) from None

    def _damaged(self, gi: int, what: str, exc: OSError) -> IndexFormatError:
        path, key, _ = self._groups[gi]
        return IndexFormatError(f"{path}: /datasets/{key}/{what} cannot be read ({exc}); the "
                                "file is damaged (see `incontext index validate`)")

    def _read_rows(self, gi: int, what: str, label: int, rows: np.ndarray) -> np.ndarray:
        key = (gi, what, label)
        cached = self._cache.get(key)
        if cached is None:
            if self._pid != os.getpid():
                self._reset_process_state()
            dset = self._file(gi)[what]
            per_row = int(np.prod(dset.shape[-2:])) * dset.dtype.itemsize
            nbytes = per_row * dset.shape[0]
            if self._cached_bytes + nbytes <= self.cache_bytes:
                cached = dset[()] if what == "images" else dset[:, label]
                self._cache[key] = cached
                self._cached_bytes += nbytes
            else:
                # one chunk per row: plain per-row reads beat h5py fancy indexing by ~50x
                if what == "images":
                    return np.stack([dset[int(r)] for r in rows])
                return np.stack([dset[int(r), label] for r in rows])
        return cached[rows]

    def _colour_rows(self, gi: int, rows: np.ndarray) -> np.ndarray:
        """(len(rows), 3, H, W) float32 R, G, B in [0, 1] of a dataset that stores them."""
        dset = self._file(gi)["colour"]
        try:
            data = np.stack([dset[int(r)] for r in rows]) if rows.size else np.zeros(
                (0, *dset.shape[1:]), dset.dtype)
        except OSError as exc:
            raise self._damaged(gi, "colour", exc) from None
        scale = np.float32(1 / 255) if data.dtype == np.uint8 else np.float32(1)
        return data.astype(np.float32) * scale

    def _slices(self, gi: int, label: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self._read(gi, "images", label, rows)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) * np.float32(1 / 255)
        else:
            images = images.astype(np.float32)
        labels = self._read(gi, "masks", label, rows).astype(np.float32)
        return images, labels

    def load_split(self, task_name: str, split: str, skip_empty: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All slices of a task in a split: images (N,H,W) in [0,1], labels (N,H,W) {0,1}, ids."""
        info, gi, _ = self._entry(task_name)
        pool = self.pool(task_name, split, skip_empty)
        rows = np.sort(pool.rows)
        images, labels = self._slices(gi, info.label_index, rows)
        return images, labels, self._groups[gi][2].subject[rows].tolist()

    def has_colour(self, task_name: str) -> bool:
        """Whether the task's dataset stores R, G, B beside the grey images (``colour``)."""
        _, gi, _ = self._entry(task_name)
        return "colour" in self._file(gi)

    def load_split_colour(self, task_name: str, split: str, skip_empty: bool = False
                          ) -> np.ndarray | None:
        """(N, 3, H, W) R, G, B in [0, 1] of the slices :meth:`load_split` returns, in the same
        order; None when the dataset has no ``colour`` array (grey sources)."""
        _, gi, _ = self._entry(task_name)
        if not self.has_colour(task_name):
            return None
        return self._colour_rows(gi, np.sort(self.pool(task_name, split, skip_empty).rows))

    def split_spacing(self, task_name: str, split: str, skip_empty: bool = False
                      ) -> np.ndarray:
        """(N, 2) in-plane spacing (mm per pixel, index resolution) of the slices
        :meth:`load_split` returns, in the same order; NaN where the source did not record it.
        """
        _, gi, _ = self._entry(task_name)
        rows = np.sort(self.pool(task_name, split, skip_empty).rows)
        return np.asarray(self._groups[gi][2].spacing[rows], dtype=np.float64)

    # -- episodes ---------------------------------------------------------------------------
    def episode(self, task_name: str, split: str, support_size: int, n_queries: int,
                rng: np.random.Generator, skip_empty: bool = False,
                support_split: str | None = None, with_colour: bool = False) -> Episode:
        """A seeded support set and queries of one task; support and queries share no subject.

        Queries come from ``min(n_queries, subjects - 1)`` distinct subjects; the support from
        the other subjects, one slice per subject when there are enough, else slices drawn
        from them without (or, when still too few, with) replacement. Everything comes from
        ``split`` unless ``support_split`` names another split for the support. With
        ``with_colour`` the episode also carries R, G, B (``support_colour``,
        ``query_colour``) when the dataset stores them.
        """
        info, gi, _ = self._entry(task_name)
        if support_size < 1 or n_queries < 0:
            raise SamplingError("support_size must be >= 1 and n_queries >= 0")
        qpool = self.pool(task_name, split, skip_empty)
        if support_split is None or support_split == split:
            if qpool.n_subjects < (2 if n_queries else 1):
                raise SamplingError(
                    f"task {task_name!r} split {split!r} has {qpool.n_subjects} subject(s)"
                    f"{' with foreground' if skip_empty else ''}; an episode needs 2")
            perm = rng.permutation(qpool.n_subjects)
            n_qsub = min(n_queries, qpool.n_subjects - 1)
            q_subj, s_subj, spool = perm[:n_qsub], perm[n_qsub:], qpool
        else:
            spool = self.pool(task_name, support_split, skip_empty)
            if spool.n_subjects < 1 or (n_queries and qpool.n_subjects < 1):
                raise SamplingError(f"task {task_name!r}: no subjects for support split "
                                    f"{support_split!r} or query split {split!r}")
            n_qsub = min(n_queries, qpool.n_subjects)
            q_subj = rng.permutation(qpool.n_subjects)[:n_qsub]
            taken = set(qpool.subjects[q_subj].tolist())
            s_subj = np.array([i for i in rng.permutation(spool.n_subjects)
                               if spool.subjects[i] not in taken], dtype=np.int64)
            if s_subj.size == 0:
                raise SamplingError(f"task {task_name!r}: no support subjects left")
        q_rows = self._one_per_subject(qpool, q_subj[np.arange(n_queries) % max(n_qsub, 1)], rng) \
            if n_queries else np.zeros(0, dtype=np.int64)
        if s_subj.size >= support_size:
            s_rows = self._one_per_subject(spool, s_subj[:support_size], rng)
        else:
            cand = np.concatenate([spool.rows[spool.starts[s]:spool.starts[s] + spool.counts[s]]
                                   for s in s_subj])
            s_rows = rng.choice(cand, support_size, replace=cand.size < support_size)
        rows = np.concatenate([s_rows, q_rows])
        images, labels = self._slices(gi, info.label_index, rows)
        meta = self._groups[gi][2]
        spacing = meta.spacing[rows[-1]]
        S = support_size
        colour = self._colour_rows(gi, rows) if with_colour and self.has_colour(task_name) \
            else None
        return Episode(
            task=task_name,
            support_images=images[:S], support_labels=labels[:S],
            query_images=images[S:], query_labels=labels[S:],
            support_subjects=meta.subject[s_rows].tolist(),
            query_subjects=meta.subject[q_rows].tolist(),
            dataset=info.dataset,
            spacing=(float(spacing[0]), float(spacing[1])) if np.isfinite(spacing).all()
            else None,
            support_colour=None if colour is None else colour[:S],
            query_colour=None if colour is None else colour[S:],
        )

    @staticmethod
    def _one_per_subject(pool: _Pool, subjects: np.ndarray, rng: np.random.Generator
                         ) -> np.ndarray:
        offset = (rng.random(subjects.size) * pool.counts[subjects]).astype(np.int64)
        return pool.rows[pool.starts[subjects] + offset]


# ------------------------------------------------------------------------------ training stream

def _rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", 0))


def _iterable_base():
    from torch.utils.data import IterableDataset

    return IterableDataset


class EpisodeDataset(_iterable_base()):
    """An endless, seeded stream of training episodes: dataset -> task -> subjects.

    Each item is a dict of tensors: ``support_images``/``support_labels`` (S, 1, H, W),
    ``query_images``/``query_labels`` (Q, 1, H, W), plus ``task`` and ``dataset`` strings.
    With ``batch_size=B`` items are batches of B episodes sharing one support size:
    tensors (B, S, 1, H, W) / (B, Q, 1, H, W) and lists of names (use
    ``DataLoader(ds, batch_size=None)``). With a fixed ``support_size``, a plain
    ``DataLoader(ds, batch_size=B)`` also works.

    ``support_size``: int or (min, max) drawn per episode/batch; ``dataset_weights``:
    {dataset: weight} (datasets left out weigh 1, 0 excludes); tasks within a dataset are
    uniform. Only tasks with at least two subjects (with foreground, when ``skip_empty``)
    in ``split`` are used. Works with DataLoader ``num_workers > 0``: files open lazily per
    worker, and the stream is seeded by (seed, distributed rank, worker id).
    """

    def __init__(self, index: TaskIndex | str | os.PathLike | Sequence, split: str = "train",
                 support_size: int | tuple[int, int] = 8, n_queries: int = 1,
                 dataset_weights: Mapping[str, float] | None = None, seed: int = 0,
                 skip_empty: bool = True, batch_size: int | None = None):
        super().__init__()
        self.index = index if isinstance(index, TaskIndex) else TaskIndex.open(index)
        if isinstance(support_size, int):
            support_size = (support_size, support_size)
        lo, hi = int(support_size[0]), int(support_size[1])
        if not 1 <= lo <= hi:
            raise ValueError(f"support_size must be >= 1 and min <= max, got {support_size}")
        self.support_range = (lo, hi)
        self.split, self.n_queries, self.seed = split, int(n_queries), int(seed)
        self.skip_empty, self.batch_size = bool(skip_empty), batch_size
        by_dataset: dict[str, list[str]] = {}
        for info in self.index.tasks:
            if self.index.pool(info.name, split, skip_empty).n_subjects >= 2:
                by_dataset.setdefault(info.dataset, []).append(info.name)
        weights = dict(dataset_weights or {})
        unknown = sorted(set(weights) - set(self.index.datasets))
        if unknown:
            raise ValueError(f"dataset_weights: unknown dataset(s) {unknown}; "
                             f"known: {self.index.datasets}")
        self.datasets = sorted(d for d in by_dataset if weights.get(d, 1.0) > 0)
        if not self.datasets:
            raise SamplingError(f"no task has two or more subjects in split {split!r}")
        self.tasks_by_dataset = {d: sorted(by_dataset[d]) for d in self.datasets}
        w = np.array([float(weights.get(d, 1.0)) for d in self.datasets])
        self.dataset_probs = w / w.sum()

    def _rng(self) -> np.random.Generator:
        from torch.utils.data import get_worker_info

        worker = get_worker_info()
        wid = worker.id if worker is not None else 0
        return np.random.default_rng(np.random.SeedSequence([self.seed, _rank(), wid]))

    def sample(self, rng: np.random.Generator, support_size: int | None = None) -> Episode:
        """One episode: pick a dataset by weight, a task uniformly, then subjects."""
        d = self.datasets[rng.choice(len(self.datasets), p=self.dataset_probs)]
        tasks = self.tasks_by_dataset[d]
        task = tasks[int(rng.integers(len(tasks)))]
        if support_size is None:
            support_size = int(rng.integers(self.support_range[0], self.support_range[1] + 1))
        return self.index.episode(task, self.split, support_size, self.n_queries, rng,
                                  skip_empty=self.skip_empty)

    def __iter__(self) -> Iterator[dict]:
        import torch

        rng = self._rng()

        def tensors(ep: Episode) -> dict:
            return {
                "support_images": torch.from_numpy(ep.support_images).unsqueeze(-3),
                "support_labels": torch.from_numpy(ep.support_labels).unsqueeze(-3),
                "query_images": torch.from_numpy(ep.query_images).unsqueeze(-3),
                "query_labels": torch.from_numpy(ep.query_labels).unsqueeze(-3),
                "task": ep.task, "dataset": ep.dataset,
            }

        while True:
            if self.batch_size is None:
                yield tensors(self.sample(rng))
                continue
            size = int(rng.integers(self.support_range[0], self.support_range[1] + 1))
            items = [tensors(self.sample(rng, size)) for _ in range(self.batch_size)]
            batch = {k: torch.stack([it[k] for it in items]) for k in items[0]
                     if k not in ("task", "dataset")}
            batch["task"] = [it["task"] for it in items]
            batch["dataset"] = [it["dataset"] for it in items]
            yield batch
