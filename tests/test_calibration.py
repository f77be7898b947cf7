"""Per-task calibration on the support set (incontext.calibration) and ``threshold="auto"``
in ``segment``, the benchmark method and the CLI, with fake models of known output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import EchoQuery

from incontext.calibration import (
    THRESHOLD_GRID,
    dice_at,
    rescale_to_threshold,
    support_calibration,
)
from incontext.inference import SupportSetError, segment


def segment_plain(*args, **kwargs):
    """``segment`` without the pixel head (these tests check what the model alone does)."""
    return segment(*args, refine="off", **kwargs)


def faint_set(n: int = 6, size: int = 32, level: float = 0.3, seed: int = 0):
    """Images whose foreground square has intensity ``level`` (bg 0, one bright bg pixel so
    min-max normalisation keeps ``level``); labels mark the square."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), np.float32)
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        y, x = rng.integers(4, size - 14, 2)
        images[i, y:y + 10, x:x + 10] = level
        labels[i, y:y + 10, x:x + 10] = 1
        images[i, 0, 0] = 1.0
    return images, labels


def echo_run(g, q, si, sl):
    return q  # probability = query intensity, whatever the tiling


def test_rescale_sends_the_threshold_to_one_half_monotonically():
    p = torch.linspace(0, 1, 101)
    for t in (0.2, 0.5, 0.7):
        r = rescale_to_threshold(p, t)
        assert torch.equal(r >= 0.5, p >= t)
        assert (r[1:] >= r[:-1]).all() and r[0] == 0 and r[-1] == 1
    with pytest.raises(ValueError, match="threshold"):
        rescale_to_threshold(p, 1.0)


def test_dice_at_counts_empty_on_empty_as_one():
    prob = torch.zeros(2, 4, 4)
    target = torch.zeros(2, 4, 4)
    target[1, 0, 0] = 1
    assert dice_at(prob, target).tolist() == [1.0, 0.0]
    assert dice_at(prob + 0.3, target, 0.25)[1] == pytest.approx(2 / 17)


def test_calibration_lowers_the_cut_for_faint_foreground():
    images, labels = faint_set(level=0.3)
    cal = support_calibration(echo_run, torch.from_numpy(images),
                              torch.from_numpy(labels).float(), (1,), THRESHOLD_GRID)
    assert cal.tiles == 1 and cal.threshold <= 0.3 and cal.checks == 6
    assert cal.scores[(1, cal.threshold)] > 0.9 > cal.scores[(1, 0.5)]


def test_calibration_keeps_the_default_without_a_clear_gain_or_enough_supports():
    images, labels = faint_set(level=0.9)  # every cut in the grid below 0.9 works
    cal = support_calibration(echo_run, torch.from_numpy(images),
                              torch.from_numpy(labels).float(), (1, 2), THRESHOLD_GRID)
    assert (cal.tiles, cal.threshold) == (1, 0.5) and cal.scores
    faint, flabels = faint_set(n=2, level=0.3)  # 2 supports: too few to judge a cut
    few = support_calibration(echo_run, torch.from_numpy(faint),
                              torch.from_numpy(flabels).float(), (1,), THRESHOLD_GRID)
    assert (few.tiles, few.threshold, few.checks, few.scores) == (1, 0.5, 0, {})


def test_calibration_chooses_tiling_and_cut_jointly_from_supports_only():
    images, labels = faint_set(level=0.3)
    seen = []

    def run(g, q, si, sl):
        seen.append((g, q.shape[0], si.shape[0]))
        return q * (1.0 if g == 1 else 2.0)  # tiling 2 doubles the faint foreground

    cal = support_calibration(run, torch.from_numpy(images), torch.from_numpy(labels).float(),
                              (1, 2), THRESHOLD_GRID, max_checks=4)
    assert cal.checks == 4 and len(seen) == 8
    assert all(n_q == 1 and n_s == 5 for _, n_q, n_s in seen)
    # both (1, t <= 0.3) and (2, t in [0.35, 0.6]) segment perfectly: fewer tiles win ties
    assert cal.tiles == 1 and cal.threshold <= 0.3


def test_segment_auto_threshold_recovers_faint_foreground():
    images, labels = faint_set(n=7, level=0.3)
    fixed = segment_plain(EchoQuery(32), images[0], list(images[1:]), list(labels[1:]),
                    threshold=0.5)
    auto = segment_plain(EchoQuery(32), images[0], list(images[1:]), list(labels[1:]))
    assert fixed.thresholds == [0.5] and not fixed.mask[labels[0] == 1].any()
    assert auto.thresholds[0] <= 0.3
    inter = ((auto.mask == 1) & (labels[0] == 1)).sum()
    assert 2 * inter / ((auto.mask == 1).sum() + labels[0].sum()) > 0.9
    # probabilities are rescaled so that the chosen cut is 0.5
    assert auto.probabilities[0][labels[0] == 1].min() >= 0.5
    with pytest.raises(SupportSetError, match="threshold"):
        segment_plain(EchoQuery(32), images[0], list(images[1:]), list(labels[1:]),
                      threshold="high")


def test_benchmark_method_auto_threshold():
    from incontext.benchmark.methods import ModelMethod

    images, labels = faint_set(n=7, level=0.3)
    m = ModelMethod(EchoQuery(32), name="m", threshold="auto")
    assert m.name == "m-thr-auto" and m.describe()["threshold"] == "auto"
    assert "threshold" not in ModelMethod(EchoQuery(32), name="m").describe()
    prob = m.predict(images[1:], labels[1:].astype(np.float32), images[:1], seed=0)
    assert m.chosen_thresholds and m.chosen_thresholds[0] <= 0.3
    assert (prob[0][labels[0] == 1] >= 0.5).all()
    assert ModelMethod(EchoQuery(32), name="m", threshold=0.3).name == "m-thr0.3"
    with pytest.raises(ValueError, match="threshold"):
        ModelMethod(EchoQuery(32), threshold=1.2)


def test_cli_threshold_values():
    import argparse

    from incontext.cli import threshold_value

    assert threshold_value("auto") == "auto" and threshold_value("0.3") == 0.3
    for bad in ("1.5", "0", "high"):
        with pytest.raises(argparse.ArgumentTypeError):
            threshold_value(bad)


def test_rescale_from_half_inverts_rescale_to_threshold():
    from incontext.calibration import rescale_from_half, rescale_to_threshold

    prob = torch.linspace(0, 1, 101)
    for cut in (0.2, 0.5, 0.7):
        back = rescale_from_half(rescale_to_threshold(prob, cut), cut)
        torch.testing.assert_close(back, prob, atol=1e-6, rtol=0)
        assert bool(((rescale_from_half(prob, cut) >= cut) == (prob >= 0.5)).all())
    with pytest.raises(ValueError, match="cut"):
        rescale_from_half(prob, 1.0)
