"""Integration: build the shared left-atrium nnU-Net dataset (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from incontext.data import TaskIndex, build_index, validate

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INCONTEXT_SHARED_DATA", REPO.parent / "shared" / "datasets"))
LA = SHARED / "train" / "left_atrium_3d" / "Dataset101_LeftAtrium"


@pytest.mark.shared_data
@pytest.mark.skipif(not LA.exists(), reason=f"{LA} not available")
def test_nnunet_left_atrium(tmp_path):
    out = tmp_path / "la.h5"
    report = build_index("nnunet", LA, out, size=64, workers=2, progress=False,
                         recipe_options={"dataset": "la"})
    assert report.built == report.subjects == 40 and not report.skipped
    assert validate(out) == []
    with TaskIndex.open(out) as index:
        assert sorted(t.name for t in index.tasks) == [
            "la/axis0/left_atrium", "la/axis1/left_atrium", "la/axis2/left_atrium"]
        task = index.task("la/axis2/left_atrium")
        assert task.modality == "mr"
        assert task.subjects == {"train": 24, "val": 8, "test": 8}
        ep = index.episode(task.name, "train", 8, 2, np.random.default_rng(0), skip_empty=True)
        assert ep.support_images.shape == (8, 64, 64)
        assert (ep.support_labels.reshape(8, -1).sum(1) > 0).all()
        # 1.25 mm voxels at the stored 64 px resolution
        assert ep.spacing is not None and ep.spacing[0] > 1.25
