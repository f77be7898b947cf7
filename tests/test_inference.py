"""incontext.segment: preprocessing round trip, batching, ensembling, multi-label, bad input."""

import numpy as np
import pytest
import torch
from fake_models import EchoQuery, MeanSupportImage, MeanSupportLabel

import incontext
from incontext.inference import SupportSetError, draw_support_subsets, segment
from incontext.models import UniverSeg
from incontext.preprocessing import resize_mask_soft


def segment_plain(*args, **kwargs):
    """``segment`` without the pixel head (these tests check what the model alone does)."""
    return segment(*args, refine="off", **kwargs)


def _supports(n=6, shape=(40, 50), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, *shape)).astype(np.float32)
    labels = (rng.random((n, *shape)) > 0.5).astype(np.uint8)
    return images, labels


def test_resize_round_trip_preserves_geometry():
    h, w = 90, 150  # non-square: padded to 150x150, resized to 64, back to 90x150
    yy, xx = np.mgrid[0:h, 0:w]
    query = (xx / (w - 1) * 0.6 + yy / (h - 1) * 0.4).astype(np.float32)
    images, labels = _supports(2, (h, w))
    result = segment_plain(EchoQuery(64), query * 1000 + 5, images, labels)
    assert result.mask.shape == (h, w)
    assert result.probabilities.shape == (1, h, w)
    inner = (slice(3, -3), slice(3, -3))
    err = np.abs(result.probabilities[0][inner] - query[inner])
    assert err.max() < 0.03


def test_thin_structures_survive_label_resizing():
    label = np.zeros((512, 512), np.float32)
    label[:, 200] = 1  # one-pixel line, 4x thinner than an output pixel
    soft = resize_mask_soft(label, 128)
    assert soft.max() == pytest.approx(0.25)
    assert (soft > 0).sum() == 128


def test_batching_and_query_forms_agree():
    torch.manual_seed(0)
    model = UniverSeg(encoder_widths=(8, 8, 8), resolution=32)
    images, labels = _supports(4)
    queries = np.random.default_rng(1).random((5, 40, 50)).astype(np.float32)
    a = segment(model, queries, images, labels, batch_size=1)
    b = segment(model, list(queries), images, labels, batch_size=8)
    c = segment(model, queries[2], images, labels)
    assert isinstance(a, list) and len(a) == 5 and isinstance(c, incontext.inference.Segmentation)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x.probabilities, y.probabilities, atol=1e-5)
    np.testing.assert_allclose(c.probabilities, a[2].probabilities, atol=1e-5)
    # queries of different sizes come back at their own sizes
    mixed = segment(model, [queries[0], queries[1][:30, :20]], images, labels)
    assert mixed[1].mask.shape == (30, 20)


def test_ensemble_statistics_match_the_members():
    n, k, members = 7, 3, 5
    rng = np.random.default_rng(0)
    images = rng.random((n, 32, 32)).astype(np.float32)
    is_fg = np.array([1, 0, 1, 1, 0, 0, 1])
    labels = np.stack([np.full((32, 32), v, np.uint8) for v in is_fg])
    result = segment_plain(MeanSupportLabel(32), images[0], images, labels, ensemble=members,
                     support_size=k, seed=3)
    fractions = np.array([is_fg[s].mean() for s in draw_support_subsets(n, k, members, 3)])
    assert len({tuple(s) for s in draw_support_subsets(n, k, members, 3)}) > 1
    np.testing.assert_allclose(result.probabilities[0], fractions.mean(), atol=2e-3)
    np.testing.assert_allclose(result.uncertainty[0], fractions.std(), atol=2e-3)
    # same seed, same draws; one member has no spread
    again = segment_plain(MeanSupportLabel(32), images[0], images, labels, ensemble=members,
                    support_size=k, seed=3)
    np.testing.assert_array_equal(again.probabilities, result.probabilities)
    single = segment_plain(MeanSupportLabel(32), images[0], images, labels)
    assert np.all(single.uncertainty == 0)


