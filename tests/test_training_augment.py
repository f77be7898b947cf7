"""Episode augmentation: joint image/label transforms, binary labels, task vs in-task draws."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from incontext.data.episode import Episode
from incontext.training.augment import EpisodeAugmenter, sobel_edges
from incontext.training.config import AugmentConfig, InTaskAugmentConfig, TaskAugmentConfig

SIZE = 32
TASK_P = [f.name for f in dataclasses.fields(TaskAugmentConfig) if f.name.endswith("_p")]
IN_TASK_P = [f.name for f in dataclasses.fields(InTaskAugmentConfig) if f.name.endswith("_p")]


def only(task: dict | None = None, in_task: dict | None = None) -> AugmentConfig:
    """All probabilities 0 except the given ones."""
    t = TaskAugmentConfig(**{**{k: 0.0 for k in TASK_P}, **(task or {})})
    i = InTaskAugmentConfig(**{**{k: 0.0 for k in IN_TASK_P}, **(in_task or {})})
    return AugmentConfig(enabled=True, task=t, in_task=i)


def episode(n_support: int = 5, identical: bool = False, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, labels = [], []
    for _ in range(n_support + 1):
        cy, cx = (12, 18) if identical else rng.integers(8, 24, 2)
        lab = ((yy - cy) ** 2 / 30 + (xx - cx) ** 2 / 60 < 1).astype(np.float32)
        img = 0.2 + 0.5 * lab + 0.3 * xx / SIZE  # asymmetric background
        images.append(img.astype(np.float32))
        labels.append(lab)
    images, labels = np.stack(images), np.stack(labels)
    return Episode("t", images[:-1], labels[:-1], images[-1:], labels[-1:])


def stack(ep: Episode) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([ep.support_images, ep.query_images]),
            np.concatenate([ep.support_labels, ep.query_labels]))


def test_full_augmentation_keeps_conventions():
    ep = episode()
    before = [a.copy() for a in stack(ep)]
    aug = EpisodeAugmenter(AugmentConfig())
    for seed in range(5):
        out = aug(ep, np.random.default_rng(seed))
        images, labels = stack(out)
        assert images.shape == before[0].shape and images.dtype == np.float32
        assert labels.dtype == np.float32 and set(np.unique(labels)) <= {0.0, 1.0}
        assert images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_array_equal(stack(ep)[0], before[0])  # input untouched
    np.testing.assert_array_equal(stack(ep)[1], before[1])


def test_deterministic_given_rng():
    ep = episode()
    aug = EpisodeAugmenter(AugmentConfig())
    a = stack(aug(ep, np.random.default_rng(7)))
    b = stack(aug(ep, np.random.default_rng(7)))
    c = stack(aug(ep, np.random.default_rng(8)))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("name", ["affine_p", "elastic_p", "blur_p", "noise_p", "sharpness_p",
                                  "brightness_contrast_p", "hflip_p", "vflip_p"])
def test_task_level_is_identical_across_entries(name):
    ep = episode(identical=True)
    out = EpisodeAugmenter(only(task={name: 1.0}))(ep, np.random.default_rng(1))
    images, labels = stack(out)
    assert not np.allclose(images[0], stack(ep)[0][0])  # something happened
    for i in range(1, len(images)):
        np.testing.assert_array_equal(images[i], images[0])
        np.testing.assert_array_equal(labels[i], labels[0])


@pytest.mark.parametrize("name", ["affine_p", "elastic_p", "noise_p"])
def test_in_task_draws_differ_between_entries(name):
    ep = episode(identical=True)
    out = EpisodeAugmenter(only(in_task={name: 1.0}))(ep, np.random.default_rng(1))
    images, _ = stack(out)
    assert not np.array_equal(images[1], images[0])


def test_spatial_transforms_move_image_and_label_together():
    ep = episode()
    out = EpisodeAugmenter(only(task={"hflip_p": 1.0}))(ep, np.random.default_rng(0))
    np.testing.assert_array_equal(stack(out)[0], stack(ep)[0][..., ::-1])
    np.testing.assert_array_equal(stack(out)[1], stack(ep)[1][..., ::-1])
    # affine + elastic: the label still marks the bright (foreground) pixels
    cfg = only(task={"affine_p": 1.0}, in_task={"elastic_p": 1.0})
    images, labels = stack(EpisodeAugmenter(cfg)(ep, np.random.default_rng(3)))
    for img, lab in zip(images, labels, strict=True):
        if lab.sum() > 5 and (lab == 0).sum() > 5:
            inside = img[lab > 0].mean()
            assert inside > np.percentile(img[lab == 0], 60)


def test_flips_of_intensity_and_label():
    ep = episode()
    images, labels = stack(EpisodeAugmenter(only(task={"intensity_flip_p": 1.0,
                                                       "label_flip_p": 1.0}))(
        ep, np.random.default_rng(0)))
    np.testing.assert_allclose(images, 1.0 - stack(ep)[0], atol=1e-6)
    np.testing.assert_array_equal(labels, 1.0 - stack(ep)[1])


def test_sobel_edge_label():
    ep = episode()
    _, labels = stack(EpisodeAugmenter(only(task={"sobel_edges_p": 1.0}))(
        ep, np.random.default_rng(0)))
    original = stack(ep)[1]
    np.testing.assert_array_equal(labels[0], sobel_edges(original[0]))
    assert 0 < labels[0].sum() < original[0].sum()  # a thin boundary, not the filled shape
    assert labels[0][original[0].shape[0] // 2, 0] == 0  # far from the object: no edge


def test_disabled_returns_episode_unchanged():
    ep = episode()
    assert EpisodeAugmenter(AugmentConfig(enabled=False))(ep, np.random.default_rng(0)) is ep


def test_intensity_curve_is_one_map_shared_by_the_episode():
    ep = episode(seed=3)
    images, labels = stack(ep)
    out_images, out_labels = stack(EpisodeAugmenter(only({"intensity_curve_p": 1.0}))(
        ep, np.random.default_rng(7)))
    np.testing.assert_array_equal(out_labels, labels)  # labels untouched
    assert out_images.min() >= 0.0 and out_images.max() <= 1.0
    assert not np.allclose(out_images, images)
    # one function of intensity for every entry: equal inputs give equal outputs
    flat_in, flat_out = images.ravel(), out_images.ravel()
    order = np.argsort(flat_in, kind="stable")
    same = np.diff(flat_in[order]) == 0
    assert same.any()
    np.testing.assert_allclose(np.diff(flat_out[order])[same], 0.0, atol=1e-6)


def test_intensity_curve_off_leaves_the_random_stream_as_before():
    ep = episode(seed=4)
    cfg = AugmentConfig()
    assert cfg.task.intensity_curve_p == 0.0  # off by default: older runs replay unchanged
    a = EpisodeAugmenter(cfg)(ep, np.random.default_rng(11))
    b = EpisodeAugmenter(AugmentConfig(task=dataclasses.replace(
        cfg.task, intensity_curve_knots=(2, 2))))(ep, np.random.default_rng(11))
    np.testing.assert_array_equal(stack(a)[0], stack(b)[0])


def test_intensity_curve_knots_are_checked(tmp_path):
    from incontext.training.config import ConfigError, load_config

    path = tmp_path / "bad.toml"
    path.write_text("steps = 1\n[augment.task]\nintensity_curve_p = 0.5\n"
                    "intensity_curve_knots = [1, 4]\n")
    with pytest.raises(ConfigError, match="intensity_curve_knots"):
        load_config(path)
