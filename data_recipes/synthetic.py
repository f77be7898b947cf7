"""``synthetic``: procedurally generated 2D segmentation tasks for training.

A *task* (one per seed) is a random smooth partition of the image into 5-20 labels
(argmax of Gaussian-interpolated multi-octave noise, a Perlin-like field), with
random per-label intensities and textures. Its *subjects* are variations of it: a
smooth random deformation, a small perturbation of the label shapes, per-subject
intensity jitter, a multiplicative bias field, Gaussian blur and Gaussian noise.

Everything is derived from ``numpy.random.SeedSequence`` so it is deterministic:
subject ``i`` of task ``s`` does not depend on how many subjects are generated.

Label maps hold values ``1..L`` (every pixel belongs to one label; 0 is unused).
As a recipe: each task is one sub-dataset (``task_0000`` ...) whose labels are
``label_1 .. label_L``; ``DatasetInfo.label_names`` is ``label_1 .. label_20`` and a
task with fewer labels gives all-False masks for the rest
(``DatasetInfo.extra["labels_per_task"]`` lists each task's count).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from data_recipes.base import DatasetInfo, RecipeError, Subject, SubjectRef

MIN_LABELS, MAX_LABELS = 5, 20


def _rbf_matrix(size: int, grid: int, width: float = 0.75) -> np.ndarray:
    """(size, grid) weights that smoothly interpolate a coarse ``grid`` to ``size`` samples.

    Gaussian radial basis (std = ``width`` coarse cells) with rows summing to 1: the
    separable product ``R @ C @ R.T`` is a Gaussian-filtered upsampling of ``C``.
    """
    x = (np.arange(size) + 0.5) / size * grid - 0.5
    c = np.arange(grid)
    w = np.exp(-0.5 * ((x[:, None] - c[None, :]) / width) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=64)
def _rbf_cached(size: int, grid: int) -> np.ndarray:
    return _rbf_matrix(size, grid)


def _upsample(coarse: np.ndarray, size: int) -> np.ndarray:
    """(..., g, g) coarse fields -> (..., size, size) smooth fields."""
    r = _rbf_cached(size, coarse.shape[-1])
    return r @ coarse @ r.T


@dataclass(frozen=True)
class TaskParams:
    """Everything shared by the subjects of one task."""

    n_labels: int
    grid: int
    coarse_logits: np.ndarray  # (L, grid, grid) base shape of the label map
    fine_logits: np.ndarray  # (L, 2*grid, 2*grid) second octave
    shape_jitter: float  # per-subject perturbation of the logits
    deform_px: float  # std of the deformation, pixels at size 128
    means: np.ndarray  # (L,) label intensities
    textures: np.ndarray  # (L,) per-label texture amplitude
    intensity_jitter: float
    bias_std: float
    blur_max: float
    noise_max: float


def task_seed_sequence(task_seed: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(task_seed) & 0xFFFFFFFF, 0x5EED])


def n_labels_for(task_seed: int) -> int:
    """Number of labels of a task (cheap: no fields are generated)."""
    rng = np.random.default_rng(task_seed_sequence(task_seed))
    return int(rng.integers(MIN_LABELS, MAX_LABELS + 1))


@lru_cache(maxsize=256)
def task_params(task_seed: int) -> TaskParams:
    """The random parameters of a task (cached)."""
    rng = np.random.default_rng(task_seed_sequence(task_seed))
    n = int(rng.integers(MIN_LABELS, MAX_LABELS + 1))  # first draw: see n_labels_for
    grid = int(rng.integers(max(4, int(np.ceil(np.sqrt(n))) + 1), 11))
    coarse = rng.standard_normal((n, grid, grid)).astype(np.float32)
    # every label wins somewhere: give each one its own coarse node with a margin
    nodes = rng.permutation(grid * grid)[:n]
    coarse.reshape(n, -1)[np.arange(n), nodes] += 2.5
    fine = rng.standard_normal((n, 2 * grid, 2 * grid)).astype(np.float32)
    return TaskParams(
        n_labels=n,
        grid=grid,
        coarse_logits=coarse,
        fine_logits=fine * np.float32(rng.uniform(0.15, 0.5)),
        shape_jitter=float(rng.uniform(0.05, 0.35)),
        deform_px=float(rng.uniform(0.5, 6.0)),
        means=rng.uniform(0.0, 1.0, n).astype(np.float32),
        textures=rng.uniform(0.0, 0.12, n).astype(np.float32),
        intensity_jitter=float(rng.uniform(0.0, 0.08)),
        bias_std=float(rng.uniform(0.0, 0.3)),
        blur_max=float(rng.uniform(0.0, 1.5)),
        noise_max=float(rng.uniform(0.0, 0.08)),
    )


@lru_cache(maxsize=64)
def _task_fine_field(task_seed: int, size: int) -> np.ndarray:
    """The task's second-octave logits at ``size`` (shared by its subjects; cached)."""
    return _upsample(task_params(task_seed).fine_logits, size)