class CountingMeanLabel(MeanSupportLabel):
    """MeanSupportLabel that counts its forward passes."""

    calls = 0

    def forward(self, target, images, labels):
        type(self).calls += 1
        return super().forward(target, images, labels)


def test_equal_ensemble_members_run_once():
    images, labels = _supports(3, (32, 32))
    CountingMeanLabel.calls = 0
    one = segment(CountingMeanLabel(32), images[0], images, labels, threshold=0.5)
    calls_one = CountingMeanLabel.calls
    CountingMeanLabel.calls = 0
    five = segment(CountingMeanLabel(32), images[0], images, labels, threshold=0.5, ensemble=5)
    assert CountingMeanLabel.calls == calls_one  # every member is the whole pool of 3
    np.testing.assert_allclose(five.probabilities, one.probabilities, atol=1e-6)
    assert np.abs(five.uncertainty).max() < 1e-6


def test_multi_label_returns_label_map():
    images = np.zeros((3, 32, 32), np.float32)
    labels = np.zeros((3, 32, 32), np.int32)
    labels[:, :16] = 3  # top half label 3, bottom-right quarter label 7
    labels[:, 16:, 16:] = 7
    result = segment(MeanSupportLabel(32), images[0], images, labels)
    assert result.labels == [3, 7]
    assert result.probabilities.shape == (2, 32, 32)
    assert np.all(result.mask[:16] == 3)
    assert np.all(result.mask[16:, 16:] == 7)
    assert np.all(result.mask[16:, :16] == 0)


def test_bad_inputs_have_clear_errors():
    model = MeanSupportLabel()
    images, labels = _supports(3)
    q = images[0]
    with pytest.raises(SupportSetError, match="empty"):
        segment(model, q, [], [])
    with pytest.raises(SupportSetError, match="does not match"):
        segment(model, q, images, labels[:, :20])
    with pytest.raises(SupportSetError, match="3 support images but 2"):
        segment(model, q, images, labels[:2])
    bad = images.copy()
    bad[1, 3, 3] = np.nan
    with pytest.raises(SupportSetError, match="support image 1.*NaN"):
        segment(model, q, bad, labels)
    with pytest.raises(SupportSetError, match="query 0.*NaN"):
        segment(model, np.full((8, 8), np.inf), images, labels)
    with pytest.raises(SupportSetError, match="shape"):
        segment(model, np.zeros((2, 3, 4, 5)), images, labels)
    with pytest.raises(SupportSetError, match="not integers"):
        segment(model, q, images, labels * 0.5)
    with pytest.warns(UserWarning, match="every support label is empty"):
        result = segment(model, q, images, np.zeros_like(labels))
    assert result.mask.sum() == 0


def test_normalised_supports_are_not_stretched_again():
    images = np.full((2, 32, 32), 0.3, np.float32)
    images[:, :, :16] = 0.2  # an index slice normalised over its volume: range 0.2..0.3
    labels = np.ones((2, 32, 32), np.uint8)
    # flipped copies would mirror the two halves into each other: checked without them
    raw = segment_plain(MeanSupportImage(32), images[0], images, labels, support_flips="off")
    kept = segment_plain(MeanSupportImage(32), images[0], images, labels, supports_normalized=True,
                   support_flips="off")
    assert raw.probabilities[0, 5, 25] == pytest.approx(1.0, abs=1e-3)  # min-max: 0.2..0.3 -> 0..1
    assert kept.probabilities[0, 5, 25] == pytest.approx(0.3, abs=1e-3)
    bad = images.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(SupportSetError, match="NaN"):
        segment_plain(MeanSupportImage(32), images[0], bad, labels, supports_normalized=True)


