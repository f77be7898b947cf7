"""Synthetic task generator and recipe: determinism, label counts, ranges, recipe protocol."""

from __future__ import annotations

import time

import numpy as np
import pytest

from data_recipes.base import RecipeError
from data_recipes.synthetic import (
    MAX_LABELS,
    MIN_LABELS,
    RECIPE,
    SyntheticRecipe,
    generate_synthetic_subject,
    generate_synthetic_task,
    n_labels_for,
)


def test_same_seed_gives_identical_arrays():
    a_img, a_lab = generate_synthetic_task(7, 4, size=64)
    b_img, b_lab = generate_synthetic_task(7, 4, size=64)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)


def test_different_seeds_and_subjects_differ():
    a_img, a_lab = generate_synthetic_task(1, 3, size=64)
    b_img, b_lab = generate_synthetic_task(2, 3, size=64)
    assert not np.array_equal(a_lab, b_lab)
    assert not np.allclose(a_img, b_img)
    # subjects of one task differ from each other (deformation, jitter, noise)
    assert not np.array_equal(a_lab[0], a_lab[1])
    assert not np.allclose(a_img[0], a_img[1])


def test_subject_does_not_depend_on_task_length():
    img3, lab3 = generate_synthetic_task(5, 3, size=64)
    img, lab = generate_synthetic_subject(5, 2, size=64)
    np.testing.assert_array_equal(img3[2], img)
    np.testing.assert_array_equal(lab3[2], lab)


@pytest.mark.parametrize("seed", range(12))
def test_shapes_dtypes_ranges_and_label_count(seed):
    images, labels = generate_synthetic_task(seed, 3, size=96)
    assert images.shape == labels.shape == (3, 96, 96)
    assert images.dtype == np.float32 and labels.dtype == np.int16
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert images.max() - images.min() > 0.5  # min-max normalised, not flat
    n = n_labels_for(seed)
    assert MIN_LABELS <= n <= MAX_LABELS
    assert labels.min() >= 1 and labels.max() <= n
    # the label map is a smooth partition: most labels appear in every subject
    for lab in labels:
        assert len(np.unique(lab)) >= max(MIN_LABELS - 1, n - 3)


def test_label_counts_span_the_range():
    counts = {n_labels_for(s) for s in range(300)}
    assert min(counts) == MIN_LABELS and max(counts) == MAX_LABELS


def test_intensity_follows_labels():
    """Pixels of one label are more alike than pixels of the whole image."""
    images, labels = generate_synthetic_task(3, 2, size=128)
    img, lab = images[0], labels[0]
    within = np.mean([img[lab == k].std() for k in np.unique(lab) if (lab == k).sum() > 50])
    assert within < img.std()


def test_invalid_arguments():
    with pytest.raises(ValueError):
        generate_synthetic_task(0, -1)
    with pytest.raises(ValueError):
        generate_synthetic_subject(0, 0, size=4)


def test_recipe_protocol():
    recipe = SyntheticRecipe(n_tasks=3, n_subjects=4, seed=11, size=64)
    info = recipe.describe("does/not/exist")
    assert info.dims == 2 and info.modality == "other"
    assert info.label_names == [f"label_{k}" for k in range(1, MAX_LABELS + 1)]
    per_task = info.extra["labels_per_task"]
    assert sorted(per_task) == ["task_0000", "task_0001", "task_0002"]
    refs = recipe.subjects("does/not/exist")
    assert len(refs) == 12
    assert len({r.subject_id for r in refs}) == 12
    assert sorted({r.sub_dataset for r in refs}) == sorted(per_task)
    assert [r.subject_id for r in refs] == sorted(r.subject_id for r in refs)
    ref = refs[5]
    subject = recipe.load(ref)
    assert subject.image.shape == (64, 64) and subject.sub_dataset == ref.sub_dataset
    assert set(subject.masks) == set(info.label_names)
    n = per_task[ref.sub_dataset]
    present = [k for k in range(1, MAX_LABELS + 1) if subject.masks[f"label_{k}"].any()]
    assert max(present) <= n
    assert not any(subject.masks[f"label_{k}"].any() for k in range(n + 1, MAX_LABELS + 1))
    total = sum(m.astype(int) for m in subject.masks.values())
    assert (total == 1).all()  # a partition: every pixel in exactly one label
    # loading twice is deterministic; another seed gives other tasks
    np.testing.assert_array_equal(recipe.load(ref).image, subject.image)
    other = SyntheticRecipe(n_tasks=3, n_subjects=4, seed=12, size=64).subjects(None)
    assert other[5].extra["task_seed"] != ref.extra["task_seed"]


def test_recipe_options():
    assert RECIPE.n_tasks == 1000 and RECIPE.n_subjects == 100
    refs = RECIPE.subjects("n_tasks=2,n_subjects=3,seed=4")
    assert len(refs) == 6
    small = RECIPE.with_options(n_tasks=2, n_subjects=2)
    assert len(small.subjects(None)) == 4
    with pytest.raises(RecipeError, match="unknown option"):
        RECIPE.with_options(colour=3)
    with pytest.raises(RecipeError, match="unknown option"):
        RECIPE.subjects("n_tasks=2,bogus=1")
    with pytest.raises(RecipeError, match="not an integer"):
        RECIPE.subjects("n_tasks=two")
    with pytest.raises(RecipeError):
        RECIPE.subjects("n_tasks=0")


def test_generation_speed_is_reported(record_property):
    """Reported, not asserted (targets live in benchmarks)."""
    generate_synthetic_task(100, 1)
    start = time.perf_counter()
    n = 0
    for seed in range(100, 104):
        n += len(generate_synthetic_task(seed, 16)[0])
    ms = (time.perf_counter() - start) / n * 1e3
    record_property("synthetic_ms_per_subject_128", ms)
    print(f"synthetic: {ms:.2f} ms per 128x128 subject")
