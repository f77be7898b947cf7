"""Vessel pseudo-labels (incontext.data.pseudo_labels) and the drions_vessels recipe, on
generated fundus-like fixtures and (when present) the shared DRIONS-DB photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_recipes import get_recipe
from data_recipes.base import RecipeError
from incontext.data import TaskIndex, build_index
from incontext.data.pseudo_labels import PseudoLabelError, field_of_view, vessel_pseudo_label

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INCONTEXT_SHARED_DATA", REPO.parent / "shared" / "datasets"))


def fake_fundus(seed: int = 0, h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """A lit red disc on black with a few dark lines; returns (rgb uint8, line mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.46 * h) ** 2
    lines = np.zeros((h, w), dtype=bool)
    for _ in range(5):
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-0.25, 0.25) * h
        dist = np.abs((xx - w / 2) * np.sin(angle) - (yy - h / 2) * np.cos(angle) - offset)
        lines |= dist < rng.uniform(1.0, 2.5)
    lines &= disc
    rgb = np.zeros((h, w, 3), dtype=np.float32)
    rgb[disc] = (190.0, 90.0, 30.0)
    rgb[lines] *= (0.8, 0.55, 0.6)
    rgb += rng.normal(0, 3.0, rgb.shape) * disc[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8), lines


def test_vessel_pseudo_label_finds_dark_lines_inside_the_field_of_view():
    rgb, lines = fake_fundus()
    mask = vessel_pseudo_label(rgb, vessel_fraction=0.12)
    fov = field_of_view(rgb)
    assert mask.shape == lines.shape and mask.dtype == bool
    assert not (mask & ~fov).any()  # nothing outside the lit disc
    inside = lines & fov
    recall = (mask & inside).sum() / inside.sum()
    precision = (mask & lines).sum() / mask.sum()
    assert recall > 0.7, recall
    assert precision > 0.5, precision
    # the threshold keeps at most the requested share of the field of view
    assert mask.sum() <= 0.12 * fov.sum() + 1


def test_vessel_fraction_controls_the_labelled_share():
    rgb, _ = fake_fundus(seed=1)
    small = vessel_pseudo_label(rgb, vessel_fraction=0.04)
    large = vessel_pseudo_label(rgb, vessel_fraction=0.12)
    assert small.sum() < large.sum()
    assert not (small & ~large).any()


@pytest.mark.parametrize("bad, message", [
    (np.zeros((40, 50), dtype=np.uint8), "colour image"),
    (np.zeros((40, 50, 3), dtype=np.uint8), "no field of view"),
])
def test_vessel_pseudo_label_rejects_bad_images(bad, message):
    with pytest.raises(PseudoLabelError, match=message) as info:
        vessel_pseudo_label(bad, what="photo.jpg")
    assert "photo.jpg" in str(info.value)


def test_vessel_pseudo_label_rejects_bad_fraction():
    rgb, _ = fake_fundus()
    with pytest.raises(PseudoLabelError, match="vessel_fraction"):
        vessel_pseudo_label(rgb, vessel_fraction=1.5)


def _drions_layout(root: Path, n: int) -> Path:
    for i in range(n):
        split = "train" if i < n - 2 else "test"
        folder = root / "Dataset" / "image" / split / "image"
        folder.mkdir(parents=True, exist_ok=True)
        rgb, _ = fake_fundus(seed=i)
        Image.fromarray(rgb).save(folder / f"image_{i + 1:03d}.jpg", quality=95)
    return root


def test_drions_vessels_recipe_builds_an_index(tmp_path):
    source = _drions_layout(tmp_path / "drions", 8)
    out = tmp_path / "vessels.h5"
    report = build_index("drions_vessels", source, out, size=64, progress=False)
    assert not report.skipped
    index = TaskIndex(out)
    tasks = index.tasks
    assert [t.name for t in tasks] == ["drions_vessels/2d/retinal vessels (pseudo)"]
    images, labels = index.load_split(tasks[0].name, "train")[:2]
    assert images.shape[1:] == (64, 64)
    share = labels.reshape(len(labels), -1).mean(axis=1)
    assert (share > 0.01).all() and (share < 0.2).all()
    # model selection leaves pseudo-labelled datasets out of the "manual labels" mean
    from incontext.training.validate import manually_labelled

    assert manually_labelled(index) == []


def test_drions_vessels_recipe_names_an_unreadable_photo(tmp_path):
    source = _drions_layout(tmp_path / "drions", 3)
    broken = source / "Dataset" / "image" / "train" / "image" / "image_001.jpg"
    broken.write_bytes(b"not a jpeg")
    recipe = get_recipe("drions_vessels")
    ref = next(r for r in recipe.subjects(source) if r.subject_id == "image_001")
    with pytest.raises(RecipeError, match="image_001.jpg"):
        recipe.load(ref)


@pytest.mark.shared_data
def test_drions_vessels_on_the_shared_photos():
    source = SHARED / "train" / "drions_od"
    if not source.exists():
        pytest.skip(f"{source} not present")
    recipe = get_recipe("drions_vessels")
    refs = recipe.subjects(source)
    assert len(refs) == 109
    subject = recipe.load(refs[0])
    mask = subject.masks["retinal vessels (pseudo)"]
    assert mask.shape == subject.image.shape == (400, 600)
    assert 0.04 < mask.mean() < 0.12  # about 12 % of a field of view that covers ~80 %