class BatchRecorder(torch.nn.Module):
    """Records the query batch size of every forward pass; predicts the query's mean."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("Config", (), {"resolution": 32})()
        self.batches: list[int] = []

    def forward(self, query, support_images, support_labels):
        self.batches.append(query.shape[0])
        return query * 0 + self.weight


def test_default_batch_is_one_query_on_the_cpu_and_an_explicit_one_is_kept():
    images, labels = _supports(3)
    queries = np.random.default_rng(2).random((5, 40, 50)).astype(np.float32)
    model = BatchRecorder()
    fixed = dict(threshold=0.5, colour="luma", support_flips="off")  # no support checks
    segment_plain(model, queries, images, labels, **fixed)
    assert model.batches == [1] * 5
    model.batches.clear()
    segment_plain(model, queries, images, labels, batch_size=4, **fixed)
    assert model.batches == [4, 1]
    with pytest.raises(SupportSetError, match="batch_size"):
        segment_plain(model, queries, images, labels, batch_size=0)


def _disc_task(n, seed=0, inverted=False):
    """Discs whose image is the label itself (or its inverse): easy (or hopeless) for
    EchoQuery, which predicts the query's own intensity."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :40]
    labels = []
    for _ in range(n):
        cy, cx = rng.integers(12, 28, 2)
        labels.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= 64).astype(np.uint8))
    labels = np.stack(labels)
    images = (1 - labels if inverted else labels).astype(np.float32)
    return images, labels


def test_support_dice_estimates_how_well_the_task_is_segmented():
    images, labels = _disc_task(7)
    good = segment_plain(EchoQuery(32), images[:2], images, labels)
    assert good[0].support_dice[0] > 0.9  # below 1 only at the resized discs' edges
    assert good[0].support_checks == [7]  # every support with foreground, up to 8
    images, labels = _disc_task(7, inverted=True)
    bad = segment_plain(EchoQuery(32), images[:2], images, labels)
    assert bad[0].support_dice[0] < 0.1
    assert bad[0].support_checks == [7]


def test_support_dice_is_none_when_nothing_was_chosen_on_the_supports():
    images, labels = _disc_task(7)
    fixed = segment_plain(EchoQuery(32), images[0], images, labels, threshold=0.5, tiles=1,
                    colour="luma")
    assert fixed.support_dice == [None] and fixed.support_checks == [0]
    few = segment_plain(EchoQuery(32), images[0], images[:2], labels[:2])  # < 3 to judge a cut
    assert few.support_dice == [None] and few.support_checks == [0]
    tiles_only = segment_plain(EchoQuery(16), images[0], images, labels, threshold=0.5,
                               tiles="auto")
    assert tiles_only.support_dice[0] > 0.9
    assert tiles_only.support_checks == [4]  # choosing a tiling checks up to 4 supports


def test_support_dice_is_kept_with_the_reused_choices():
    images, labels = _disc_task(6, seed=3)
    reuse: dict = {}
    first = segment(EchoQuery(32), images[0], images, labels, reuse=reuse)
    again = segment(EchoQuery(32), images[1], images, labels, reuse=reuse)
    assert first.support_dice == again.support_dice
    assert first.support_checks == again.support_checks == [6]


def test_colour_renderings_compared_on_the_whole_image_then_one_tiled(monkeypatch):
    import incontext.inference as inference

    calls = []
    original = inference.support_calibration

    def recorded(run, images, labels, options, *args, **kwargs):
        calls.append(tuple(options))
        return original(run, images, labels, options, *args, **kwargs)

    monkeypatch.setattr(inference, "support_calibration", recorded)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:64, :64]
    images, labels = [], []
    for _ in range(5):
        disc = ((yy - rng.uniform(20, 44)) ** 2 + (xx - rng.uniform(20, 44)) ** 2 < 120)
        grey = 80 + 100 * disc + rng.normal(0, 10, disc.shape)
        images.append(np.clip(np.stack([grey, 255 - grey, grey * 0.5], -1), 0, 255)
                      .astype(np.uint8))
        labels.append(disc.astype(np.uint8))
    model = UniverSeg(encoder_widths=(8, 8), resolution=32).eval()
    out = segment(model, images[4], images[:4], labels[:4], tiles="auto", colour="auto",
                  support_flips="off", refine="off")
    # every rendering scored once on the whole image, then the chosen one at both tilings
    assert calls[-1] == (1, 2) and set(calls[:-1]) == {(1,)} and len(calls) >= 3
    assert out.colours[0] in ("luma", "red", "green", "blue", "fisher")
