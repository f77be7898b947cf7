"""Test-time augmentation: symmetries, averaging, and the plumbing into segment / volumes /
benchmark / CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import FakeModel, MeanSupportLabel

from incontext.benchmark.methods import ModelMethod
from incontext.cli import build_parser
from incontext.inference import SupportSetError, segment
from incontext.tta import SYMMETRIES, check_tta, with_tta
from incontext.volumes import VolumeError, segment_volume


class TopRows(FakeModel):
    """Probability 1 on the top quarter of rows, whatever the inputs (not equivariant)."""

    def __init__(self, resolution: int = 16) -> None:
        super().__init__(resolution)
        self.calls = 0

    def forward(self, target, images, labels):
        self.calls += 1
        p = torch.full_like(target, 1e-3)
        p[..., : target.shape[-2] // 4, :] = 1 - 1e-3
        return self.logit(p)


def test_symmetries_are_the_eight_distinct_square_symmetries_and_invert():
    x = torch.arange(16.0).view(1, 4, 4)
    outputs = {tuple(fwd(x).flatten().tolist()) for _, fwd, _ in SYMMETRIES}
    assert len(outputs) == 8
    y = torch.rand(3, 5, 5)
    for name, fwd, inv in SYMMETRIES:
        assert torch.equal(inv(fwd(y)), y), name


def test_equivariant_predictor_is_unchanged_and_fixed_pattern_is_symmetrised():
    q = torch.rand(2, 8, 8)
    si = torch.rand(3, 8, 8)
    sl = (torch.rand(3, 8, 8) > 0.5).float()

    def pixelwise(a, b, c):  # commutes with every flip and rotation
        return 0.5 * a + 0.5 * c.mean(0)

    for n in (1, 2, 4, 8):
        torch.testing.assert_close(with_tta(pixelwise, n)(q, si, sl), pixelwise(q, si, sl))
    ramp = torch.arange(8.0).view(1, 1, 8).expand(2, 8, 8)
    fixed = with_tta(lambda a, b, c: ramp, 2)(q, si, sl)  # identity + left-right flip
    torch.testing.assert_close(fixed, torch.full((2, 8, 8), 3.5))


def test_query_and_supports_get_the_same_transform():
    seen = []

    def record(a, b, c):
        seen.append((a.clone(), b.clone(), c.clone()))
        return a

    q = torch.rand(1, 6, 6)
    with_tta(record, 8)(q, q.clone(), q.clone())
    assert len(seen) == 8
    for a, b, c in seen:
        assert torch.equal(a, b) and torch.equal(a, c)


def test_bad_tta_values_are_refused():
    for bad in (0, 3, 16, True, "4", 2.0):
        with pytest.raises(ValueError, match="tta must be one of"):
            check_tta(bad)
    with pytest.raises(ValueError, match="square"):
        with_tta(lambda a, b, c: a, 8)(torch.rand(1, 4, 6), torch.rand(1, 4, 6),
                                       torch.rand(1, 4, 6))


def test_segment_averages_over_symmetries_at_n_times_the_passes():
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    label = np.zeros((32, 32), np.uint8)
    label[8:20, 8:20] = 1
    plain, flipped = TopRows(16), TopRows(16)
    one = segment(plain, image, [image], [label], threshold=0.5)
    four = segment(flipped, image, [image], [label], threshold=0.5, tta=4)
    assert flipped.calls == 4 * plain.calls
    # the top-rows pattern flipped up-down lands on the bottom rows: averaged, 0.5 there
    assert one.probabilities[0, 0, 16] > 0.9 and one.probabilities[0, -1, 16] < 0.1
    assert abs(four.probabilities[0, 0, 16] - 0.5) < 0.05
    assert abs(four.probabilities[0, -1, 16] - 0.5) < 0.05
    # an equivariant model gives the same answer with or without tta
    a = segment(MeanSupportLabel(16), image, [image], [label], threshold=0.5)
    b = segment(MeanSupportLabel(16), image, [image], [label], threshold=0.5, tta=8)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
    with pytest.raises(SupportSetError, match="tta"):
        segment(plain, image, [image], [label], tta=3)


def test_volumes_and_benchmark_method_take_tta():
    vol = np.random.default_rng(1).random((6, 20, 20)).astype(np.float32)
    lab = np.zeros((6, 20, 20), np.uint8)
    lab[:, 5:12, 5:12] = 1
    model = TopRows(16)
    segment_volume(model, vol, [vol], [lab], axis=0, support_size=2)
    base = model.calls
    segment_volume(model, vol, [vol], [lab], axis=0, support_size=2, tta=2)
    assert model.calls - base == 2 * base
    with pytest.raises(VolumeError, match="tta"):
        segment_volume(model, vol, [vol], [lab], tta=5)
    method = ModelMethod(TopRows(16), name="m", tta=4)
    assert method.name == "m-tta4" and method.describe()["tta"] == 4
    assert "tta" not in ModelMethod(TopRows(16), name="m").describe()  # old cache keys kept
    prob = method.predict(vol[:2], lab[:2].astype(np.float32), vol[2:4], seed=0)
    assert abs(float(prob[0, 0, 10]) - 0.5) < 0.05


def test_cli_accepts_only_the_tta_choices():
    parser = build_parser()
    args = parser.parse_args(["benchmark", "--index", "x.h5", "--model-tta", "8"])
    assert args.model_tta == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--index", "x.h5", "--model-tta", "3"])
    args = parser.parse_args(["segment", "--support", "s", "--query", "q", "--out", "o",
                              "--tta", "4"])
    assert args.tta == 4
