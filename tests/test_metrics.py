"""Hand-computed checks of incontext.metrics (Dice, IoU, HD95, ASSD)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import incontext.metrics as incontext_metrics
from incontext.metrics import assd, dice, hd95, iou, summarize, surface_distances


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def _ref_edges(mask: np.ndarray) -> np.ndarray:
    """Reference boundary: foreground pixels with a 4-neighbour that is background/outside."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _ref_directed(a: np.ndarray, b: np.ndarray, spacing=(1.0, 1.0)) -> np.ndarray:
    """Brute-force distances from every boundary pixel of a to the nearest one of b."""
    pa = np.argwhere(_ref_edges(a)) * np.asarray(spacing)
    pb = np.argwhere(_ref_edges(b)) * np.asarray(spacing)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1)


# ---------------------------------------------------------------- Dice / IoU


def test_dice_iou_known_overlap():
    pred = _box((8, 8), 0, 2, 0, 2)  # 4 px
    target = _box((8, 8), 0, 2, 0, 3)  # 6 px, contains pred
    assert dice(pred, target) == pytest.approx(2 * 4 / 10)
    assert iou(pred, target) == pytest.approx(4 / 6)
    disjoint = _box((8, 8), 5, 7, 5, 7)
    assert dice(pred, disjoint) == 0.0
    assert iou(pred, disjoint) == 0.0
    assert dice(target, target) == 1.0 and iou(target, target) == 1.0


def test_dice_iou_empty_conventions():
    empty = np.zeros((6, 6), dtype=bool)
    full = _box((6, 6), 1, 3, 1, 3)
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert dice(full, empty) == 0.0 and dice(empty, full) == 0.0
    assert iou(full, empty) == 0.0 and iou(empty, full) == 0.0


def test_batch_matches_single_and_dtypes():
    rng = np.random.default_rng(0)
    pred = rng.random((5, 12, 10)) > 0.5
    target = rng.random((5, 12, 10)) > 0.6
    pred[3] = False
    target[3] = False  # one empty-vs-empty case in the batch
    batch = dice(pred, target)
    assert batch.shape == (5,) and batch.dtype == np.float64
    for i in range(5):
        assert batch[i] == pytest.approx(dice(pred[i], target[i]))
    assert batch[3] == 1.0
    # int and float 0/1 give identical results
    np.testing.assert_array_equal(dice(pred.astype(np.uint8), target.astype(np.int64)), batch)
    np.testing.assert_array_equal(
        iou(pred.astype(np.float32), target.astype(np.float64)), iou(pred, target)
    )
    # Dice = 2 IoU / (1 + IoU) holds mask by mask
    j = iou(pred, target)
    np.testing.assert_allclose(batch, 2 * j / (1 + j))


# ---------------------------------------------------------------- input errors


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="shapes differ"):
        hd95(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))


def test_non_binary_raises():
    with pytest.raises(ValueError, match="binary"):
        dice(np.full((4, 4), 0.7), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="target"):
        iou(np.zeros((4, 4)), np.full((4, 4), 2))
    with pytest.raises(ValueError, match="binary"):
        assd(np.zeros((4, 4)), np.full((4, 4), np.nan))


