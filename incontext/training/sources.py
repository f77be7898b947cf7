"""Where training episodes come from: an index of real tasks, synthetic tasks, or a mix.

An :class:`EpisodeSource` draws one binary episode per call from a
``numpy.random.Generator`` (so sampling is reproducible and resumable) and can
build a fixed list of validation episodes. Adapters:

* :class:`IndexSource` — tasks in one or more HDF5 task indexes; hierarchical
  sampling dataset -> task (one binary label per task) -> subjects;
* :class:`SyntheticSource` — on-the-fly synthetic tasks (``generate_synthetic_task``),
  one label of the task's label map per episode;
* :class:`MixedSource` — picks a source per episode with fixed weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

import numpy as np

from incontext.colour import DEFAULT_COLOUR, RENDERINGS, renderings
from incontext.data.episode import Episode
from incontext.preprocessing import resize_image, resize_mask_nearest
from incontext.tiling import tile_origins

SyntheticGenerator = Callable[..., tuple[np.ndarray, np.ndarray]]

# what ``colour_render_p`` renders a colour episode to instead of the stored luma
TRAINING_RENDERINGS: tuple[str, ...] = tuple(r for r in RENDERINGS if r != DEFAULT_COLOUR)


class SourceError(ValueError):
    """A source cannot produce the requested episodes (message says why)."""


class EpisodeSource(Protocol):
    name: str

    def sample(self, rng: np.random.Generator, support_size: int, n_queries: int = 1) -> Episode:
        """One training episode: ``support_size`` entries and ``n_queries`` queries."""
        ...

    def validation_episodes(self, support_size: int, n_queries: int, episodes_per_task: int,
                            seed: int, max_tasks: int = 0) -> list[Episode]:
        """Fixed validation episodes (``episode.task`` names the task)."""
        ...


def _resize_episode(episode: Episode, size: int) -> Episode:
    if episode.support_images.shape[-1] == size and episode.support_images.shape[-2] == size:
        return episode

    def images(x: np.ndarray) -> np.ndarray:
        return np.stack([resize_image(im, size) for im in x]).astype(np.float32)

    def labels(x: np.ndarray) -> np.ndarray:
        return np.stack([resize_mask_nearest(m, size) for m in x]).astype(np.float32)

    return Episode(
        task=episode.task, dataset=episode.dataset,
        support_images=images(episode.support_images),
        support_labels=labels(episode.support_labels),
        query_images=images(episode.query_images), query_labels=labels(episode.query_labels),
        support_subjects=list(episode.support_subjects),
        query_subjects=list(episode.query_subjects), spacing=None,
    )


def render_episode(episode: Episode, rendering: str) -> Episode:
    """``episode`` with its grey images replaced by ``rendering`` of its R, G, B
    (:func:`incontext.colour.renderings`); unchanged when it carries no colour or the
    rendering is undefined (``fisher`` without foreground or background)."""
    if episode.support_colour is None or episode.query_colour is None:
        return episode
    out = renderings((rendering,), episode.support_images, episode.query_images,
                     episode.support_colour, episode.query_colour, episode.support_labels)
    if rendering not in out:
        return episode
    support, query = out[rendering]
    return replace(episode, support_images=np.ascontiguousarray(support, np.float32),
                   query_images=np.ascontiguousarray(query, np.float32))


def tile_crop_episode(episode: Episode, resolution: int, rng: np.random.Generator,
                      tiles: int = 2) -> Episode:
    """One position-matched ``resolution``-px tile of ``episode`` resized to
    ``tiles × resolution`` px: the inputs tiled inference gives the model
    (:mod:`incontext.tiling`, same tile grid). The tile is drawn among those where every
    query and at least one support show foreground; the episode is returned unchanged
    (resized to ``resolution``) when no tile does.
    """
    big = _resize_episode(episode, tiles * resolution)
    origins = tile_origins(tiles * resolution, resolution)
    r = resolution
    q_fg = big.query_labels >= 0.5
    s_fg = big.support_labels >= 0.5
    good = [(y, x) for y in origins for x in origins
            if q_fg[:, y:y + r, x:x + r].any(axis=(1, 2)).all()
            and s_fg[:, y:y + r, x:x + r].any()]
    if not good:
        return _resize_episode(episode, resolution)
    y, x = good[int(rng.integers(len(good)))]

    def crop(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[:, y:y + r, x:x + r])

    return replace(big, support_images=crop(big.support_images),
                   support_labels=crop(big.support_labels),
                   query_images=crop(big.query_images), query_labels=crop(big.query_labels))


def _pick_subjects(rng: np.random.Generator, n: int, support_size: int,
                   n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct queries; support from the other subjects (with replacement if too few)."""
    if n < n_queries + 1:
        raise SourceError(f"needs at least {n_queries + 1} subjects, the task has {n}")
    order = rng.permutation(n)
    queries, rest = order[:n_queries], order[n_queries:]
    if len(rest) >= support_size:
        support = rest[:support_size]
    else:
        support = rng.choice(rest, size=support_size, replace=True)
    return support, queries