def _warp_nearest(labels: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Sample an (H, W) label map at (y + dy, x + dx), nearest neighbour, edges clamped."""
    h, w = labels.shape
    y = np.clip(np.rint(np.arange(h, dtype=np.float32)[:, None] + dy), 0, h - 1).astype(np.intp)
    x = np.clip(np.rint(np.arange(w, dtype=np.float32)[None, :] + dx), 0, w - 1).astype(np.intp)
    return labels.ravel()[y * w + x]


def generate_synthetic_subject(
    task_seed: int, index: int, size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Subject ``index`` of task ``task_seed``: image (size, size) float32 in [0, 1] and
    label map (size, size) int16 with values 1..L."""
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    p = task_params(int(task_seed))
    rng = np.random.default_rng(np.random.SeedSequence([int(task_seed) & 0xFFFFFFFF, 1, index]))
    g, n = p.grid, p.n_labels
    f32 = np.float32

    # label shapes: task logits + a small per-subject perturbation, two octaves
    coarse = p.coarse_logits + f32(p.shape_jitter) * rng.standard_normal((n, g, g), dtype=f32)
    logits = _upsample(coarse, size) + _task_fine_field(int(task_seed), size)

    # smooth deformation (displacements in pixels, scaled with the image size)
    scale = f32(p.deform_px * size / 128)
    disp = _upsample(rng.standard_normal((2, 5, 5), dtype=f32), size) * scale
    labels = _warp_nearest(logits.argmax(0), disp[0], disp[1])

    # intensities: label means (jittered) + per-label texture
    means = p.means + f32(p.intensity_jitter) * rng.standard_normal(n, dtype=f32)
    texture = _upsample(rng.standard_normal((2 * g, 2 * g), dtype=f32), size) * f32(2.0)
    image = means[labels] + p.textures[labels] * texture

    # multiplicative bias field, blur, noise
    bias = np.exp(_upsample(rng.standard_normal((3, 3), dtype=f32), size) * f32(p.bias_std))
    image = image * bias
    sigma = float(rng.uniform(0.0, p.blur_max))
    if sigma > 0.3:
        image = ndimage.gaussian_filter(image, sigma * size / 128, mode="nearest")
    noise = float(rng.uniform(0.0, p.noise_max))
    image = image + f32(noise) * rng.standard_normal(image.shape, dtype=f32)

    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return image.astype(f32, copy=False), (labels + 1).astype(np.int16)


def stack_subjects(make_subject, task_seed: int, n_subjects: int, size: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``make_subject(task_seed, i, size)`` for i < ``n_subjects``, stacked into images
    (N, size, size) float32 and label maps (N, size, size) int16."""
    if n_subjects < 0:
        raise ValueError(f"n_subjects must be >= 0, got {n_subjects}")
    images = np.empty((n_subjects, size, size), np.float32)
    labels = np.empty((n_subjects, size, size), np.int16)
    for i in range(n_subjects):
        images[i], labels[i] = make_subject(task_seed, i, size)
    return images, labels


def generate_synthetic_task(
    task_seed: int, n_subjects: int, size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """``n_subjects`` subjects of task ``task_seed``: images (N, size, size) float32 in
    [0, 1] and label maps (N, size, size) int16 with values 1..L, 5 <= L <= 20."""
    return stack_subjects(generate_synthetic_subject, task_seed, n_subjects, size)


def recipe_task_seed(seed: int, task: int) -> int:
    """Task seed of task ``task`` in a recipe seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(task)]).generate_state(1)[0])


