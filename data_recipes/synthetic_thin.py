"""Synthetic *thin-structure* tasks: curvilinear networks and small round objects.

The blob tasks of :mod:`data_recipes.synthetic` teach large smooth regions; vessels,
membranes and nuclei (a pixel or a few wide at 128 px) never occur in them. A thin task
(one per seed) fixes a style — how many curves, how wide and how tortuous, how much they
branch, their contrast against a textured background, and whether small round objects
are scattered around — and every subject draws new geometry in that style, so an
episode asks "segment the vessels (or dots) that look like these".

Label maps hold ``0`` = background (never a task: an episode asks for the network or
the objects, not the space between them), ``2`` = the curvilinear network and, in tasks
with objects, ``3`` = the small round objects. Deterministic from
``numpy.random.SeedSequence``: subject ``i`` of task ``s`` does not depend on how many
subjects are generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy import ndimage

from data_recipes.synthetic import _upsample, stack_subjects

SUPERSAMPLE = 4  # curves are drawn at 4x and area-averaged: sub-pixel widths survive


@dataclass(frozen=True)
class ThinTaskParams:
    """The style shared by the subjects of one thin task (widths in pixels at 128 px)."""

    n_curves: tuple[int, int]
    width: float
    taper: float  # width factor per branching level
    tortuosity: float  # std of the heading change per step, radians
    branch_p: float  # chance per step that a curve spawns a branch
    curve_contrast: float  # signed intensity of the network against the background
    n_objects: int  # small round objects per subject (0: none, the task has 2 labels)
    object_radius: tuple[float, float]
    object_contrast: float
    background_contrast: float
    blur: float
    noise: float


def _task_rng(task_seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(task_seed) & 0xFFFFFFFF,
                                                         0x7417, *stream]))


@lru_cache(maxsize=256)
def thin_task_params(task_seed: int) -> ThinTaskParams:
    """The random style of a thin task (cached)."""
    rng = _task_rng(task_seed)
    low = int(rng.integers(3, 11))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    has_objects = rng.random() < 0.4
    r_low = float(rng.uniform(1.0, 3.0))
    return ThinTaskParams(
        n_curves=(low, low + int(rng.integers(0, 9))),
        width=float(rng.uniform(0.6, 3.5)),
        taper=float(rng.uniform(0.5, 0.9)),
        tortuosity=float(rng.uniform(0.03, 0.35)),
        branch_p=float(rng.uniform(0.0, 0.05)),
        curve_contrast=sign * float(rng.uniform(0.15, 0.6)),
        n_objects=int(rng.integers(8, 60)) if has_objects else 0,
        object_radius=(r_low, r_low + float(rng.uniform(0.0, 2.5))),
        object_contrast=(1.0 if rng.random() < 0.5 else -1.0) * float(rng.uniform(0.2, 0.6)),
        background_contrast=float(rng.uniform(0.05, 0.4)),
        blur=float(rng.uniform(0.0, 1.0)),
        noise=float(rng.uniform(0.0, 0.06)),
    )


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int,
          step_px: float, tortuosity: float) -> np.ndarray:
    """(steps + 1, 2) points (x, y) of a smooth random walk with momentum in the heading."""
    turn = np.cumsum(rng.normal(0.0, tortuosity, steps))
    turn = ndimage.gaussian_filter1d(turn, 2.0, mode="nearest")
    angles = heading + turn
    deltas = np.stack([np.cos(angles), np.sin(angles)], 1) * step_px
    return np.concatenate([start[None], start[None] + np.cumsum(deltas, 0)])


def _draw_network(rng: np.random.Generator, p: ThinTaskParams, size: int) -> np.ndarray:
    """Coverage (size, size) in [0, 1] of a branching curvilinear network."""
    s = size * SUPERSAMPLE
    canvas = np.zeros((s, s), np.uint8)
    scale = size / 128 * SUPERSAMPLE  # pixels at 128 px -> canvas pixels
    pending = []  # (start (x, y) in canvas px, heading, level)
    for _ in range(int(rng.integers(p.n_curves[0], p.n_curves[1] + 1))):
        pending.append((rng.uniform(0.1 * s, 0.9 * s, 2), float(rng.uniform(0, 2 * np.pi)),
                        0))
    drawn = 0
    while pending and drawn < 96:
        start, heading, level = pending.pop()
        steps = int(rng.integers(30, 120))
        pts = _walk(rng, start, heading, steps, 1.5 * scale, p.tortuosity)
        width = max(p.width * p.taper**level * float(rng.uniform(0.8, 1.2)), 0.3)
        thickness = max(1, int(round(width * scale)))
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 255, thickness,
                      lineType=cv2.LINE_8)
        drawn += 1
        for i in np.flatnonzero(rng.random(steps) < p.branch_p):
            side = 1.0 if rng.random() < 0.5 else -1.0
            angle = float(np.arctan2(*(pts[i + 1] - pts[i])[::-1]))
            pending.append((pts[i], angle + side * float(rng.uniform(0.3, 1.2)), level + 1))
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _draw_objects(rng: np.random.Generator, p: ThinTaskParams, size: int) -> np.ndarray:
    """Coverage (size, size) in [0, 1] of small filled ellipses."""
    s = size * SUPERSAMPLE
    canvas = np.zeros((s, s), np.uint8)
    scale = size / 128 * SUPERSAMPLE
    for _ in range(p.n_objects):
        r = rng.uniform(*p.object_radius) * scale
        axes = (max(1, int(r * rng.uniform(0.7, 1.3))), max(1, int(r * rng.uniform(0.7, 1.3))))
        centre = tuple(int(v) for v in rng.uniform(0, s, 2))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def generate_thin_subject(task_seed: int, index: int, size: int = 128,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Subject ``index`` of thin task ``task_seed``: image (size, size) float32 in [0, 1]
    and label map (size, size) int16 (0 background, 2 network, 3 objects)."""
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    p = thin_task_params(int(task_seed))
    rng = _task_rng(task_seed, 1, index)
    f32 = np.float32
    network = _draw_network(rng, p, size)
    objects = _draw_objects(rng, p, size) if p.n_objects else np.zeros_like(network)
    labels = np.zeros((size, size), np.int16)
    labels[objects >= 0.5] = 3
    labels[network >= 0.35] = 2  # thin lines: a pixel a third covered is part of the vessel

    background = 0.5 + f32(p.background_contrast) * np.tanh(
        _upsample(rng.standard_normal((6, 6), dtype=f32), size)
        + 0.5 * _upsample(rng.standard_normal((16, 16), dtype=f32), size))
    image = background + f32(p.curve_contrast) * network + f32(p.object_contrast) * objects
    image = image * np.exp(0.2 * _upsample(rng.standard_normal((3, 3), dtype=f32), size))
    if p.blur > 0.3:
        image = ndimage.gaussian_filter(image, p.blur * size / 128, mode="nearest")
    image = image + f32(rng.uniform(0.0, p.noise)) * rng.standard_normal(image.shape, dtype=f32)
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return image.astype(f32, copy=False), labels


def generate_thin_task(task_seed: int, n_subjects: int, size: int = 128,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``n_subjects`` subjects of thin task ``task_seed`` (same conventions as
    :func:`data_recipes.synthetic.generate_synthetic_task`)."""
    return stack_subjects(generate_thin_subject, task_seed, n_subjects, size)
