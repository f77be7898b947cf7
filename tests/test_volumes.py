"""incontext.volumes: slice selection by relative position, whole-volume normalisation,
default axis, tri-planar fusion and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_models import EchoQuery, MeanSupportLabel

from incontext.models import UniverSeg
from incontext.volumes import (
    CT_WINDOWS,
    VolumeError,
    choose_axis,
    labeled_extent,
    nearest_support_slices,
    resolve_window,
    segment_volume,
)


def test_labeled_extent_and_nearest_relative_slices():
    lab = np.zeros((20, 8, 8), np.uint8)
    lab[5:15, 2:4, 2:4] = 1
    assert labeled_extent(lab, 0, 1) == (5, 14)
    assert labeled_extent(lab, 1, 1) == (2, 3)
    assert labeled_extent(lab, 0, 2) is None
    # query slice 4 of 10 sits at 45%: slice 9 of 21 (centre 9.5 / 21 = 45.2%)
    assert nearest_support_slices(10, 4, 21, (5, 14), 1) == [9]
    assert nearest_support_slices(10, 4, 21, (5, 14), 3) == [8, 9, 10]
    # outside the labeled extent: the nearest slices inside it
    assert nearest_support_slices(10, 0, 21, (5, 14), 2) == [5, 6]
    assert nearest_support_slices(10, 9, 21, (5, 14), 1) == [14]
    # relative, not absolute: a support twice as long maps to twice the index
    assert nearest_support_slices(10, 6, 42, (0, 41), 1) == [27]


def test_support_slices_follow_relative_position():
    # support slice j carries a square whose side encodes j; MeanSupportLabel copies it
    sup_lab = np.zeros((20, 24, 24), np.uint8)
    for j in range(5, 15):
        sup_lab[j, :j + 2, :j + 2] = 1
    sup_img = np.random.default_rng(0).random(sup_lab.shape).astype(np.float32)
    query = np.random.default_rng(1).random((10, 24, 24)).astype(np.float32)
    res = segment_volume(MeanSupportLabel(24), query, [sup_img], [sup_lab], axis=0,
                         support_size=1)
    for i in range(10):
        j = nearest_support_slices(10, i, 20, (5, 14), 1)[0]
        np.testing.assert_array_equal(res.mask[i], sup_lab[j], err_msg=f"query slice {i}")


def test_whole_volume_normalisation_is_not_per_slice():
    query = np.zeros((4, 16, 16), np.float32)
    for k in range(4):
        query[k] = 100 * k + np.linspace(0, 10, 16)[None, :]
    lab = np.zeros((4, 16, 16), np.uint8)
    lab[:, 4:8, 4:8] = 1
    res = segment_volume(EchoQuery(16), query, [query], [lab], axis=0)
    means = res.probabilities[0].mean(axis=(1, 2))
    assert np.all(np.diff(means) > 0.2)  # per-slice min-max would give equal means
    expected = (query - query.min()) / (query.max() - query.min())
    np.testing.assert_allclose(res.probabilities[0], expected, atol=0.05)


def test_ct_window_applies_to_the_volume():
    query = np.full((3, 8, 8), -1000.0, np.float32)
    query[1] = 40.0
    query[2] = 3000.0
    lab = np.ones((3, 8, 8), np.uint8)
    res = segment_volume(EchoQuery(8), query, [query], [lab], axis=0, modality="ct",
                         window="brain")
    lo, hi = CT_WINDOWS["brain"]
    assert res.probabilities[0, 1].mean() == pytest.approx((40 - lo) / (hi - lo), abs=0.02)
    assert res.probabilities[0, 0].max() < 0.01 and res.probabilities[0, 2].min() > 0.99


def test_choose_axis():
    lab = np.zeros((30, 10, 12), np.uint8)
    lab[5:25, 3:6, 4:8] = 1  # 20 slices along axis 0, 3 along 1, 4 along 2
    assert choose_axis([lab]) == 0
    assert choose_axis([lab], [(1.0, 1.0, 1.05)]) == 0  # near-isotropic: largest pool
    assert choose_axis([lab], [(0.7, 0.7, 5.0)]) == 2  # anisotropic: the slice axis
    assert choose_axis([lab], [(3.0, 0.8, 0.8), None]) == 0


def test_resolve_window():
    assert resolve_window(None) is None
    assert resolve_window("-160,240") == (-160.0, 240.0)
    assert resolve_window("soft_tissue") == CT_WINDOWS["soft-tissue"]
    with pytest.raises(ValueError, match="low must be below high"):
        resolve_window("5,1")
    with pytest.raises(ValueError, match="LO,HI"):
        resolve_window("abc")


def _ball_volume(shape, seed, offset=(0, 0, 0)):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    r2 = sum(((g - s / 2 - o) / (s / 3)) ** 2 for g, s, o in zip(grid, shape, offset,
                                                                   strict=True))
    lab = (r2 <= 1).astype(np.uint8)
    return (lab * 5 + rng.normal(0, 1, shape)).astype(np.float32), lab


def test_tri_planar_fusion_averages_the_three_axes():
    torch.manual_seed(0)
    model = UniverSeg(encoder_widths=(8, 8, 8), resolution=32)
    sups = [_ball_volume((14, 16, 12), s, (s, -s, 0)) for s in range(2)]
    query, _ = _ball_volume((12, 18, 10), 7)
    imgs, labs = [s[0] for s in sups], [s[1] for s in sups]
    single = [segment_volume(model, query, imgs, labs, axis=a, support_size=4)
              for a in range(3)]
    fused = segment_volume(model, query, imgs, labs, planes=3, support_size=4)
    assert fused.axes == (0, 1, 2)
    stacked = np.stack([s.probabilities for s in single])
    np.testing.assert_allclose(fused.probabilities, stacked.mean(0), atol=1e-5)
    np.testing.assert_allclose(fused.uncertainty, stacked.std(0), atol=1e-4)
    np.testing.assert_array_equal(fused.mask, (fused.probabilities[0] >= 0.5).astype(np.uint8))
    assert fused.mask.shape == query.shape and fused.mask.dtype == np.uint8


def test_ensemble_gives_uncertainty_and_is_seeded():
    torch.manual_seed(0)
    model = UniverSeg(encoder_widths=(8, 8, 8), resolution=32)
    sup_img, sup_lab = _ball_volume((12, 12, 12), 0)
    query, _ = _ball_volume((12, 12, 12), 1)
    a = segment_volume(model, query, [sup_img], [sup_lab], axis=2, ensemble=3,
                       support_size=2, seed=3)
    b = segment_volume(model, query, [sup_img], [sup_lab], axis=2, ensemble=3,
                       support_size=2, seed=3)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.uncertainty.max() > 0


def test_multi_label_and_progress_count():
    img, lab = _ball_volume((10, 10, 10), 0)
    lab[:5][lab[:5] == 1] = 2
    steps = []
    res = segment_volume(MeanSupportLabel(16), img, [img], [lab], axis=1,
                         progress=steps.append)
    assert res.labels == [1, 2]
    assert sum(steps) == 2 * 10
    assert set(np.unique(res.mask)) <= {0, 1, 2}


def test_bad_input():
    img, lab = _ball_volume((8, 8, 8), 0)
    model = MeanSupportLabel(8)
    with pytest.raises(VolumeError, match="3D volume"):
        segment_volume(model, img[0], [img], [lab])
    with pytest.raises(VolumeError, match="does not match"):
        segment_volume(model, img, [img], [lab[:, :4]])
    with pytest.raises(VolumeError, match=r"\[3\] occur in no support"):
        segment_volume(model, img, [img], [lab], labels=[3])
    with pytest.raises(VolumeError, match="every support label is empty"):
        segment_volume(model, img, [img], [np.zeros_like(lab)])
    with pytest.raises(VolumeError, match="planes"):
        segment_volume(model, img, [img], [lab], planes=2)
    with pytest.raises(VolumeError, match="NaN"):
        segment_volume(model, np.full((8, 8, 8), np.nan), [img], [lab])


class _RecordingMeanLabel(MeanSupportLabel):
    """MeanSupportLabel that records the side of every input it is given."""

    def __init__(self, resolution: int) -> None:
        super().__init__(resolution)
        self.sides: list[int] = []

    def forward(self, target, images, labels):
        self.sides.append(int(target.shape[-1]))
        return super().forward(target, images, labels)


def test_tiled_slices_run_at_model_resolution_on_a_larger_grid():
    img, lab = _ball_volume((24, 40, 40), 0)
    query, truth = _ball_volume((24, 40, 40), 1)
    whole_model, tiled_model = _RecordingMeanLabel(16), _RecordingMeanLabel(16)
    whole = segment_volume(whole_model, query, [img], [lab], axis=0, support_size=4)
    tiled = segment_volume(tiled_model, query, [img], [lab], axis=0, support_size=4, tiles=2)
    assert whole.tiles == [(1,)] and tiled.tiles == [(2,)]
    assert set(tiled_model.sides) == {16}  # the model still sees 16-px inputs
    assert len(tiled_model.sides) == 9 * len(whole_model.sides)  # (2*2 - 1)^2 tiles
    inter = np.logical_and(tiled.mask > 0, whole.mask > 0).sum()
    assert 2 * inter / ((tiled.mask > 0).sum() + (whole.mask > 0).sum()) > 0.9
    auto = segment_volume(_RecordingMeanLabel(16), query, [img], [lab], planes=3,
                          support_size=4, tiles="auto")
    assert len(auto.tiles) == 1 and len(auto.tiles[0]) == 3
    assert set(auto.tiles[0]) <= {1, 2}
    with pytest.raises(VolumeError, match="tiles"):
        segment_volume(tiled_model, query, [img], [lab], tiles=0)
