"""Per-query support selection (incontext.support_selection) and the benchmark's use of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import MeanSupportLabel

from incontext.benchmark.methods import ModelMethod, load_model_method
from incontext.inference import segment
from incontext.support_selection import (
    DEFAULT_NEAREST,
    check_nearest,
    image_features,
    nearest_supports,
    resolve_nearest,
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


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "4", "auto"])
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


def test_resolve_nearest_defaults_to_16_only_above_16_supports():
    assert DEFAULT_NEAREST == 16
    assert resolve_nearest(None, 16) is None and resolve_nearest("default", 16) is None
    assert resolve_nearest(None, 17) == 16 and resolve_nearest("default", 240) == 16
    assert resolve_nearest("off", 240) is None
    assert resolve_nearest(4, 3) == 4  # an explicit k is kept (capped where it is used)
    with pytest.raises(ValueError, match="nearest"):
        resolve_nearest("some", 20)
    with pytest.raises(ValueError, match="nearest"):  # the internal runners take numbers only
        run_with_nearest(lambda q, s, lab: q, "default")


class _CountSupports(MeanSupportLabel):
    """MeanSupportLabel that records how many supports each forward pass gets."""

    def __init__(self, size):
        super().__init__(size)
        self.counts = []

    def forward(self, target, images, labels):
        self.counts.append(int(images.shape[1]))
        return super().forward(target, images, labels)


def test_segment_default_gives_each_query_its_16_nearest_of_a_large_support_set():
    si, sl = _halves(12, 12)  # 24 supports
    query = si[3] + 0.01  # a left-half image
    kwargs = {"threshold": 0.5, "supports_normalized": True, "colour": "luma", "refine": "off"}
    model = _CountSupports(32)
    near = segment(model, query, si, sl.astype(np.uint8), **kwargs)
    assert model.counts == [16]  # one pass, with 16 of the 24
    assert near.nearest == 16
    # the 16 most alike are the 12 left-half images first: the left half dominates
    assert near.probabilities[0][:, :16].mean() > 0.7 > near.probabilities[0][:, 16:].mean()
    model = _CountSupports(32)
    off = segment(model, query, si, sl.astype(np.uint8), nearest="off", **kwargs)
    assert model.counts == [24] and np.allclose(off.probabilities[0], 0.5, atol=1e-3)
    assert off.nearest is None
    model = _CountSupports(32)
    assert segment(model, query, si[:16], sl[:16].astype(np.uint8), **kwargs).nearest is None
    assert model.counts == [16]  # 16 supports: all of them, as before
    model = _CountSupports(32)  # ensemble members keep their random subsets
    segment(model, query, si, sl.astype(np.uint8), ensemble=2, support_size=20, **kwargs)
    assert model.counts == [20, 20]


def test_model_method_nearest_default_follows_the_support_count():
    si, sl = _halves(12, 12)
    query = si[:1] + 0.01
    model = _CountSupports(32)
    method = ModelMethod(model, name="m", nearest="default")
    assert method.name == "m-nn-default" and method.describe()["nearest"] == "default"
    method.predict(si, sl, query, seed=0)
    assert model.counts == [16]
    method.predict(si[:8], sl[:8], query, seed=0)
    assert model.counts == [16, 8]
    off = ModelMethod(MeanSupportLabel(32), name="m", nearest="off")
    assert off.name == "m" and "nearest" not in off.describe()  # the same rows as before
    model = _CountSupports(32)  # the benchmark's default stays all the supports
    plain = ModelMethod(model, name="m")
    plain.predict(si, sl, query, seed=0)
    assert model.counts == [24] and plain.name == "m"


def test_cli_nearest_takes_a_number_default_or_off():
    from incontext.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["benchmark", "--index", "x.h5", "--model-nearest", "default"]).model_nearest \
        == "default"
    base = ["segment", "--support-dir", "s", "--query", "q", "--out", "o"]
    assert parse(base + ["--nearest", "off"]).nearest == "off"
    assert parse(base + ["--nearest", "8"]).nearest == 8
    assert parse(base).nearest is None
    with pytest.raises(SystemExit):
        parse(base + ["--nearest", "auto"])


def test_support_check_table_says_how_many_supports_each_query_had():
    from rich.console import Console

    from incontext.cli.segment_report import label_choices, print_support_checks

    si, sl = _halves(12, 12)
    result = segment(MeanSupportLabel(32), si[3] + 0.01, si, sl.astype(np.uint8),
                     supports_normalized=True, colour="luma", refine="off")
    (choice,) = label_choices(result, [1])
    assert choice.nearest == 16
    console = Console(record=True, width=200)
    print_support_checks([choice], console)
    text = console.export_text()
    assert "supports per query" in text and "16 nearest" in text


def test_low_support_dice_note_suggests_the_hand_over_only_where_it_was_not_tried():
    from rich.console import Console

    from incontext.cli.segment_report import LabelChoice, print_support_checks

    def notes(choice: LabelChoice) -> str:
        console = Console(record=True, width=400)
        print_support_checks([choice], console)
        return "\n".join(line for line in console.export_text().splitlines()
                         if line.startswith("note:"))

    low = LabelChoice(label=1, tiles=1, cut=0.3, rendering="luma", support_dice=0.31,
                      support_checks=8)
    assert "label 1 reaches Dice 0.31" in notes(low) and "--hand-over" in notes(low)
    compared = {"model_dice": 0.31, "unet_dice": 0.2, "unet_size": 128}
    tried = LabelChoice(label=1, tiles=1, cut=0.3, rendering="luma", support_dice=0.31,
                        support_checks=8, hand_over=compared)
    assert "label 1 reaches" in notes(tried) and "--hand-over" not in notes(tried)
    good = LabelChoice(label=1, tiles=1, cut=0.3, rendering="luma", support_dice=0.8,
                       support_checks=8)
    assert notes(good) == ""
