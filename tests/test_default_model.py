"""The shipped default model loads with no arguments and segments a simple unseen task."""

import numpy as np

import incontext
from incontext.baselines import get_baseline
from incontext.metrics import dice
from incontext.models import UniverSeg
from incontext.models.registry import DEFAULT_MODEL, REGISTRY, WEIGHTS_DIR


def _discs(n, seed, size=96):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, labels = [], []
    for _ in range(n):
        cy, cx = rng.uniform(25, size - 25, 2)
        r = rng.uniform(10, 20)
        lab = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)
        img = 60 + 120 * lab + rng.normal(0, 12, (size, size))
        images.append(img.astype(np.float32))
        labels.append(lab)
    return np.stack(images), np.stack(labels)


def test_default_model_is_shipped_and_registered():
    assert DEFAULT_MODEL in REGISTRY
    weights = WEIGHTS_DIR / REGISTRY[DEFAULT_MODEL].weights
    assert weights.exists() and weights.with_suffix(".json").exists()
    assert weights.stat().st_size <= 20 * 1024 * 1024
    model = incontext.load_model()
    assert isinstance(model, UniverSeg)
    assert model.config == REGISTRY[DEFAULT_MODEL].config


def test_default_model_segments_an_unseen_task():
    model = incontext.load_model()
    s_img, s_lab = _discs(8, seed=0)
    q_img, q_lab = _discs(6, seed=1)
    results = incontext.segment(model, q_img, s_img, s_lab)
    scores = dice(np.stack([r.mask for r in results]) == 1, q_lab == 1)
    prior = get_baseline("mean-label").predict(s_img / 255, s_lab.astype(np.float32),
                                               q_img / 255, seed=0)
    prior_scores = dice(prior > 0.5, q_lab == 1)
    assert scores.mean() > 0.6
    assert scores.mean() > prior_scores.mean() + 0.2
