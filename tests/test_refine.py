"""The pixel head fitted on the supports: features, fitting, the per-label check, and the
options that use it (segment, the benchmark's model method, the CLI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import EchoQuery, MeanSupportLabel

from incontext.benchmark.methods import ModelMethod
from incontext.calibration import THRESHOLD_GRID
from incontext.inference import SupportSetError, segment
from incontext.metrics import dice
from incontext.refine import (
    check_refine,
    choose_refine,
    fit_pixel_head,
    pixel_features,
    refine_probabilities,
    resolve_refine,
)


def _blob_task(n: int, size: int = 32, seed: int = 0):
    """Images with one bright square each, at a random place; labels = the square."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, size, size)).astype(np.float32) * 0.4
    labels = np.zeros((n, size, size), np.float32)
    for i in range(n):
        r, c = rng.integers(0, size - 10, 2)
        images[i, r:r + 10, c:c + 10] += 0.5
        labels[i, r:r + 10, c:c + 10] = 1
    return images, labels


def _mean_label(q, si, sl):
    """A stand-in model that ignores the images: every query gets the mean support label."""
    return sl.mean(dim=0, keepdim=True).expand(q.shape[0], -1, -1)


def test_features_have_one_column_per_filter_and_pixel():
    image = np.random.default_rng(0).random((12, 10)).astype(np.float32)
    prob = np.full((12, 10), 0.3, np.float32)
    grey = pixel_features(image, prob)
    assert grey.shape == (120, 15) and grey.dtype == np.float32
    assert np.isfinite(grey).all()
    np.testing.assert_allclose(grey[:, 0], image.ravel())  # the image itself comes first
    colour = pixel_features(image, prob, np.stack([image, image * 0.5, 1 - image]))
    assert colour.shape == (120, 21)
    # the model's probability enters as a logit, also where it is exactly 0 or 1
    edge = pixel_features(image, np.where(image > 0.5, 1.0, 0.0).astype(np.float32))
    assert np.isfinite(edge).all()
    # the experiment's coarse filters come after the fine ones: grey 3, colour 3, logit 2
    coarse = pixel_features(image, prob, coarse=True)
    assert coarse.shape == (120, 20)
    np.testing.assert_array_equal(coarse[:, :15], grey)
    assert pixel_features(image, prob, np.stack([image] * 3), coarse=True).shape == (120, 29)
    assert pixel_features(image, None, coarse=True).shape == (120, 15)


def test_head_learns_a_pixel_rule_and_is_deterministic():
    images, labels = _blob_task(6)
    prob = np.full_like(images, 0.5)  # an uninformative model
    feats = np.concatenate([pixel_features(images[i], prob[i]) for i in range(6)])
    head = fit_pixel_head(feats, labels.reshape(-1), seed=3)
    again = fit_pixel_head(feats, labels.reshape(-1), seed=3)
    test_images, test_labels = _blob_task(3, seed=1)
    out = refine_probabilities(head, test_images, np.full_like(test_images, 0.5))
    assert out.shape == test_images.shape and out.min() >= 0 and out.max() <= 1
    assert float(np.mean(dice(out >= 0.5, test_labels >= 0.5))) > 0.8
    np.testing.assert_array_equal(
        out, refine_probabilities(again, test_images, np.full_like(test_images, 0.5)))
    with torch.inference_mode():  # callers may run everything under inference mode
        inside = fit_pixel_head(feats, labels.reshape(-1), seed=3)
    np.testing.assert_array_equal(
        out, refine_probabilities(inside, test_images, np.full_like(test_images, 0.5)))


def test_auto_uses_the_head_where_it_beats_the_model_on_the_supports():
    images, labels = _blob_task(8)
    check = choose_refine(_mean_label, torch.from_numpy(images), torch.from_numpy(labels),
                          cut=0.5, mode="auto")
    assert check.use and check.head is not None and check.supports == 8
    assert check.fitted > check.model + 0.3  # the blurred mean label against bright squares
    assert check.cut == 0.5  # the only cut offered
    cuts = choose_refine(_mean_label, torch.from_numpy(images), torch.from_numpy(labels),
                         cut=0.5, mode="auto", head_cuts=THRESHOLD_GRID)
    assert cuts.use and cuts.cut in THRESHOLD_GRID and cuts.fitted >= check.fitted
    assert not check.folds_kept and not cuts.folds_kept  # the fit on all supports is sound
    assert check.seen >= check.fitted  # it does better on supports it has seen


def test_a_failed_fit_on_all_the_supports_falls_back_to_the_checked_fold_heads(monkeypatch):
    import incontext.refine as refine

    images, labels = _blob_task(8)
    fits = []

    def fit_then_fail(features, targets, seed=0, steps=refine.HEAD_STEPS):
        head = fit_pixel_head(features, targets, seed, steps)
        fits.append(head)
        if len(fits) == 3:  # the fit on all the supports, after the two folds: it failed
            with torch.no_grad():
                last = head.net[-1]
                last.weight.zero_()
                last.bias.fill_(-8.0)  # predicts background everywhere
        return head

    monkeypatch.setattr(refine, "fit_pixel_head", fit_then_fail)
    check = choose_refine(_mean_label, torch.from_numpy(images), torch.from_numpy(labels),
                          cut=0.5, mode="auto")
    assert len(fits) == 3 and check.use and check.folds_kept
    assert check.seen < check.fitted - refine.FAILED_FIT_MARGIN
    assert isinstance(check.head, refine.AveragedHeads) and check.head.heads == tuple(fits[:2])
    queries, truth = _blob_task(3, seed=1)
    out = refine_probabilities(check.head, queries, np.full_like(queries, 0.5))
    feats = pixel_features(queries[0], np.full_like(queries[0], 0.5))
    np.testing.assert_allclose(out[0].ravel(), (fits[0].predict(feats) + fits[1].predict(feats))
                               / 2, rtol=1e-6)
    assert float(np.mean(dice(out >= 0.5, truth >= 0.5))) > 0.8  # not the failed head's nothing