class SyntheticSource:
    """Synthetic tasks generated on the fly from integer task seeds.

    Subjects come from ``subject_generator(task_seed, index, size) -> (image
    (size,size) float32 in [0,1], label map (size,size) int)`` (default
    ``data_recipes.synthetic.generate_synthetic_subject``), or, for a custom
    whole-task ``generator(task_seed, n_subjects, size) -> (images (N,size,size),
    label maps (N,size,size))``, from that.

    With a subject generator a training episode generates only the subjects it
    uses (support + queries, LRU-cached, ``cache_size`` tasks' worth) and its label
    is one present in them; validation episodes always use the whole task (label
    drawn from the task's label map), so they do not change with the path.
    Results never depend on the cache size.
    """

    def __init__(self, task_seeds: Sequence[int], n_subjects: int, resolution: int,
                 generator: SyntheticGenerator | None = None, cache_size: int = 256,
                 name: str = "synthetic",
                 subject_generator: SyntheticGenerator | None = None) -> None:
        if not task_seeds:
            raise SourceError(f"{name}: no synthetic task seeds")
        self.task_seeds = [int(s) for s in task_seeds]
        self.n_subjects = n_subjects
        self.resolution = resolution
        if generator is None and subject_generator is None:
            subject_generator = _default_subject_generator()
        self.subject_generator = subject_generator
        self.generator = generator or partial(_stack_subjects, subject_generator)
        self.cache_size = cache_size
        self.name = name
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self._subjects: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] \
            = OrderedDict()

    def _subject(self, seed: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, label map, nonzero labels present) of one subject, LRU-cached."""
        key = (seed, index)
        if key in self._subjects:
            self._subjects.move_to_end(key)
            return self._subjects[key]
        image, labels = self.subject_generator(seed, index, self.resolution)
        image, labels = np.asarray(image, dtype=np.float32), np.asarray(labels)
        expected = (self.resolution, self.resolution)
        if image.shape != expected or labels.shape != expected:
            raise SourceError(f"{self.name}: subject generator returned shapes {image.shape}, "
                              f"{labels.shape} for task seed {seed}, subject {index}; "
                              f"expected {expected}")
        present = np.unique(labels)
        entry = (image, labels, present[present != 0])
        self._subjects[key] = entry
        while len(self._subjects) > self.cache_size * self.n_subjects:
            self._subjects.popitem(last=False)
        return entry

    def _lazy_episode(self, rng: np.random.Generator, seed: int, support_size: int,
                      n_queries: int) -> Episode:
        support, queries = _pick_subjects(rng, self.n_subjects, support_size, n_queries)
        subjects = {int(i): self._subject(seed, int(i))
                    for i in np.concatenate([support, queries])}
        labels = np.unique(np.concatenate([s[2] for s in subjects.values()]))
        if labels.size == 0:
            raise SourceError(f"{self.name}: task seed {seed} shows no foreground label in "
                              f"subjects {sorted(subjects)}")
        label = labels[int(rng.integers(len(labels)))]
        return self._binary_episode(seed, label, support, queries,
                                    lambda i: subjects[int(i)][0], lambda i: subjects[int(i)][1])

    def _binary_episode(self, seed: int, label: int, support: np.ndarray, queries: np.ndarray,
                        image_of: Callable[[int], np.ndarray],
                        map_of: Callable[[int], np.ndarray]) -> Episode:
        """The episode "segment ``label``" of task ``seed`` on the given subject indices."""

        def stack(which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            images = np.stack([image_of(i) for i in which])
            binary = np.stack([map_of(i) == label for i in which])
            return images, binary.astype(np.float32)

        (si, sl), (qi, ql) = stack(support), stack(queries)
        return Episode(
            task=f"{self.name}/{seed}/label-{int(label)}", dataset=self.name,
            support_images=si, support_labels=sl, query_images=qi, query_labels=ql,
            support_subjects=[f"{seed}/{i}" for i in support],
            query_subjects=[f"{seed}/{i}" for i in queries],
        )

    def _task(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if seed in self._cache:
            self._cache.move_to_end(seed)
            return self._cache[seed]
        images, maps = self.generator(seed, self.n_subjects, self.resolution)
        images = np.asarray(images, dtype=np.float32)
        maps = np.asarray(maps)
        expected = (self.n_subjects, self.resolution, self.resolution)
        if images.shape != expected or maps.shape != expected:
            raise SourceError(f"{self.name}: generator returned shapes {images.shape}, "
                              f"{maps.shape} for task seed {seed}; expected {expected}")
        labels = np.unique(maps)
        labels = labels[labels != 0]
        if labels.size == 0:
            raise SourceError(f"{self.name}: task seed {seed} has no foreground label")
        entry = (images, maps, labels)
        self._cache[seed] = entry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return entry

    def _episode(self, rng: np.random.Generator, seed: int, support_size: int,
                 n_queries: int) -> Episode:
        images, maps, labels = self._task(seed)
        label = labels[int(rng.integers(len(labels)))]
        support, queries = _pick_subjects(rng, len(images), support_size, n_queries)
        return self._binary_episode(seed, label, support, queries, images.__getitem__,
                                    maps.__getitem__)

    def sample(self, rng: np.random.Generator, support_size: int, n_queries: int = 1) -> Episode:
        seed = self.task_seeds[int(rng.integers(len(self.task_seeds)))]
        if self.subject_generator is not None:
            return self._lazy_episode(rng, seed, support_size, n_queries)
        return self._episode(rng, seed, support_size, n_queries)

    def validation_episodes(self, support_size: int, n_queries: int, episodes_per_task: int,
                            seed: int, max_tasks: int = 0) -> list[Episode]:
        rng = np.random.default_rng([seed, 0x5E])
        seeds = self.task_seeds[:max_tasks] if max_tasks else self.task_seeds
        return [self._episode(rng, s, support_size, n_queries)
                for s in seeds for _ in range(episodes_per_task)]


def _default_subject_generator() -> SyntheticGenerator:
    try:
        from data_recipes.synthetic import generate_synthetic_subject
    except ImportError as exc:
        raise SourceError("synthetic tasks need data_recipes.synthetic.generate_synthetic_subject, "
                          f"which could not be imported: {exc}") from None
    return generate_synthetic_subject


def _stack_subjects(make_subject: SyntheticGenerator, task_seed: int, n_subjects: int,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole task from a subject generator (the same arrays as the recipes' task functions)."""
    from data_recipes.synthetic import stack_subjects

    return stack_subjects(make_subject, task_seed, n_subjects, size)