def test_bad_ndim_and_spacing_raise():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        dice(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4)))
    m = _box((8, 8), 2, 5, 2, 5)
    with pytest.raises(ValueError, match="positive"):
        hd95(m, m, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(m, m, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="N=2"):
        assd(np.stack([m, m]), np.stack([m, m]), spacing=np.ones((3, 2)))


# ---------------------------------------------------------------- surface distances


@pytest.mark.parametrize("k", [1, 3, 7])
def test_lines_offset_by_k(k):
    """1-pixel lines: every pixel is boundary, every distance is exactly k."""
    pred = np.zeros((40, 40), dtype=bool)
    target = np.zeros((40, 40), dtype=bool)
    pred[5:30, 10] = True
    target[5:30, 10 + k] = True
    assert hd95(pred, target) == pytest.approx(k)
    assert assd(pred, target) == pytest.approx(k)
    # anisotropic spacing (dy, dx): the offset is along x
    assert hd95(pred, target, spacing=(2.0, 0.5)) == pytest.approx(0.5 * k)
    assert assd(pred, target, spacing=(2.0, 0.5)) == pytest.approx(0.5 * k)
    # same lines rotated: offset along y scales with dy
    assert hd95(pred.T, target.T, spacing=(2.0, 0.5)) == pytest.approx(2.0 * k)


def test_identical_masks_zero_distance():
    m = _box((20, 20), 3, 12, 4, 15)
    assert hd95(m, m) == 0.0 and assd(m, m) == 0.0
    full = np.ones((10, 10), dtype=bool)  # boundary is the image border
    assert hd95(full, full) == 0.0


def test_square_offset_hd95_is_k():
    """Two 10x10 squares offset by k along x: directed distances lie in [0, k], with the
    whole leading and trailing sides (>= 5% of the boundary) at exactly k."""
    for k in (2, 4):
        a = _box((40, 40), 10, 20, 10, 20)
        b = _box((40, 40), 10, 20, 10 + k, 20 + k)
        assert hd95(a, b) == pytest.approx(k)
        d_ab, d_ba = surface_distances(a, b)
        assert d_ab.max() == pytest.approx(k) and d_ba.max() == pytest.approx(k)


def test_concentric_squares_inner_distances():
    """Inner square boundary is exactly k from the outer one (corners included)."""
    k = 3
    inner = _box((30, 30), 10, 21, 10, 21)
    outer = _box((30, 30), 10 - k, 21 + k, 10 - k, 21 + k)
    d_in, d_out = surface_distances(inner, outer)
    np.testing.assert_allclose(d_in, k)
    assert d_out.min() == pytest.approx(k) and d_out.max() == pytest.approx(k * math.sqrt(2))
    expected_assd = np.concatenate([d_in, d_out]).mean()
    assert assd(inner, outer) == pytest.approx(expected_assd)
    assert assd(inner, outer) > k  # the outer corners pull the mean above k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    a = rng.random((16, 14)) > 0.55
    b = rng.random((16, 14)) > 0.45
    a[0, :] = True  # touch the image border
    spacing = (1.5, 0.7)
    d_ab = _ref_directed(a, b, spacing)
    d_ba = _ref_directed(b, a, spacing)
    ref_hd95 = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
    ref_assd = np.concatenate([d_ab, d_ba]).mean()
    assert hd95(a, b, spacing=spacing) == pytest.approx(ref_hd95)
    assert assd(a, b, spacing=spacing) == pytest.approx(ref_assd)
    assert hd95(a, b) == pytest.approx(
        max(np.percentile(_ref_directed(a, b), 95), np.percentile(_ref_directed(b, a), 95))
    )


def test_surface_metrics_empty_masks_are_nan():
    empty = np.zeros((10, 10), dtype=bool)
    m = _box((10, 10), 2, 6, 2, 6)
    for fn in (hd95, assd):
        assert math.isnan(fn(empty, empty))
        assert math.isnan(fn(m, empty))
        assert math.isnan(fn(empty, m))
    assert surface_distances(empty, m) is None


def test_surface_batch_and_per_mask_spacing():
    pred = np.zeros((3, 20, 20), dtype=bool)
    target = np.zeros((3, 20, 20), dtype=bool)
    pred[0, 2:15, 5] = True
    target[0, 2:15, 8] = True  # offset 3 along x
    pred[1, 4, 2:15] = True
    target[1, 6, 2:15] = True  # offset 2 along y
    # sample 2: both empty
    spacing = np.array([[1.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    out = hd95(pred, target, spacing=spacing)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(6.0) and out[1] == pytest.approx(6.0)
    assert math.isnan(out[2])
    np.testing.assert_allclose(assd(pred, target)[:2], [3.0, 2.0])


def test_summarize_counts_undefined():
    s = summarize([1.0, float("nan"), 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "count": 3, "undefined": 1}
    s = summarize([float("nan")])
    assert math.isnan(s["mean"]) and s["undefined"] == 1


# ---------------------------------------------------------------- mask_scores (any dim)


def _ref_edges_nd(mask: np.ndarray) -> np.ndarray:
    """Reference boundary in N-D: foreground voxels with a face neighbour that is
    background or outside."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = np.ones(mask.shape, dtype=bool)
    for axis in range(mask.ndim):
        for shift in (0, 2):
            idx = [slice(1, -1)] * mask.ndim
            idx[axis] = slice(shift, shift + mask.shape[axis])
            interior &= padded[tuple(idx)]
    return mask & ~interior


def test_mask_scores_in_2d_equal_the_batch_metrics():
    rng = np.random.default_rng(3)
    for _ in range(5):
        pred = rng.random((14, 11)) > 0.6
        target = rng.random((14, 11)) > 0.5
        scores = incontext_metrics.mask_scores(pred, target, spacing=(0.5, 2.0))
        assert scores["dice"] == pytest.approx(dice(pred, target))
        assert scores["iou"] == pytest.approx(iou(pred, target))
        assert scores["hd95"] == pytest.approx(hd95(pred, target, spacing=(0.5, 2.0)))
        assert scores["assd"] == pytest.approx(assd(pred, target, spacing=(0.5, 2.0)))


def test_mask_scores_in_3d_match_a_brute_force_reference():
    rng = np.random.default_rng(4)
    spacing = (2.0, 1.0, 0.5)
    for _ in range(3):
        a = rng.random((6, 7, 8)) > 0.55
        b = rng.random((6, 7, 8)) > 0.45
        pa = np.argwhere(_ref_edges_nd(a)) * np.asarray(spacing)
        pb = np.argwhere(_ref_edges_nd(b)) * np.asarray(spacing)
        d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
        ab, ba = d.min(axis=1), d.min(axis=0)
        scores = incontext_metrics.mask_scores(a, b, spacing=spacing)
        assert scores["hd95"] == pytest.approx(max(np.percentile(ab, 95), np.percentile(ba, 95)))
        assert scores["assd"] == pytest.approx(np.concatenate([ab, ba]).mean())
        inter = (a & b).sum()
        assert scores["dice"] == pytest.approx(2 * inter / (a.sum() + b.sum()))


def test_mask_scores_shifted_cube_and_empty_and_bad_input():
    cube = np.zeros((10, 10, 10), dtype=bool)
    cube[2:6, 2:6, 2:6] = True
    shifted = np.roll(cube, 3, axis=2)  # 3 voxels along the last axis, 1.5 mm each
    scores = incontext_metrics.mask_scores(shifted, cube, spacing=(1.0, 1.0, 1.5))
    assert scores["hd95"] == pytest.approx(4.5)
    assert scores["dice"] == pytest.approx(2 * 16 / 128)
    empty = np.zeros_like(cube)
    none = incontext_metrics.mask_scores(empty, empty)
    assert none["dice"] == 1.0 and math.isnan(none["hd95"])
    assert incontext_metrics.mask_scores(empty, cube)["dice"] == 0.0
    with pytest.raises(ValueError, match="spacing"):
        incontext_metrics.mask_scores(cube, cube, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        incontext_metrics.mask_scores(cube, cube[:5])