def test_auto_keeps_a_model_that_is_already_right():
    images, labels = _blob_task(6)

    def oracle(q, si, sl):  # knows every answer: the square is where the image is bright
        return (q > 0.45).float()

    check = choose_refine(oracle, torch.from_numpy(images), torch.from_numpy(labels),
                          mode="auto")
    assert check.model == pytest.approx(1.0)
    assert not check.use and check.head is None and check.fitted <= 1.0


def test_check_caps_the_supports_and_needs_two():
    calls = []

    def counting(q, si, sl):
        calls.append(si.shape[0])
        return _mean_label(q, si, sl)

    images, labels = _blob_task(10)
    check = choose_refine(counting, torch.from_numpy(images), torch.from_numpy(labels),
                          mode="on", max_supports=4)
    assert check.use and check.supports == 4 and calls == [9] * 4
    assert check.model is None and check.fitted is None  # "on" does not compare
    one = choose_refine(counting, torch.from_numpy(images[:1]), torch.from_numpy(labels[:1]),
                        mode="on")
    assert not one.use and one.head is None
    off = choose_refine(counting, torch.from_numpy(images), torch.from_numpy(labels),
                        mode="off")
    assert not off.use and len(calls) == 4  # nothing run


def test_bad_setting_is_refused_and_default_resolves():
    with pytest.raises(ValueError, match="refine must be one of off, on, auto"):
        check_refine("yes")
    assert resolve_refine("on", 16) == "on"
    assert [resolve_refine(None, n) for n in (1, 2, 16, 64)] == ["off", "auto", "auto", "auto"]
    assert resolve_refine("default", 1) == "off" and resolve_refine("off", 16) == "off"
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    label = np.zeros((16, 16), np.uint8)
    label[2:8, 2:8] = 1
    with pytest.raises(SupportSetError, match="refine"):
        segment(MeanSupportLabel(16), image, [image], [label], refine="maybe")


def test_segment_refines_where_asked_and_reports_it():
    images, labels = _blob_task(9)
    query, truth = images[8], labels[8]
    support_images, support_labels = list(images[:8]), list(labels[:8].astype(np.uint8))
    model = MeanSupportLabel(32)
    off = segment(model, query, support_images, support_labels, refine="off",
                  supports_normalized=True)
    auto = segment(model, query, support_images, support_labels, refine="auto",
                   supports_normalized=True)
    assert off.refined == [False] and auto.refined == [True]
    assert auto.thresholds[0] in THRESHOLD_GRID  # the head's cut, chosen on the supports
    assert auto.support_checks == [8] and auto.support_dice[0] > 0.8  # the head's own check
    assert float(dice(auto.mask > 0, truth > 0)) > float(dice(off.mask > 0, truth > 0)) + 0.3
    # with a fixed cut the head's 0.5 is moved there: the same mask at any fixed cut
    fixed = segment(model, query, support_images, support_labels, refine="on", threshold=0.3,
                    supports_normalized=True)
    half = segment(model, query, support_images, support_labels, refine="on", threshold=0.5,
                   supports_normalized=True)
    assert fixed.refined == half.refined == [True] and fixed.thresholds == [0.5]
    np.testing.assert_array_equal(fixed.mask, half.mask)
    assert (fixed.probabilities[0] >= 0.3).sum() == (half.probabilities[0] >= 0.5).sum()
    # the head is kept with the label's other choices for the next call
    reuse: dict = {}
    first = segment(model, query, support_images, support_labels, refine="auto", reuse=reuse,
                    supports_normalized=True)
    again = segment(model, query, support_images, support_labels, refine="auto", reuse=reuse,
                    supports_normalized=True)
    assert first.refined == again.refined == [True]
    np.testing.assert_array_equal(first.probabilities, again.probabilities)


def test_segment_keeps_a_model_that_needs_no_head():
    images, labels = _blob_task(6)
    label_maps = list(labels.astype(np.uint8))
    # the query's own intensity, on images that are their labels: already perfect
    result = segment(EchoQuery(32), labels[0], list(labels), label_maps, refine="auto",
                     supports_normalized=True)
    assert result.refined == [False]


def test_benchmark_method_names_and_records_the_choice():
    images, labels = _blob_task(9)
    method = ModelMethod(MeanSupportLabel(32), name="m", refine="auto")
    assert method.name == "m-refine-auto" and method.describe()["refine"] == "auto"
    prob = method.predict(images[:8], labels[:8], images[8:], seed=0)
    assert method.chosen_refine == [True]
    assert float(dice(prob[0] >= 0.5, labels[8] >= 0.5)) > 0.8
    plain = ModelMethod(MeanSupportLabel(32), name="m")
    assert plain.name == "m" and "refine" not in plain.describe()
