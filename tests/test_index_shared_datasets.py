"""Every per-dataset recipe builds a valid index from ../shared/datasets (skipped when absent)."""

import os
from pathlib import Path

import pytest

from incontext.cli import main
from incontext.data import TaskIndex, build_index

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INCONTEXT_SHARED_DATA", REPO.parent / "shared" / "datasets"))

# recipe -> (group, expected task names without the dataset prefix)
EXPECTED = {
    "hc18": ("train", {"2d/fetal head"}),
    "busi": ("train", {"2d/lesion"}),
    "ph2": ("train", {"2d/lesion"}),
    "jsrt": ("train", {"2d/heart", "2d/left lung", "2d/right lung", "2d/left clavicle",
                       "2d/right clavicle"}),
    "drions_od": ("train", {"2d/optic disc"}),
    "isbi_em": ("train", {"2d/membrane"}),
    "monuseg": ("train", {"2d/nucleus"}),
    "wbc": ("heldout", {"dataset_1/2d/cytoplasm", "dataset_1/2d/nucleus",
                        "dataset_2/2d/cytoplasm", "dataset_2/2d/nucleus"}),
    "drive": ("heldout", {"2d/vessel", "2d/field of view"}),
    "kvasir_mini": ("heldout", {"2d/polyp"}),
}


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_builds_valid_index(recipe, tmp_path):
    group, tasks = EXPECTED[recipe]
    source = SHARED / group / recipe
    if not source.exists():
        pytest.skip(f"{source} not available")
    out = tmp_path / f"{recipe}.h5"
    report = build_index(recipe, source, out, size=32, progress=False)
    assert out.exists()
    assert report is not None
    with TaskIndex.open(out) as index:
        names = {t.name.split("/", 1)[1] for t in index.tasks}
        assert names == tasks
        for task in index.tasks:
            assert sum(task.counts.values()) > 0
            assert task.counts.get("train", 0) > 0 and task.counts.get("test", 0) > 0
    assert main(["index", "validate", str(out)]) == 0
