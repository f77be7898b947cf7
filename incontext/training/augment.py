"""Episode augmentation (UniverSeg appendix): task-level and in-task, with albumentations.

* **task-level**: one random draw per episode, applied identically to the query
  and every support entry (random intensity curve, off by default; intensity flip,
  label flip, horizontal/vertical flip, Sobel-edge label, affine, brightness/contrast,
  elastic warp, blur, noise, sharpness);
* **in-task**: drawn independently for every entry (affine, brightness/contrast,
  blur, noise, sharpness, elastic warp).

Images and labels always go through the same spatial transform (labels with
nearest-neighbour interpolation), so labels stay binary. All randomness comes
from the ``numpy.random.Generator`` passed in, which makes augmentation
reproducible and resumable: whether a transform fires is drawn from it, and a
firing transform is seeded from it (identically for every entry at task level).
"""

from __future__ import annotations

import dataclasses
import math

import albumentations as A
import cv2
import numpy as np
from albumentations.core.transforms_interface import DualTransform
from scipy import ndimage

from incontext.data.episode import Episode
from incontext.training.config import AugmentConfig, InTaskAugmentConfig, TaskAugmentConfig


class ElasticWarp(DualTransform):
    """Smooth random displacement field (kornia ``RandomElasticTransform`` semantics).

    Uniform noise in [-1, 1] is Gaussian-smoothed with ``sigma`` pixels and scaled
    by ``alpha`` in normalised coordinates (1 = half the image), so ``alpha`` 1-2,
    ``sigma`` 6-8 (the UniverSeg ranges) move pixels by a few percent of the image.
    """

    def __init__(self, alpha: tuple[float, float] = (1.0, 2.0),
                 sigma: tuple[float, float] = (6.0, 8.0), p: float = 0.5) -> None:
        super().__init__(p=p)
        self.alpha = alpha
        self.sigma = sigma

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        rng = self.random_generator
        alpha = rng.uniform(*self.alpha)
        sigma = rng.uniform(*self.sigma)
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32),
                                     np.arange(h, dtype=np.float32))
        noise = rng.uniform(-1, 1, (2, h, w)).astype(np.float32)
        dx = cv2.GaussianBlur(noise[0], (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        dy = cv2.GaussianBlur(noise[1], (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        map_x = grid_x + (alpha * dx * (w - 1) / 2).astype(np.float32)
        map_y = grid_y + (alpha * dy * (h - 1) / 2).astype(np.float32)
        return {"map_x": map_x, "map_y": map_y}

    def apply(self, img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
              **params) -> np.ndarray:
        return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def apply_to_mask(self, mask: np.ndarray, map_x: np.ndarray, map_y: np.ndarray,
                      **params) -> np.ndarray:
        return cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("alpha", "sigma")


def _shared_transforms(
    cfg: TaskAugmentConfig | InTaskAugmentConfig,
) -> list[tuple[float, A.BasicTransform]]:
    """(probability, transform with p=1) for the transforms both kinds share, in order."""
    translate = cfg.translate  # signed fraction of the image size, x and y drawn separately
    noise_std = (math.sqrt(cfg.noise_var[0]), math.sqrt(cfg.noise_var[1]))
    return [
        (cfg.affine_p, A.Affine(rotate=cfg.rotate, translate_percent={"x": translate,
                                                                      "y": translate},
                                scale=cfg.scale, interpolation=cv2.INTER_LINEAR,
                                mask_interpolation=cv2.INTER_NEAREST,
                                border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0)),
        (cfg.brightness_contrast_p, A.RandomBrightnessContrast(
            brightness_limit=cfg.brightness,
            contrast_limit=(cfg.contrast[0] - 1.0, cfg.contrast[1] - 1.0),
            brightness_by_max=True, p=1.0)),
        (cfg.elastic_p, ElasticWarp(alpha=cfg.elastic_alpha, sigma=cfg.elastic_sigma, p=1.0)),
        (cfg.blur_p, A.GaussianBlur(blur_limit=(cfg.blur_kernel, cfg.blur_kernel),
                                    sigma_limit=cfg.blur_sigma, p=1.0)),
        (cfg.noise_p, A.GaussNoise(std_range=noise_std, mean_range=cfg.noise_mean, p=1.0)),
        (cfg.sharpness_p, A.Sharpen(alpha=cfg.sharpness_alpha, lightness=(1.0, 1.0), p=1.0)),
    ]


def sobel_edges(label: np.ndarray) -> np.ndarray:
    """Binary boundary of a binary label (Sobel gradient magnitude > 0)."""
    lab = label.astype(np.float32)
    gx = ndimage.sobel(lab, axis=-1, mode="nearest")
    gy = ndimage.sobel(lab, axis=-2, mode="nearest")
    return (np.hypot(gx, gy) > 1e-6).astype(np.float32)


def intensity_curve(rng: np.random.Generator, knots: tuple[int, int]):
    """A random piecewise-linear map of [0, 1]: ``k`` evenly spaced knots (``k`` drawn in
    ``knots``, inclusive) with values uniform in [0, 1]. Returns ``curve(array) -> array``."""
    k = int(rng.integers(knots[0], knots[1] + 1))
    xs = np.linspace(0.0, 1.0, k)
    ys = rng.uniform(0.0, 1.0, k)
    return lambda a: np.interp(a, xs, ys).astype(np.float32)


def _run(transform: A.BasicTransform, seed: int, image: np.ndarray,
         mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    return out["image"], out["mask"]


class EpisodeAugmenter:
    """``augmenter(episode, rng) -> augmented episode`` (a new object; input untouched)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        task = config.task
        self.task_transforms: list[tuple[float, A.BasicTransform]] = [
            (task.hflip_p, A.HorizontalFlip(p=1.0)),
            (task.vflip_p, A.VerticalFlip(p=1.0)),
            *_shared_transforms(task),
        ]
        self.in_task_transforms = _shared_transforms(config.in_task)

    def __call__(self, episode: Episode, rng: np.random.Generator) -> Episode:
        if not self.config.enabled:
            return episode
        n_s = episode.support_images.shape[0]
        images = np.concatenate([episode.support_images, episode.query_images]).astype(
            np.float32, copy=True)
        labels = (np.concatenate([episode.support_labels, episode.query_labels]) > 0.5)
        labels = labels.astype(np.uint8)
        task = self.config.task
        # task level: label-only and intensity ops, then albumentations with one shared seed
        if task.intensity_curve_p > 0 and rng.random() < task.intensity_curve_p:
            images = intensity_curve(rng, task.intensity_curve_knots)(images)
        if rng.random() < task.sobel_edges_p:
            labels = np.stack([sobel_edges(lab) for lab in labels]).astype(np.uint8)
        if rng.random() < task.label_flip_p:
            labels = 1 - labels
        if rng.random() < task.intensity_flip_p:
            images = 1.0 - images
        for p, transform in self.task_transforms:
            if rng.random() < p:
                seed = int(rng.integers(2**31))
                for i in range(len(images)):
                    images[i], labels[i] = _run(transform, seed, images[i], labels[i])
        np.clip(images, 0.0, 1.0, out=images)
        # in-task: independent draws per entry
        for i in range(len(images)):
            for p, transform in self.in_task_transforms:
                if rng.random() < p:
                    images[i], labels[i] = _run(transform, int(rng.integers(2**31)),
                                                images[i], labels[i])
        np.clip(images, 0.0, 1.0, out=images)
        labels_f = labels.astype(np.float32)
        return dataclasses.replace(
            episode,
            support_images=images[:n_s], support_labels=labels_f[:n_s],
            query_images=images[n_s:], query_labels=labels_f[n_s:],
        )
