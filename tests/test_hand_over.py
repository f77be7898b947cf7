"""The U-Net hand-over: compared on the supports, used only where the U-Net wins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import EchoQuery, FakeModel

from incontext.benchmark.methods import ModelMethod
from incontext.hand_over import (
    UNetHandOver,
    cross_validated_dice,
    fold_parts,
    prefers_unet,
    unet_working_size,
)
from incontext.inference import segment
from incontext.metrics import dice


class Blank(FakeModel):
    """Predicts background everywhere: any U-Net that learns something beats it."""

    def forward(self, target, images, labels):
        return torch.full_like(target, -5.0)


def bright_squares(n: int, seed: int, size: int = 40) -> tuple[list, list]:
    """Images with bright squares (label 1) and a bright bar (label 2) on dark noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        lab = np.zeros((size, size), np.uint8)
        for _ in range(3):
            y, x = rng.integers(4, size - 10, 2)
            lab[y:y + 6, x:x + 6] = 1
        images.append((rng.random((size, size)) * 0.4 + 0.5 * (lab > 0)).astype(np.float32))
        labels.append(lab)
    return images, labels


def test_fold_parts_cover_every_support_once():
    parts = fold_parts(10, 4, seed=3)
    assert len(parts) == 4
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert len(fold_parts(3, 4, seed=0)) == 3  # never an empty part
    assert [p.tolist() for p in fold_parts(10, 4, 3)] == [p.tolist() for p in parts]


def test_cross_validated_dice_segments_each_support_from_the_others():
    truths = [np.eye(4, dtype=bool)] * 4 + [np.ones((4, 4), bool)] * 2
    seen = []

    def echo_truth(rest, part):  # perfect except that support 5 comes back empty
        seen.append((set(rest.tolist()), set(part.tolist())))
        return [truths[i] if i != 5 else np.zeros((4, 4), bool) for i in part]

    assert cross_validated_dice(echo_truth, truths, folds=3, seed=0) == pytest.approx(5 / 6)
    assert all(not (r & p) and len(r | p) == 6 for r, p in seen)
    assert cross_validated_dice(echo_truth, truths[:1], folds=3, seed=0) is None


def test_prefers_unet_needs_a_margin_and_two_scores():
    assert prefers_unet(0.5, 0.6, 0.03)
    assert not prefers_unet(0.5, 0.52, 0.03)
    assert not prefers_unet(None, 0.9, 0.03)
    assert not prefers_unet(0.5, None, 0.0)


STEPS = 40  # U-Net steps: enough for these easy tasks, cheap on a CPU


@pytest.fixture(scope="module")
def blank_hand_over():
    """A hand-over from a model that finds nothing, its queries, truths and results."""
    s_img, s_lab = bright_squares(8, seed=0)
    q_img, q_lab = bright_squares(3, seed=1)
    hand = UNetHandOver(Blank(32), s_img, s_lab, unet_steps=STEPS, refine="off")
    return hand, q_img, q_lab, hand.segment(q_img)


def test_blank_model_hands_over_and_the_unet_segments(blank_hand_over):
    hand, q_img, q_lab, results = blank_hand_over
    (choice,) = hand.choices
    assert choice.method == "unet" and choice.supports == 8
    assert choice.model_dice == pytest.approx(0.0)
    assert choice.unet_dice > 0.5
    for r, truth in zip(results, q_lab, strict=True):
        assert r.methods == ["unet"]
        assert r.support_dice == [pytest.approx(choice.unet_dice)]
        assert r.mask.shape == truth.shape
        assert dice(r.mask == 1, truth == 1) > 0.5
        assert np.array_equal(r.mask == 1, r.probabilities[0] >= 0.5)
        assert not r.uncertainty.any()
    # a second call reuses the choice and the trained network: the same masks
    again = hand.segment(q_img)
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(results, again, strict=True))


def test_fixed_threshold_keeps_the_unet_cut_at_half(blank_hand_over):
    _, q_img, _, auto = blank_hand_over
    s_img, s_lab = bright_squares(8, seed=0)
    fixed = UNetHandOver(Blank(32), s_img, s_lab, unet_steps=STEPS, refine="off", threshold=0.2
                         ).segment(q_img)
    for a, f in zip(auto, fixed, strict=True):
        assert np.array_equal(a.mask, f.mask)  # the same U-Net, the same 0.5 cut
        assert np.array_equal(f.mask == 1, f.probabilities[0] >= 0.2)


def test_model_that_wins_on_the_supports_keeps_the_label():
    s_img, s_lab = bright_squares(8, seed=0)
    q_img, _ = bright_squares(2, seed=1)
    model = EchoQuery(32)  # probability = intensity: near perfect on these images
    hand = UNetHandOver(model, s_img, s_lab, unet_steps=20)
    results = hand.segment(q_img)
    assert [c.method for c in hand.choices] == ["model"]
    plain = segment(model, q_img, s_img, s_lab)
    for r, p in zip(results, plain, strict=True):
        assert r.methods == ["model"]
        assert np.array_equal(r.mask, p.mask)


def test_two_labels_are_compared_separately_and_a_missing_one_stays_with_the_model():
    s_img, s_lab = bright_squares(6, seed=2)
    for img, lab in zip(s_img, s_lab, strict=True):
        lab[:3, :] = 2  # a bright bar along the top: label 2
        img[:3, :] = 1.0
    hand = UNetHandOver(Blank(32), s_img, s_lab, unet_steps=STEPS, labels=[1, 2, 3],
                        refine="off")
    with pytest.warns(UserWarning, match="do not occur"):
        result = hand.segment(s_img[0])
    assert [c.label for c in hand.choices] == [1, 2, 3]
    assert hand.choices[2].method == "model" and hand.choices[2].supports == 0
    assert result.methods[:2] == ["unet", "unet"] and result.methods[2] == "model"
    assert set(np.unique(result.mask)) <= {0, 1, 2}


