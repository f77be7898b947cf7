"""Behaviour of the classic baselines on small synthetic tasks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from incontext.baselines import BASELINES, Prototype, get_baseline
from incontext.metrics import dice

# Small settings keep the whole file fast; the U-Net gets a tiny budget where quality is moot.
FAST = {"supervised-unet": {"steps": 3, "batch_size": 2},
        "supervised-unet-rgb": {"steps": 3, "batch_size": 2}}


def make_baseline(name: str):
    return get_baseline(name, **FAST.get(name, {}))


def disks(n: int, size=(48, 48), seed: int = 0, contrast: float = 0.4, noise: float = 0.05):
    """Bright disks at random positions on a dark noisy background: (images, labels)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    images, labels = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        r = rng.uniform(0.12, 0.25) * min(h, w)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        im = 0.2 + contrast * m + rng.normal(0.0, noise, m.shape)
        images.append(np.clip(im, 0.0, 1.0).astype(np.float32))
        labels.append(m)
    return np.stack(images), np.stack(labels)


def mean_dice(prob: np.ndarray, labels: np.ndarray) -> float:
    return float(dice(prob >= 0.5, labels > 0.5).mean())


# ---------------------------------------------------------------- shared interface


def test_registry_names_and_errors():
    assert set(BASELINES) == {
        "supervised-unet",
        "supervised-unet-rgb",
        "nearest-support",
        "mean-label",
        "threshold",
        "prototype",
        "pixel-classifier",
    }
    for name, cls in BASELINES.items():
        assert cls.name == name
    with pytest.raises(ValueError, match="unknown baseline"):
        get_baseline("nnunet")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_shape_range_determinism(name):
    si, sl = disks(4, (40, 52), seed=1)
    qi, _ = disks(3, (40, 52), seed=2)
    method = make_baseline(name)
    a = method.predict(si, sl, qi, seed=7)
    b = make_baseline(name).predict(si, sl, qi, seed=7)
    assert a.shape == (3, 40, 52) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    info = method.describe()
    assert info["name"] == name
    json.dumps(info)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_single_support_odd_size_and_no_queries(name):
    si, sl = disks(1, (21, 17), seed=3)
    qi, _ = disks(2, (21, 17), seed=4)
    out = make_baseline(name).predict(si, sl, qi, seed=0)
    assert out.shape == (2, 21, 17) and np.isfinite(out).all()
    none = make_baseline(name).predict(si, sl, qi[:0], seed=0)
    assert none.shape == (0, 21, 17)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_empty_support_labels_predict_empty(name):
    si, _ = disks(3, (32, 32), seed=5)
    qi, _ = disks(2, (32, 32), seed=6)
    out = make_baseline(name).predict(si, np.zeros_like(si), qi, seed=0)
    assert out.shape == qi.shape and not np.isnan(out).any()
    assert (out < 0.5).all()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_some_empty_supports_are_fine(name):
    si, sl = disks(3, (32, 32), seed=8)
    sl[1] = 0.0
    qi, _ = disks(2, (32, 32), seed=9)
    out = make_baseline(name).predict(si, sl, qi, seed=0)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_input_validation_names_the_argument():
    si, sl = disks(2, (16, 16))
    method = get_baseline("mean-label")
    with pytest.raises(ValueError, match="support_labels"):
        method.predict(si, sl[:1], si, seed=0)
    with pytest.raises(ValueError, match="query_images"):
        method.predict(si, sl, si[:, :8], seed=0)
    with pytest.raises(ValueError, match=r"support_images.*\[0, 1\]"):
        method.predict(si * 255, sl, si, seed=0)
    with pytest.raises(ValueError, match="support_labels.*binary"):
        method.predict(si, sl * 0.5, si, seed=0)
    with pytest.raises(ValueError, match="query_images.*NaN"):
        method.predict(si, sl, np.full_like(si, np.nan), seed=0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        method.predict(si[0], sl[0], si[0], seed=0)


# ---------------------------------------------------------------- method behaviour


def test_pixel_classifier_finds_a_ridge_a_threshold_cannot():
    # a dark line on a background darker still at the edges: no single grey cut separates
    # them, the Hessian filters do
    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(6):
        im = np.tile(np.linspace(0.0, 0.8, 40, dtype=np.float32), (40, 1))
        lab = np.zeros((40, 40), np.float32)
        col = int(rng.integers(8, 32))
        im[:, col] += 0.15
        lab[:, col] = 1
        images.append(np.clip(im + rng.normal(0, 0.01, im.shape), 0, 1).astype(np.float32))
        labels.append(lab)
    si, sl = np.stack(images[:4]), np.stack(labels[:4])
    qi, ql = np.stack(images[4:]), np.stack(labels[4:])
    pixel = mean_dice(get_baseline("pixel-classifier").predict(si, sl, qi, seed=0), ql)
    grey = mean_dice(get_baseline("threshold").predict(si, sl, qi, seed=0), ql)
    assert pixel > 0.8 and pixel > grey + 0.4
    with pytest.raises(ValueError, match="steps"):
        get_baseline("pixel-classifier", steps=0)


def test_threshold_recovers_planted_threshold():
    si, sl = disks(6, (48, 48), seed=10)
    qi, ql = disks(4, (48, 48), seed=11)
    method = get_baseline("threshold")
    assert mean_dice(method.predict(si, sl, qi, seed=0), ql) > 0.95
    assert method.fitted["bright"] is True
    assert 0.2 < method.fitted["threshold"] < 0.6  # between background 0.2 and disk 0.6
    # dark foreground: inverted images flip the fitted polarity
    inv = get_baseline("threshold")
    assert mean_dice(inv.predict(1 - si, sl, 1 - qi, seed=0), ql) > 0.95
    assert inv.fitted["bright"] is False


def test_threshold_output_is_hard():
    si, sl = disks(3, (32, 32), seed=12)
    out = get_baseline("threshold").predict(si, sl, si, seed=0)
    assert set(np.unique(out)) <= {0.0, 1.0}


def test_nearest_support_copies_identical_support():
    si, sl = disks(5, (40, 40), seed=13)
    out = get_baseline("nearest-support").predict(si, sl, si[[3, 1]], seed=0)
    np.testing.assert_array_equal(out, sl[[3, 1]])
    # brightness/contrast changes do not fool NCC
    out = get_baseline("nearest-support").predict(si, sl, 0.5 * si[[2]] + 0.1, seed=0)
    np.testing.assert_array_equal(out[0], sl[2])


def test_nearest_support_k_averages_labels():
    si, sl = disks(4, (24, 24), seed=14)
    out = get_baseline("nearest-support", k=4).predict(si, sl, si[:1], seed=0)
    np.testing.assert_allclose(out[0], sl.mean(axis=0), atol=1e-6)


def test_mean_label_is_the_support_mean():
    si, sl = disks(5, (32, 32), seed=15)
    qi, _ = disks(2, (32, 32), seed=16)
    out = get_baseline("mean-label").predict(si, sl, qi, seed=0)
    np.testing.assert_allclose(out[0], sl.mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(out[0] >= 0.5, sl.mean(axis=0) >= 0.5)
    np.testing.assert_array_equal(out[0], out[1])  # query-independent


def test_supervised_unet_learns_disks():
    si, sl = disks(8, (64, 64), seed=17)
    qi, ql = disks(6, (64, 64), seed=18)
    method = get_baseline("supervised-unet", steps=40, batch_size=4)
    prob = method.predict(si, sl, qi, seed=0)
    assert mean_dice(prob, ql) > 0.8
    assert method.describe()["steps"] == 40


@pytest.mark.parametrize("prior_bias", [True, False])
def test_supervised_unet_starts_at_the_foreground_fraction(prior_bias):
    # sparse foreground (about 2 %): a U-Net that starts at p = 0.5 everywhere tends to fall
    # into predicting nothing; the prior start begins near the supports' fraction instead
    si, _ = disks(4, (32, 32), seed=25)
    sl = np.zeros_like(si)
    sl[:, 10:12, 4:14] = 1.0
    method = get_baseline("supervised-unet", steps=0, prior_bias=prior_bias)
    network = method.fit(si, sl, seed=0)
    start = float(method.infer(network, si).mean())
    fraction = float(sl.mean())
    if prior_bias:
        assert abs(float(network.head.bias) - np.log(fraction / (1 - fraction))) < 1e-5
        assert start < 0.2
    else:
        assert float(network.head.bias) != pytest.approx(np.log(fraction / (1 - fraction)))
        assert start > 0.3
    assert method.describe()["head_bias"] == ("foreground prior" if prior_bias else "default init")


def test_supervised_unet_seed_matters_and_global_rng_untouched():
    si, sl = disks(2, (24, 24), seed=19)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = get_baseline("supervised-unet", steps=2, batch_size=2).predict(si, sl, si, seed=0)
    assert torch.equal(torch.rand(3), expected)
    b = get_baseline("supervised-unet", steps=2, batch_size=2).predict(si, sl, si, seed=1)
    assert not np.array_equal(a, b)


def test_supervised_unet_never_sees_queries():
    si, sl = disks(3, (24, 24), seed=20)
    qi, _ = disks(2, (24, 24), seed=21)
    method = get_baseline("supervised-unet", steps=3, batch_size=2)
    both = method.predict(si, sl, qi, seed=4)
    first = method.predict(si, sl, qi[:1], seed=4)
    np.testing.assert_allclose(both[:1], first, atol=1e-6)  # queries do not influence each other


def test_supervised_unet_device_names_are_checked_and_results_match():
    from incontext.device import DeviceError

    si, sl = disks(3, (24, 24), seed=24)
    default = get_baseline("supervised-unet", steps=2, batch_size=2)
    named = get_baseline("supervised-unet", steps=2, batch_size=2, device="cpu")
    assert named.device == torch.device("cpu") and "device" not in named.describe()
    np.testing.assert_array_equal(default.predict(si, sl, si, seed=3),
                                  named.predict(si, sl, si, seed=3))
    with pytest.raises(DeviceError, match="unknown device"):
        get_baseline("supervised-unet", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            get_baseline("supervised-unet-rgb", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_supervised_unet_on_cuda_learns_disks():
    si, sl = disks(8, (64, 64), seed=17)
    qi, ql = disks(6, (64, 64), seed=18)
    prob = get_baseline("supervised-unet", steps=40, batch_size=4, device="cuda"
                        ).predict(si, sl, qi, seed=0)
    assert isinstance(prob, np.ndarray) and mean_dice(prob, ql) > 0.8


def test_prototype_beats_chance():
    si, sl = disks(6, (48, 48), seed=22)
    qi, ql = disks(6, (48, 48), seed=23)
    proto = mean_dice(get_baseline("prototype").predict(si, sl, qi, seed=0), ql)
    prior = mean_dice(get_baseline("mean-label").predict(si, sl, qi, seed=0), ql)
    fg_fraction = float(ql.mean())
    chance = 2 * fg_fraction / (1 + fg_fraction)  # Dice of predicting everything
    assert proto > max(chance, prior) + 0.2


def test_prototype_uses_given_encoder():
    calls = []

    def encoder(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return torch.cat([x, 1 - x], dim=1)[..., ::2, ::2]

    si, sl = disks(4, (32, 32), seed=24, noise=0.0)
    qi, ql = disks(3, (32, 32), seed=25, noise=0.0)
    method = Prototype(encoder)
    assert mean_dice(method.predict(si, sl, qi, seed=0), ql) > 0.85
    assert calls and calls[0][1:] == (1, 32, 32)
    assert method.describe()["encoder"] == "encoder"


def test_prototype_rejects_bad_encoder_output():
    si, sl = disks(2, (16, 16))
    with pytest.raises(ValueError, match="encoder"):
        Prototype(lambda x: x[:, 0]).predict(si, sl, si, seed=0)


def test_supervised_unet_rgb_learns_from_colour_the_grey_image_hides():
    """Disks that differ from the background only in hue: equal luma, opposite red/blue."""
    rng = np.random.default_rng(0)
    _, labels = disks(10, (32, 32), seed=11)
    grey = np.full(labels.shape, 0.5, np.float32) + rng.normal(0, 0.01, labels.shape).astype(
        np.float32)
    grey = np.clip(grey, 0, 1)
    colour = np.stack([grey + 0.3 * labels, grey, grey - 0.3 * labels], 1).clip(0, 1)
    rgb = get_baseline("supervised-unet-rgb", steps=60, batch_size=4)
    out = rgb.predict(grey[:8], labels[:8], grey[8:], seed=0, support_colour=colour[:8],
                      query_colour=colour[8:])
    dice = [_dice(o > 0.5, t > 0.5) for o, t in zip(out, labels[8:], strict=True)]
    assert np.mean(dice) > 0.7
    # without colour it sees three equal grey channels and cannot find the disks
    blind = rgb.predict(grey[:8], labels[:8], grey[8:], seed=0)
    assert np.mean([_dice(o > 0.5, t > 0.5) for o, t in zip(blind, labels[8:], strict=True)]) \
        < np.mean(dice) - 0.3
    with pytest.raises(ValueError, match="support_colour"):
        rgb.predict(grey[:8], labels[:8], grey[8:], seed=0, support_colour=colour[:7],
                    query_colour=colour[8:])
    with pytest.raises(ValueError, match="query_colour"):
        rgb.predict(grey[:8], labels[:8], grey[8:], seed=0, support_colour=colour[:8],
                    query_colour=colour[8:] * 3)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