def synthetic_seeds(base_seed: int, n_train: int, n_val: int) -> tuple[list[int], list[int]]:
    """Disjoint task seeds for training and held-back validation synthetic tasks."""
    base = int(base_seed) * 10_000_000
    return list(range(base, base + n_train)), list(range(base + n_train, base + n_train + n_val))


class IndexSource:
    """Tasks of a task index (``incontext.data.TaskIndex``), sampled dataset -> task.

    A dataset is drawn with probability proportional to ``dataset_weights``
    (default 1 each; 0 excludes it), then one of its tasks uniformly; every task
    is one binary label, so multi-label datasets are sampled a label at a time.
    With ``skip_empty`` only slices showing the label are used. Episodes are
    resized to ``resolution`` when the index stores another size. With
    ``colour_render_p`` > 0, that share of the training episodes of datasets storing
    R, G, B is rendered to grey another way than luma (:data:`TRAINING_RENDERINGS`, one
    drawn per episode, the same for supports and queries: what ``colour="auto"`` may
    feed the model at inference); validation episodes stay luma. With ``tile_crop_p`` > 0,
    that share of the training episodes is cut to one tile (:func:`tile_crop_episode`);
    validation episodes stay whole.
    """

    def __init__(self, index: Any, resolution: int, split: str = "train", val_split: str = "val",
                 dataset_weights: dict[str, float] | None = None, skip_empty: bool = True,
                 name: str = "index", colour_render_p: float = 0.0,
                 tile_crop_p: float = 0.0) -> None:
        for key, p in (("colour_render_p", colour_render_p), ("tile_crop_p", tile_crop_p)):
            if not 0.0 <= p <= 1.0:
                raise SourceError(f"{key} must be in [0, 1], got {p}")
        self.colour_render_p = float(colour_render_p)
        self.tile_crop_p = float(tile_crop_p)
        self.index = index
        self.resolution = resolution
        self.split = split
        self.val_split = val_split
        self.skip_empty = skip_empty
        self.name = name
        weights = dict(dataset_weights or {})
        by_dataset: dict[str, list[str]] = {}
        for task in index.tasks:
            if self._subjects(task.name, split) >= 2:
                by_dataset.setdefault(task.dataset, []).append(task.name)
        unknown = sorted(set(weights) - set(by_dataset))
        if unknown:
            raise SourceError(f"data.dataset_weights names datasets not in the index(es): "
                              f"{unknown} (have: {sorted(by_dataset)})")
        self.datasets = sorted(d for d in by_dataset if weights.get(d, 1.0) > 0)
        if not self.datasets:
            raise SourceError(f"no task in the index(es) has 2 or more subjects in split "
                              f"{split!r}" + (" with foreground" if skip_empty else ""))
        self.tasks = {d: sorted(by_dataset[d]) for d in self.datasets}
        w = np.array([weights.get(d, 1.0) for d in self.datasets], dtype=np.float64)
        self.dataset_p = w / w.sum()
        # tasks whose dataset stores R, G, B (looked up once, not per episode)
        self.colour_tasks = {t for d in self.datasets for t in self.tasks[d]
                             if index.has_colour(t)} if self.colour_render_p > 0 else set()
        if self.colour_render_p > 0 and not self.colour_tasks:
            raise SourceError(
                f"data.colour_render_p = {self.colour_render_p:g}, but no dataset of the "
                f"index(es) stores R, G, B (grey sources, or indexes built before colour was "
                f"stored: rebuild them with this version)")

    def _subjects(self, task: str, split: str) -> int:
        return int(self.index.pool(task, split, self.skip_empty).n_subjects)

    def sample(self, rng: np.random.Generator, support_size: int, n_queries: int = 1) -> Episode:
        dataset = self.datasets[int(rng.choice(len(self.datasets), p=self.dataset_p))]
        tasks = self.tasks[dataset]
        task = tasks[int(rng.integers(len(tasks)))]
        # no extra draw when the option is off, so earlier runs replay unchanged
        recolour = self.colour_render_p > 0 and rng.random() < self.colour_render_p \
            and task in self.colour_tasks
        colour = {"with_colour": True} if recolour else {}  # plain indexes keep their API
        episode = self.index.episode(task, self.split, support_size, n_queries, rng,
                                     skip_empty=self.skip_empty, **colour)
        if recolour:
            episode = render_episode(episode, TRAINING_RENDERINGS[
                int(rng.integers(len(TRAINING_RENDERINGS)))])
        if self.tile_crop_p > 0 and rng.random() < self.tile_crop_p:  # no draw when off
            return tile_crop_episode(episode, self.resolution, rng)
        return _resize_episode(episode, self.resolution)

    def validation_episodes(self, support_size: int, n_queries: int, episodes_per_task: int,
                            seed: int, max_tasks: int = 0) -> list[Episode]:
        """Queries from the val split, support from the train split, of each training task."""
        rng = np.random.default_rng([seed, 0x1D])
        names = [t for d in self.datasets for t in self.tasks[d]
                 if self._subjects(t, self.val_split) >= 1]
        if max_tasks and len(names) > max_tasks:
            names = sorted(rng.choice(names, size=max_tasks, replace=False).tolist())
        return [
            _resize_episode(self.index.episode(name, self.val_split, support_size, n_queries, rng,
                                               skip_empty=self.skip_empty,
                                               support_split=self.split), self.resolution)
            for name in names for _ in range(episodes_per_task)
        ]


class MixedSource:
    """Draws each episode from one of several sources with fixed probabilities."""

    def __init__(self, sources: Sequence[tuple[EpisodeSource, float]]) -> None:
        kept = [(s, float(w)) for s, w in sources if w > 0]
        if not kept:
            raise SourceError("no episode source with a positive weight")
        self.sources = [s for s, _ in kept]
        w = np.array([w for _, w in kept])
        self.p = w / w.sum()
        self.name = "+".join(s.name for s in self.sources)

    def sample(self, rng: np.random.Generator, support_size: int, n_queries: int = 1) -> Episode:
        i = int(rng.choice(len(self.sources), p=self.p)) if len(self.sources) > 1 else 0
        return self.sources[i].sample(rng, support_size, n_queries)

    def validation_episodes(self, support_size: int, n_queries: int, episodes_per_task: int,
                            seed: int, max_tasks: int = 0) -> list[Episode]:
        out: list[Episode] = []
        for source in self.sources:
            out.extend(source.validation_episodes(support_size, n_queries, episodes_per_task,
                                                  seed, max_tasks))
        return out