def test_too_few_supports_are_not_compared():
    s_img, s_lab = bright_squares(1, seed=0)
    hand = UNetHandOver(Blank(32), s_img, s_lab, unet_steps=5)
    hand.segment(s_img[0])
    assert hand.choices[0].method == "model" and hand.choices[0].model_dice is None


@pytest.mark.parametrize("kwargs, match", [({"folds": 1}, "folds"), ({"unet_steps": 0}, "steps"),
                                           ({"margin": 1.5}, "margin"),
                                           ({"reuse": {}}, "reuse")])
def test_bad_settings_are_named(kwargs, match):
    s_img, s_lab = bright_squares(2, seed=0)
    with pytest.raises(ValueError, match=match):
        UNetHandOver(Blank(32), s_img, s_lab, **kwargs)
    if "reuse" not in kwargs:
        with pytest.raises(ValueError, match=match):
            ModelMethod(Blank(32), hand_over=True, **kwargs)


def test_benchmark_method_hands_over_per_prediction():
    s_img, s_lab = bright_squares(8, seed=0)
    q_img, q_lab = bright_squares(3, seed=1)
    si, sl = np.stack(s_img), np.stack(s_lab).astype(np.float32)
    method = ModelMethod(Blank(40), name="blank", hand_over=True, unet_steps=STEPS)
    assert method.name == "blank-hand-over"
    assert method.describe()["hand_over"]["unet"]["steps"] == STEPS
    prob = method.predict(si, sl, np.stack(q_img), seed=0)
    assert method.chosen_methods == ["unet"]
    assert (dice(prob >= 0.5, np.stack(q_lab) == 1) > 0.5).all()
    keep = ModelMethod(EchoQuery(40), name="echo", hand_over=True, unet_steps=20)
    plain = ModelMethod(EchoQuery(40), name="echo")
    assert np.array_equal(keep.predict(si, sl, np.stack(q_img), seed=0),
                          plain.predict(si, sl, np.stack(q_img), seed=0))
    assert keep.chosen_methods == ["model"]


def test_the_checks_on_parts_of_the_supports_are_not_recorded_as_choices():
    s_img, s_lab = bright_squares(8, seed=0)
    q_img, _ = bright_squares(2, seed=1)
    si, sl = np.stack(s_img), np.stack(s_lab).astype(np.float32)
    kept = ModelMethod(EchoQuery(40), name="echo", threshold="auto", hand_over=True,
                       unet_steps=5)
    for seed in (0, 1):
        kept.predict(si, sl, np.stack(q_img), seed=seed)
    assert kept.chosen_methods == ["model", "model"] and kept.last_method == "model"
    assert len(kept.chosen_thresholds) == 2  # one cut per prediction, none from the folds


def test_benchmark_rows_record_each_draws_choice():
    from incontext.benchmark.protocol import TaskData
    from incontext.benchmark.runner import BenchmarkConfig, run_method_on_task

    s_img, s_lab = bright_squares(10, seed=0)
    q_img, q_lab = bright_squares(2, seed=1)
    task = TaskData(name="toy/2d/square", dataset="toy", pool_images=np.stack(s_img),
                    pool_labels=np.stack(s_lab).astype(np.float32),
                    pool_subjects=[f"p{i}" for i in range(10)], query_images=np.stack(q_img),
                    query_labels=np.stack(q_lab).astype(np.float32),
                    query_subjects=["q0", "q1"], query_spacing=None, total_queries=2)
    config = BenchmarkConfig(support_sizes=[8], ensembles=[1], repeats=2, method_repeats={},
                             queries_per_task=None, seed=0)
    handed = ModelMethod(Blank(40), name="blank", hand_over=True, unet_steps=STEPS)
    row = run_method_on_task(handed, task, 8, [1], config)[1][0]
    assert row.draw_methods == ["unet", "unet"]
    kept = ModelMethod(EchoQuery(40), name="echo", hand_over=True, unet_steps=5)
    assert run_method_on_task(kept, task, 8, [1], config)[1][0].draw_methods == ["model"] * 2
    plain = ModelMethod(EchoQuery(40), name="echo")
    assert run_method_on_task(plain, task, 8, [1], config)[1][0].draw_methods == []


def test_the_unet_works_at_twice_the_model_size_on_large_images():
    assert unet_working_size([(40, 40)] * 3, 32) == 32
    assert unet_working_size([(300, 500), (64, 64), (280, 280)], 128) == 256  # median 280
    assert unet_working_size([(200, 600)] * 2, 128) == 128  # shorter side under 256
    s_img, s_lab = bright_squares(4, seed=0, size=80)
    hand = UNetHandOver(Blank(32), s_img, s_lab, unet_steps=STEPS)
    assert hand.size == 64
    result = hand.segment(s_img[0])  # a blank model: the U-Net takes over, at 64 px
    assert hand.choices[0].unet_size == 64 and result.methods == ["unet"]
    assert result.mask.shape == (80, 80) and dice(result.mask == 1, s_lab[0] == 1) > 0.5
    assert UNetHandOver(Blank(32), s_img, s_lab, unet_size=48).size == 48
    with pytest.raises(ValueError, match="unet_size"):
        UNetHandOver(Blank(32), s_img, s_lab, unet_size=4)
