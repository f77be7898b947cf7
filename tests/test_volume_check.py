"""incontext.volume_check: support volumes segmented from the other supports."""

from __future__ import annotations

import numpy as np
import pytest
from fake_models import EchoQuery

from incontext.volume_check import check_support_volumes
from incontext.volumes import VolumeError


def _ball_volume(seed: int, value: int = 1, inverted: bool = False):
    """A ball whose image is its own label (EchoQuery then segments it exactly), or the
    inverse (EchoQuery then segments the background)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:12, :16, :16]
    c = rng.integers(5, 8, 3)
    label = (((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= 16).astype(np.uint8)
    image = (1 - label if inverted else label).astype(np.float32)
    return image, label * value


def test_leave_one_volume_out_dice_follows_how_segmentable_the_task_is():
    good = [_ball_volume(s) for s in range(3)]
    (check,) = check_support_volumes(EchoQuery(16), [g[0] for g in good], [g[1] for g in good],
                                     axis=0)
    assert check.label == 1 and check.volumes == 3 and len(check.per_volume) == 3
    assert check.dice == pytest.approx(1.0)
    bad = [_ball_volume(s, inverted=True) for s in range(3)]
    (check,) = check_support_volumes(EchoQuery(16), [b[0] for b in bad], [b[1] for b in bad],
                                     axis=0)
    assert check.dice == pytest.approx(0.0)


def test_checks_are_capped_and_labels_held_by_one_volume_are_not_measured():
    vols = [_ball_volume(s) for s in range(4)] + [_ball_volume(9, value=2)]
    checks = check_support_volumes(EchoQuery(16), [v[0] for v in vols], [v[1] for v in vols],
                                   axis=0, max_checks=2)
    by_label = {c.label: c for c in checks}
    assert by_label[1].volumes == 2 and by_label[1].dice == pytest.approx(1.0)
    assert by_label[2].dice is None and by_label[2].volumes == 0  # nothing to segment it from
    with pytest.raises(VolumeError, match="max_checks"):
        check_support_volumes(EchoQuery(16), [vols[0][0]], [vols[0][1]], max_checks=0)


def _faint_ball_volume(seed: int):
    """A ball at 30 % of the brightest voxel (a corner outlier): EchoQuery's probability
    inside is 0.3, so the default cut 0.5 misses it and a lower cut finds it."""
    image, label = _ball_volume(seed)
    image = 0.3 * image
    image[0, 0, 0] = 1.0
    return image, label


def test_the_cut_is_chosen_on_the_checked_volumes_and_applies_per_label():
    from incontext.calibration import THRESHOLD_GRID
    from incontext.volumes import segment_volume

    vols = [_faint_ball_volume(s) for s in range(3)]
    images, labels = [v[0] for v in vols], [v[1] for v in vols]
    (check,) = check_support_volumes(EchoQuery(16), images, labels, axis=0,
                                     thresholds=THRESHOLD_GRID)
    assert check.threshold == 0.3  # the cut nearest 0.5 among those that find the ball
    assert check.scores[0.5] == pytest.approx(0.0) and check.dice > 0.9
    query, truth = _faint_ball_volume(7)
    at_half = segment_volume(EchoQuery(16), query, images, labels, axis=0)
    at_cut = segment_volume(EchoQuery(16), query, images, labels, axis=0,
                            threshold=[check.threshold])
    assert not (at_half.mask == 1)[truth == 1].any()  # only the outlier voxel is found
    assert (at_cut.mask == 1)[truth == 1].all()
    with pytest.raises(VolumeError, match="one per label"):
        segment_volume(EchoQuery(16), query, images, labels, axis=0, threshold=[0.3, 0.4])
    with pytest.raises(VolumeError, match="thresholds must lie"):
        check_support_volumes(EchoQuery(16), images, labels, thresholds=(0.0,))
