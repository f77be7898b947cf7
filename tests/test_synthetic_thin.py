"""Thin-structure synthetic tasks: determinism, labels, thinness, use in training."""

from __future__ import annotations

import numpy as np
import pytest

from data_recipes.synthetic_thin import generate_thin_subject, generate_thin_task, thin_task_params
from incontext.training import ConfigError, config_from_dict
from incontext.training.engine import build_sources


def test_deterministic_and_independent_of_task_length():
    a_img, a_lab = generate_thin_task(7, 3, 64)
    b_img, b_lab = generate_thin_task(7, 5, 64)
    assert np.array_equal(a_img, b_img[:3]) and np.array_equal(a_lab, b_lab[:3])
    img, lab = generate_thin_subject(7, 4, 64)
    assert np.array_equal(img, b_img[4]) and np.array_equal(lab, b_lab[4])
    assert not np.array_equal(a_lab[0], a_lab[1])  # every subject draws new geometry


@pytest.mark.parametrize("seed", range(12))
def test_labels_images_and_thinness(seed):
    images, labels = generate_thin_task(seed, 4, 128)
    assert images.dtype == np.float32 and labels.dtype == np.int16
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(labels)) <= {0, 2, 3}
    assert (labels == 3).any() == (thin_task_params(seed).n_objects > 0)
    network = labels == 2
    assert network.any(axis=(1, 2)).all()  # every subject shows the network
    # thin: most network pixels touch the background (a few pixels wide at most)
    from scipy import ndimage

    interior = ndimage.binary_erosion(network, structure=np.ones((1, 5, 5)))
    assert interior.sum() < 0.5 * network.sum()
    # the image sees the network: its mean intensity differs from the background's
    for img, net in zip(images, network, strict=True):
        contrast = img[net].mean() - img[~net].mean()
        assert np.sign(contrast) == np.sign(thin_task_params(seed).curve_contrast)


def test_styles_vary_between_tasks():
    widths = [thin_task_params(s).width for s in range(40)]
    assert min(widths) < 1.0 < 3.0 < max(widths)
    assert any(thin_task_params(s).n_objects > 0 for s in range(40))


def _config(thin: float) -> dict:
    return {"model": {"encoder_widths": [8, 8], "resolution": 32},
            "data": {"synthetic_ratio": 1.0, "synthetic_thin_ratio": thin,
                     "synthetic_tasks": 4, "synthetic_val_tasks": 2, "synthetic_subjects": 5}}


def test_training_sources_mix_thin_tasks():
    source, val = build_sources(config_from_dict(_config(0.5)))
    rng = np.random.default_rng(0)
    names = {source.sample(rng, 2, 1).dataset for _ in range(40)}
    assert names == {"synthetic", "synthetic-thin"}
    assert {e.dataset for e in val} == {"synthetic-heldout"}  # no thin val tasks by default
    only_thin, _ = build_sources(config_from_dict(_config(1.0)))
    episode = only_thin.sample(rng, 3, 1)
    assert episode.dataset == "synthetic-thin" and episode.support_images.shape == (3, 32, 32)
    with pytest.raises(ConfigError, match="synthetic_thin_ratio"):
        config_from_dict(_config(1.5))


def test_thin_validation_tasks_are_held_back_and_ask_for_structures():
    cfg = _config(0.5)
    cfg["data"]["synthetic_thin_val_tasks"] = 3
    source, val = build_sources(config_from_dict(cfg))
    thin_val = [e for e in val if e.dataset == "synthetic-thin-heldout"]
    assert len(thin_val) == 3 and len(val) == 5
    # validation seeds differ from every training seed of the thin source
    val_seeds = {int(e.task.split("/")[1]) for e in thin_val}
    rng = np.random.default_rng(1)
    train_seeds = {int(source.sample(rng, 2, 1).task.split("/")[1]) for _ in range(200)}
    assert val_seeds and not val_seeds & train_seeds
    for e in thin_val:  # the network or the objects, never the background
        assert e.task.rsplit("label-", 1)[1] in {"2", "3"}
        assert 0 < e.query_labels.mean() < 0.5
    # a run that does not train on thin tasks can still validate on them
    cfg["data"]["synthetic_thin_ratio"] = 0.0
    _, control_val = build_sources(config_from_dict(cfg))
    assert [e.task for e in control_val] == [e.task for e in val]
    with pytest.raises(ConfigError, match="synthetic_thin_val_tasks"):
        cfg["data"]["synthetic_thin_val_tasks"] = -1
        config_from_dict(cfg)
