"""Tiled in-context inference: tile grid, blending, and agreement with whole-image runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import EchoQuery, MeanSupportLabel

from incontext.inference import SupportSetError, segment
from incontext.tiling import (
    choose_tiles,
    default_tiles,
    predict_tiled,
    tile_origins,
    tiled_size,
)


def test_tile_origins_cover_the_image_with_half_overlap():
    assert tile_origins(64, 64) == [0]
    assert tile_origins(128, 64) == [0, 32, 64]
    assert tile_origins(100, 64) == [0, 32, 36]  # last tile flush with the edge
    for size, tile in [(128, 64), (100, 64), (192, 64)]:
        covered = np.zeros(size, bool)
        for o in tile_origins(size, tile):
            covered[o:o + tile] = True
        assert covered.all()
    with pytest.raises(ValueError):
        tiled_size(64, 0)


def test_pixelwise_predictor_is_reproduced_exactly():
    # a predictor that only looks at each pixel gives the same map tiled or not
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.random((3, 96, 96)).astype(np.float32))
    s = torch.from_numpy(rng.random((2, 96, 96)).astype(np.float32))
    calls = []

    def predict(qt, st, lt):
        calls.append(qt.shape)
        assert st.shape[-2:] == qt.shape[-2:] == lt.shape[-2:] == (32, 32)
        return qt * 0.5 + lt.mean(0) * 0.25

    out = predict_tiled(predict, q, s, (s > 0.5).float(), 32)
    expected = q * 0.5 + (s > 0.5).float().mean(0) * 0.25
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert len(calls) == len(tile_origins(96, 32)) ** 2 == 25


def test_tiles_are_position_matched():
    # the mean support label of the matching tile: with one support, the output is its label
    label = np.zeros((64, 64), np.uint8)
    label[5:20, 40:60] = 1
    image = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    res = segment(MeanSupportLabel(16), image, [image], [label], tiles=2)
    assert res.probabilities.shape == (1, 64, 64)
    assert (res.mask == label).mean() > 0.97


def test_thin_structure_survives_tiling_but_not_shrinking():
    image = np.zeros((128, 128), np.float32)
    image[:, 63] = 1.0  # a one-pixel line; EchoQuery returns the query intensity
    label = np.zeros((128, 128), np.uint8)
    label[:, 63] = 1
    whole = segment(EchoQuery(16), image, [image], [label], tiles=1)
    tiled = segment(EchoQuery(16), image, [image], [label], tiles=4)
    assert whole.probabilities[0, :, 63].max() < 0.5  # 16 px blurs the line away
    assert tiled.probabilities[0, :, 63].mean() > whole.probabilities[0, :, 63].mean() + 0.1
    with pytest.raises(SupportSetError, match="tiles"):
        segment(EchoQuery(16), image, [image], [label], tiles=0)


def test_benchmark_method_names_and_describes_tiles():
    from incontext.benchmark.methods import ModelMethod

    m = ModelMethod(MeanSupportLabel(16), name="m", tiles=2)
    assert m.name == "m-tiles2" and m.describe()["tiles"] == 2
    assert "tiles" not in ModelMethod(MeanSupportLabel(16), name="m").describe()
    rng = np.random.default_rng(0)
    img = rng.random((3, 40, 40)).astype(np.float32)
    lab = (img > 0.5).astype(np.float32)
    out = m.predict(img[:2], lab[:2], img[2:], seed=0)
    assert out.shape == (1, 40, 40) and 0 <= out.min() and out.max() <= 1


def _line_set(n: int = 4, size: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size), np.float32)
    for i in range(n):
        images[i, :, rng.integers(10, size - 10)] = 1.0
    return images, (images > 0.5).astype(np.uint8)


def test_auto_tiles_picks_tiling_for_thin_structures():
    images, labels = _line_set()
    thin = segment(EchoQuery(64), images[0], list(images[1:]), list(labels[1:]), tiles="auto",
                   threshold=0.5)
    assert thin.tiles == [2]
    assert thin.probabilities.shape == (1, 128, 128)


def test_default_tiling_follows_the_support_image_size():
    assert default_tiles([(256, 300)] * 3, 128) == "auto"
    assert default_tiles([(255, 400)] * 3, 128) == 1  # the shorter side counts
    assert default_tiles([(100, 100), (300, 300, 3), (300, 300, 3)], 128) == "auto"  # median
    assert default_tiles([(100, 100), (100, 100), (300, 300)], 128) == 1
    assert default_tiles([], 128) == 1


def test_segment_tiles_only_images_larger_than_the_model_by_default():
    images, labels = _line_set()  # 128-px images
    large = segment(EchoQuery(64), images[0], list(images[1:]), list(labels[1:]),
                    threshold=0.5)  # twice the model's 64 px: tiles="auto", which picks 2
    assert large.tiles == [2]
    same = segment(EchoQuery(128), images[0], list(images[1:]), list(labels[1:]),
                   threshold=0.5)  # the model's own size: the whole image
    assert same.tiles == [1]


def test_choose_tiles_uses_only_supports_and_needs_two():
    images, labels = _line_set(3)
    seen = []

    def run(g, q, si, sl):
        seen.append((g, q.shape[0], si.shape[0]))
        return q  # an echo: thin lines are kept at any tiling
    g, scores = choose_tiles(run, torch.from_numpy(images), torch.from_numpy(labels).float(),
                             (1, 2), max_checks=2)
    assert g == 1 and set(scores) == {1, 2}  # equal scores: fewer tiles
    assert all(n_q == 1 and n_s == 2 for _, n_q, n_s in seen) and len(seen) == 4
    assert choose_tiles(run, torch.from_numpy(images[:1]), torch.from_numpy(labels[:1]).float()
                        ) == (1, {})


def test_benchmark_method_auto_tiles():
    from incontext.benchmark.methods import ModelMethod

    images, labels = _line_set(5)
    m = ModelMethod(EchoQuery(64), name="m", tiles="auto")
    assert m.name == "m-tiles-auto" and m.describe()["tiles"] == "auto"
    out = m.predict(images[:4], labels[:4].astype(np.float32), images[4:], seed=0)
    assert out.shape == (1, 128, 128) and m.chosen_tiles == [2]
    with pytest.raises(ValueError, match="tiles"):
        ModelMethod(EchoQuery(32), tiles=0)


def test_auto_with_a_larger_grid_is_parsed_and_used():
    from incontext.benchmark.methods import ModelMethod
    from incontext.cli import build_parser
    from incontext.tiling import check_tiles, tile_options

    assert tile_options("auto") == (1, 2)
    assert tile_options("auto3") == (1, 2, 3)
    assert tile_options(2) == (2,)
    for bad in ("auto1", "autox", "tiles", 0, True):
        with pytest.raises(ValueError, match="tiles must be"):
            check_tiles(bad)
    parser = build_parser()
    assert parser.parse_args(["benchmark", "--index", "x.h5", "--model-tiles", "auto3"]
                             ).model_tiles == "auto3"
    with pytest.raises(SystemExit):
        parser.parse_args(["benchmark", "--index", "x.h5", "--model-tiles", "auto1"])
    # cached rows of "auto" keep their name; "auto3" gets its own
    assert ModelMethod(MeanSupportLabel(16), name="m", tiles="auto").name == "m-tiles-auto"
    assert ModelMethod(MeanSupportLabel(16), name="m", tiles="auto3").name == "m-tiles-auto3"
    label = np.zeros((48, 48), np.uint8)
    label[10:30, 12:40] = 1
    rng = np.random.default_rng(3)
    images = [rng.random((48, 48)).astype(np.float32) for _ in range(4)]
    res = segment(MeanSupportLabel(16), images[0], images[1:], [label] * 3, tiles="auto3")
    assert res.tiles[0] in (1, 2, 3)
    with pytest.raises(SupportSetError, match="tiles must be"):
        segment(MeanSupportLabel(16), images[0], images[1:], [label] * 3, tiles="auto1")


def test_runner_memo_answers_a_repeated_single_query_call_without_predicting():
    from incontext.tiling import TiledRunner

    calls = []

    def predict(q, si, sl):
        calls.append(q.shape[0])
        return q * 0 + sl.mean(dim=0)

    rng = np.random.default_rng(1)
    q = torch.from_numpy(rng.random((1, 16, 16)).astype(np.float32))
    si = torch.from_numpy(rng.random((3, 16, 16)).astype(np.float32))
    sl = torch.from_numpy((rng.random((3, 16, 16)) > 0.5).astype(np.float32))
    runner = TiledRunner(predict, 16, memo=True)
    first = runner(1, q, si, sl)
    again = runner(1, q.clone(), si.clone(), sl.clone())  # equal contents, new tensors
    assert torch.equal(first, again) and len(calls) == 1 and runner.memo_hits == 1
    again += 1  # the caller's copy: the remembered answer is unchanged
    assert torch.equal(runner(1, q, si, sl), first) and len(calls) == 1
    # any change of input, label or setting is a new call
    runner(1, q, si, 1 - sl)
    runner(1, q, si[:2], sl[:2])
    runner.nearest = 2
    runner(1, q, si, sl)
    assert len(calls) == 4
    # several queries are never remembered (the queries' own pass), nor without memo
    both = torch.cat([q, q])
    runner(1, both, si, sl)
    runner(1, both, si, sl)
    assert len(calls) == 6
    plain = TiledRunner(predict, 16)
    plain(1, q, si, sl)
    plain(1, q, si, sl)
    assert len(calls) == 8 and plain.memo_hits == 0
    runner.forget()
    runner(1, q, si, sl)
    assert len(calls) == 9


def test_segment_gives_the_same_answer_with_and_without_the_memo(monkeypatch):
    from fake_models import MeanSupportImage

    import incontext.inference as inference
    from incontext.tiling import TiledRunner

    rng = np.random.default_rng(2)
    images = rng.random((8, 40, 40)).astype(np.float32)
    labels = (images > 0.6).astype(np.uint8)
    model = MeanSupportImage(resolution=32)
    counted: list[TiledRunner] = []

    class Counted(TiledRunner):
        memo_on = True

        def __init__(self, *args, memo=False, **kwargs):
            super().__init__(*args, memo=Counted.memo_on and memo, **kwargs)
            counted.append(self)

    monkeypatch.setattr(inference, "TiledRunner", Counted)
    with_memo = segment(model, images[6:], images[:6], labels[:6], threshold="auto",
                        refine="auto")
    assert counted[-1].memo_hits > 0  # the head's checks repeat the cut's
    Counted.memo_on = False
    without = segment(model, images[6:], images[:6], labels[:6], threshold="auto",
                      refine="auto")
    assert counted[-1].memo_hits == 0
    for a, b in zip(with_memo, without, strict=True):
        assert np.array_equal(a.probabilities, b.probabilities)
        assert np.array_equal(a.mask, b.mask)
        assert a.thresholds == b.thresholds and a.refined == b.refined