def _parse_options(source: Any) -> dict[str, int]:
    """``"n_tasks=10,n_subjects=5,seed=1"`` -> dict; a path without '=' -> {}."""
    text = str(source or "")
    if "=" not in text:
        return {}
    out = {}
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip().rsplit("/", 1)[-1]
        if key not in ("n_tasks", "n_subjects", "seed", "size"):
            raise RecipeError(f"synthetic: unknown option {key!r} in {text!r}")
        try:
            out[key] = int(value)
        except ValueError:
            raise RecipeError(f"synthetic: option {key}={value!r} is not an integer") from None
    return out


@dataclass(frozen=True)
class SyntheticRecipe:
    """``n_tasks`` tasks x ``n_subjects`` subjects at ``size`` px, from ``seed``.

    ``source`` is ignored unless it is an options string (``"n_tasks=10,seed=3"``),
    which overrides these fields.
    """

    n_tasks: int = 1000
    n_subjects: int = 100
    seed: int = 0
    size: int = 128
    name: str = "synthetic"

    def with_options(self, **options: Any) -> SyntheticRecipe:
        known = {f.name for f in dataclasses.fields(self)} - {"name"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise RecipeError(f"synthetic: unknown option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **{k: int(v) for k, v in options.items()})

    def _resolved(self, source: Any) -> SyntheticRecipe:
        options = _parse_options(source)
        recipe = self.with_options(**options) if options else self
        if recipe.n_tasks < 1 or recipe.n_subjects < 1 or recipe.size < 8:
            raise RecipeError(
                f"synthetic: need n_tasks >= 1, n_subjects >= 1, size >= 8 (got {recipe})"
            )
        return recipe

    def task_name(self, task: int) -> str:
        return f"task_{task:04d}"

    def describe(self, source: Path | str | None = None) -> DatasetInfo:
        r = self._resolved(source)
        per_task = {
            r.task_name(t): n_labels_for(recipe_task_seed(r.seed, t)) for t in range(r.n_tasks)
        }
        return DatasetInfo(
            name=r.name,
            modality="other",
            modality_name="synthetic",
            label_names=[f"label_{k}" for k in range(1, MAX_LABELS + 1)],
            dims=2,
            source=f"procedural (n_tasks={r.n_tasks}, n_subjects={r.n_subjects}, seed={r.seed}, "
            f"size={r.size})",
            citation="Butoi et al., UniverSeg: Universal Medical Image Segmentation, ICCV 2023 "
            "(synthetic tasks)",
            license="generated data, no restrictions",
            extra={"labels_per_task": per_task},
        )

    def subjects(self, source: Path | str | None = None) -> list[SubjectRef]:
        r = self._resolved(source)
        refs = []
        for t in range(r.n_tasks):
            task = r.task_name(t)
            task_seed = recipe_task_seed(r.seed, t)
            for i in range(r.n_subjects):
                refs.append(
                    SubjectRef(
                        subject_id=f"{task}_{i:03d}",
                        paths={},
                        sub_dataset=task,
                        extra={"task_seed": task_seed, "index": i, "size": r.size},
                    )
                )
        return refs

    def load(self, ref: SubjectRef) -> Subject:
        try:
            task_seed, index, size = (int(ref.extra[k]) for k in ("task_seed", "index", "size"))
        except (KeyError, TypeError, ValueError):
            raise RecipeError(
                f"synthetic: subject {ref.subject_id!r} lacks task_seed/index/size"
            ) from None
        image, labels = generate_synthetic_subject(task_seed, index, size)
        masks = {f"label_{k}": labels == k for k in range(1, MAX_LABELS + 1)}
        return Subject(
            subject_id=ref.subject_id, image=image, masks=masks, sub_dataset=ref.sub_dataset
        )


RECIPE = SyntheticRecipe()
