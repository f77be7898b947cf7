"""Per-query support selection (incontext.support_selection) and the benchmark's use of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import MeanSupportLabel

from incontext.benchmark.methods import ModelMethod, load_model_method
from incontext.inference import segment
from incontext.support_selection import (
    check_nearest,
    image_features,
    nearest_supports,
    run_with_nearest,
)


def segment_plain(*args, **kwargs):
    """``segment`` without the pixel head (these tests check what the model alone does)."""
    return segment(*args, refine="off", **kwargs)


def _halves(n_left: int, n_right: int, size: int = 32, seed: int = 0):
    """Images bright on the left or right half (with noise), labelled with that half."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for side in ["left"] * n_left + ["right"] * n_right:
        lab = np.zeros((size, size), np.float32)
        if side == "left":
            lab[:, : size // 2] = 1
        else:
            lab[:, size // 2:] = 1
        images.append(np.clip(0.2 + 0.6 * lab + rng.normal(0, 0.05, lab.shape), 0, 1))
        labels.append(lab)
    return np.stack(images).astype(np.float32), np.stack(labels)


def test_features_are_unit_norm_and_ignore_brightness_offset():
    x = torch.rand(3, 40, 50)
    f = image_features(x)
    assert f.shape == (3, 1024)
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(image_features(x + 0.3), f, atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        image_features(torch.rand(2, 1, 8, 8))


def test_nearest_supports_finds_the_look_alike_first():
    rng = np.random.default_rng(1)
    supports = torch.from_numpy(rng.random((10, 24, 24)).astype(np.float32))
    queries = supports[[7, 2]] + 0.01 * torch.randn(2, 24, 24)
    idx = nearest_supports(queries, supports, 3)
    assert idx.shape == (2, 3)
    assert idx[:, 0].tolist() == [7, 2]
    assert nearest_supports(queries, supports, 50).shape == (2, 10)  # capped at S


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4"])
def test_check_nearest_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="nearest"):
        check_nearest(bad)


def test_run_with_nearest_gives_each_query_its_own_supports_in_order():
    si, sl = (torch.from_numpy(a) for a in _halves(4, 4))
    qi = si[[5, 0, 6]] + 0.01  # right, left, right
    calls = []

    def run(q, s_img, s_lab):
        calls.append((q.shape[0], s_img.shape[0]))
        return s_lab.mean(dim=0, keepdim=True).expand(q.shape[0], -1, -1)

    out = run_with_nearest(run, 4)(qi, si, sl)
    assert sorted(calls) == [(1, 4), (2, 4)]  # the two right-half queries run together
    assert torch.equal(out[0], sl[5]) and torch.equal(out[2], sl[5])
    assert torch.equal(out[1], sl[0])
    calls.clear()
    run_with_nearest(run, 8)(qi, si, sl)  # k >= S: one call with everything
    assert calls == [(3, 8)]
    assert run_with_nearest(run, None) is run


def test_model_method_with_nearest_uses_the_similar_supports():
    si, sl = _halves(4, 4)
    query = si[:1] + 0.01  # a left-half image
    plain = ModelMethod(MeanSupportLabel(32), name="m")
    near = ModelMethod(MeanSupportLabel(32), name="m", nearest=4)
    p_all = plain.predict(si, sl, query, seed=0)
    p_near = near.predict(si, sl, query, seed=0)
    assert np.allclose(p_all, 0.5, atol=1e-3)  # half the supports say left, half right
    assert np.allclose(p_near[0], sl[0], atol=1e-3)  # only the left-half supports
    assert near.name == "m-nn4" and near.describe()["nearest"] == 4
    assert "nearest" not in plain.describe()  # old cache keys kept
    with pytest.raises(ValueError, match="nearest"):
        ModelMethod(MeanSupportLabel(32), nearest=0)


def test_segment_with_nearest_uses_the_similar_supports():
    from incontext.inference import SupportSetError

    si, sl = _halves(4, 4)
    query = si[6] + 0.01  # a right-half image
    kwargs = {"threshold": 0.5, "supports_normalized": True, "colour": "luma"}
    plain = segment_plain(MeanSupportLabel(32), query, si, sl.astype(np.uint8), **kwargs)
    near = segment_plain(MeanSupportLabel(32), query, si, sl.astype(np.uint8), nearest=4,
                         **kwargs)
    assert np.allclose(plain.probabilities[0], 0.5, atol=1e-3)
    np.testing.assert_array_equal(near.mask, sl[6].astype(near.mask.dtype))
    with pytest.raises(SupportSetError, match="nearest"):
        segment_plain(MeanSupportLabel(32), query, si, sl.astype(np.uint8), nearest=0)


def test_segment_nearest_chooses_among_all_supports(monkeypatch):
    import incontext.inference as inference

    monkeypatch.setattr(inference, "DEFAULT_SUPPORT_SIZE", 4)  # subsets of 4 without nearest
    si, sl = _halves(4, 4)
    query = si[1] + 0.01  # a left-half image
    kwargs = {"threshold": 0.5, "supports_normalized": True, "colour": "luma", "seed": 3,
              "refine": "off"}
    near = inference.segment(MeanSupportLabel(32), query, si, sl.astype(np.uint8), nearest=4,
                             **kwargs)
    np.testing.assert_array_equal(near.mask, sl[1].astype(near.mask.dtype))
    plain = inference.segment(MeanSupportLabel(32), query, si, sl.astype(np.uint8), **kwargs)
    assert not np.array_equal(plain.mask, near.mask)  # a random 4 of the 8 mixes both sides


def test_load_model_method_passes_nearest_on():
    method, note = load_model_method(MeanSupportLabel(32), nearest=16, threshold="auto")
    assert note is None and method.nearest == 16 and method.name.endswith("-thr-auto-nn16")


def test_benchmark_cli_parses_model_nearest():
    from incontext.cli import build_parser

    args = build_parser().parse_args(["benchmark", "--index", "x.h5", "--model-nearest", "16"])
    assert args.model_nearest == 16
    assert build_parser().parse_args(["benchmark", "--index", "x.h5"]).model_nearest is None
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["benchmark", "--index", "x.h5", "--model-nearest", bad])
