"""Post-processing: largest component, hole filling and minimum size, per label, 2D and 3D."""

import numpy as np
import pytest

from incontext.postprocess import (
    fill_holes,
    keep_largest_component,
    postprocess,
    remove_small_components,
)


def _two_blobs_2d():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:8, 2:8] = 1  # 36 px
    mask[12:14, 12:14] = 1  # 4 px
    mask[15:19, 2:6] = 2  # 16 px
    mask[0, 19] = 2  # 1 px
    return mask


def test_keep_largest_component_per_label():
    out = keep_largest_component(_two_blobs_2d())
    assert (out == 1).sum() == 36 and out[12, 12] == 0
    assert (out == 2).sum() == 16 and out[0, 19] == 0


def test_diagonal_neighbours_need_full_connectivity():
    mask = np.zeros((6, 6), np.uint8)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = 1
    assert (keep_largest_component(mask) == 1).sum() == 1
    assert (keep_largest_component(mask, full=True) == 1).sum() == 3


def test_remove_small_components_threshold():
    out = remove_small_components(_two_blobs_2d(), 5)
    assert (out == 1).sum() == 36 and (out == 2).sum() == 16
    kept = remove_small_components(_two_blobs_2d(), 4)
    assert kept[12, 12] == 1 and kept[0, 19] == 0


def test_fill_holes_does_not_overwrite_other_labels():
    mask = np.zeros((12, 12), np.uint8)
    mask[2:10, 2:10] = 1
    mask[4:6, 4:6] = 0  # a hole
    mask[6:8, 6:8] = 2  # another structure inside label 1
    out = fill_holes(mask)
    assert (out[4:6, 4:6] == 1).all()
    assert (out[6:8, 6:8] == 2).all()
    assert out[0, 0] == 0


def test_3d_components_and_holes():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[1:8, 1:8, 1:8] = 3
    mask[4, 4, 4] = 0  # enclosed cavity
    mask[9, 9, 9] = 3  # stray voxel
    out = postprocess(mask, largest_component=True, fill=True)
    assert out[4, 4, 4] == 3 and out[9, 9, 9] == 0
    assert (out == 3).sum() == 7 ** 3


def test_restricting_to_labels_and_input_untouched():
    mask = _two_blobs_2d()
    before = mask.copy()
    out = keep_largest_component(mask, labels=[2])
    np.testing.assert_array_equal(mask, before)
    assert out[12, 12] == 1 and out[0, 19] == 0


def test_rejects_float_and_4d():
    with pytest.raises(ValueError, match="integer"):
        fill_holes(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="2D or 3D"):
        fill_holes(np.zeros((2, 2, 2, 2), np.uint8))
