"""TaskIndex and EpisodeDataset: task table, split loading, episode invariants, workers."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from incontext.data import EpisodeDataset, SamplingError, TaskIndex, build_index, write_manifest
from incontext.data.fixtures import write_nnunet, write_png_pairs


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("sampler")
    ds = write_nnunet(root / "raw", n=12, shape=(12, 10, 9))
    vol = root / "toy.h5"
    build_index("nnunet", ds, vol, size=16, progress=False)
    src = write_png_pairs(root / "png", n=15, seed=1)
    for i in (0, 4, 7, 9):  # some empty masks, for skip_empty
        Image.fromarray(np.zeros((40, 52), np.uint8)).save(src / "masks" / f"case_{i:03d}.png")
    flat = root / "flat.h5"
    build_index("png-pairs", src, flat, size=16, progress=False, recipe_options={"dataset": "flat"})
    return vol, flat


def subject_splits(path) -> dict[str, int]:
    with h5py.File(path, "r") as f:
        out = {}
        for key in f["datasets"]:
            g = f["datasets"][key]
            out.update({s.decode(): int(sp) for s, sp in zip(g["subject"][()], g["split"][()],
                                                               strict=True)})
    return out


def test_task_table(shards):
    vol, flat = shards
    with TaskIndex.open([vol, flat]) as index:
        names = {t.name for t in index.tasks}
        assert {"toy/axis0/liver", "toy/axis2/tumour", "flat/2d/foreground"} <= names
        assert len(names) == 3 * 2 + 1
        task = index.task("toy/axis1/liver")
        assert (task.dataset, task.plane, task.label, task.modality) == ("toy", "axis1", "liver",
                                                                         "ct")
        assert task.subjects["train"] > task.subjects["val"] > 0
        assert index.task("flat/2d/foreground").counts == {"train": 9, "val": 3, "test": 3}
        with pytest.raises(SamplingError, match="unknown task"):
            index.task("toy/axis9/liver")


def test_manifest_opens_all_shards(shards, tmp_path):
    manifest = write_manifest(tmp_path / "all.json", list(shards))
    with TaskIndex.open(manifest) as index:
        assert index.datasets == ["flat", "toy"]


def test_load_split(shards):
    vol, _ = shards
    splits = subject_splits(vol)
    with TaskIndex.open(vol) as index:
        task = index.task("toy/axis0/tumour")
        images, labels, ids = index.load_split(task.name, "val")
        assert images.shape == labels.shape == (task.counts["val"], 16, 16)
        assert images.dtype == labels.dtype == np.float32
        assert 0 <= images.min() and images.max() <= 1
        assert set(np.unique(labels)) <= {0.0, 1.0}
        assert {splits[s] for s in ids} == {1}


@pytest.mark.parametrize("task", ["toy/axis2/liver", "flat/2d/foreground"])
def test_episode_invariants(shards, task):
    splits = subject_splits(shards[0]) | subject_splits(shards[1])
    with TaskIndex.open(list(shards)) as index:
        for seed in range(30):
            rng = np.random.default_rng(seed)
            ep = index.episode(task, "train", support_size=5, n_queries=2, rng=rng)
            assert ep.support_images.shape == ep.support_labels.shape == (5, 16, 16)
            assert ep.query_images.shape == (2, 16, 16)
            assert set(ep.support_subjects).isdisjoint(ep.query_subjects)
            assert {splits[s] for s in ep.support_subjects + ep.query_subjects} == {0}
            assert set(np.unique(ep.support_labels)) <= {0.0, 1.0}
            assert ep.task == task and ep.dataset == task.split("/")[0]


def test_episode_seeded_reproducible_and_uncached_equal(shards):
    vol, _ = shards
    with TaskIndex.open(vol) as cached, TaskIndex.open(vol, cache_bytes=0) as uncached:
        a = cached.episode("toy/axis0/liver", "train", 6, 1, np.random.default_rng(7))
        b = cached.episode("toy/axis0/liver", "train", 6, 1, np.random.default_rng(7))
        c = uncached.episode("toy/axis0/liver", "train", 6, 1, np.random.default_rng(7))
        d = cached.episode("toy/axis0/liver", "train", 6, 1, np.random.default_rng(8))
    for x in (b, c):
        np.testing.assert_array_equal(a.support_images, x.support_images)
        np.testing.assert_array_equal(a.query_labels, x.query_labels)
        assert a.support_subjects == x.support_subjects
    assert a.support_subjects != d.support_subjects or a.query_subjects != d.query_subjects


def test_support_larger_than_subject_pool(shards):
    _, flat = shards
    with TaskIndex.open(flat) as index:
        ep = index.episode("flat/2d/foreground", "val", 10, 1, np.random.default_rng(0))
        assert ep.support_images.shape[0] == 10
        assert set(ep.support_subjects).isdisjoint(ep.query_subjects)


def test_too_few_subjects_is_a_clear_error(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=3)  # 2 train, 1 val
    build_index("png-pairs", src, tmp_path / "i.h5", size=16, progress=False)
    with TaskIndex.open(tmp_path / "i.h5") as index:
        assert index.task("src/2d/foreground").subjects["val"] == 1
        with pytest.raises(SamplingError, match="split 'val' has 1 subject"):
            index.episode("src/2d/foreground", "val", 2, 1, np.random.default_rng(0))


def test_skip_empty(shards):
    _, flat = shards
    with TaskIndex.open(flat) as index:
        task = index.task("flat/2d/foreground")
        assert sum(task.nonempty.values()) == 11
        for seed in range(20):
            ep = index.episode(task.name, "train", 4, 1, np.random.default_rng(seed),
                               skip_empty=True)
            assert (ep.support_labels.reshape(4, -1).sum(1) > 0).all()
            assert ep.query_labels.sum() > 0


def test_support_from_another_split(shards):
    vol, _ = shards
    splits = subject_splits(vol)
    with TaskIndex.open(vol) as index:
        ep = index.episode("toy/axis1/liver", "test", 4, 2, np.random.default_rng(1),
                           support_split="train")
    assert {splits[s] for s in ep.support_subjects} == {0}
    assert {splits[s] for s in ep.query_subjects} == {2}


def test_index_pickles_without_handles(shards):
    vol, _ = shards
    index = TaskIndex.open(vol)
    index.episode("toy/axis0/liver", "train", 3, 1, np.random.default_rng(0))
    clone = pickle.loads(pickle.dumps(index))
    ep = clone.episode("toy/axis0/liver", "train", 3, 1, np.random.default_rng(0))
    assert ep.support_images.shape == (3, 16, 16)
    index.close()
    clone.close()


def test_episode_dataset_weights_and_errors(shards):
    vol, flat = shards
    index = TaskIndex.open([vol, flat])
    ds = EpisodeDataset(index, support_size=(2, 5), dataset_weights={"toy": 0.0}, seed=3)
    assert ds.datasets == ["flat"]
    rng = np.random.default_rng(0)
    sizes = {ds.sample(rng).support_size for _ in range(40)}
    assert sizes <= {2, 3, 4, 5} and len(sizes) > 1
    with pytest.raises(ValueError, match="unknown dataset"):
        EpisodeDataset(index, dataset_weights={"nope": 1.0})
    index.close()


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_episode_dataset_with_two_workers(shards):
    vol, flat = shards
    ds = EpisodeDataset([vol, flat], support_size=4, n_queries=2, seed=11)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    items = _take(loader, 6)
    for item in items:
        assert item["support_images"].shape == (4, 1, 16, 16)
        assert item["query_labels"].shape == (2, 1, 16, 16)
        assert item["support_labels"].reshape(4, -1).sum(1).min() > 0  # skip_empty default
    # workers are seeded differently, and the whole stream is reproducible
    assert not torch.equal(items[0]["support_images"], items[1]["support_images"])
    again = _take(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2), 6)
    for a, b in zip(items, again, strict=True):
        assert torch.equal(a["support_images"], b["support_images"]) and a["task"] == b["task"]


def test_episode_dataset_batches(shards):
    vol, _ = shards
    ds = EpisodeDataset(vol, support_size=(2, 6), batch_size=3, seed=0)
    batch = next(iter(ds))
    s = batch["support_images"].shape[1]
    assert batch["support_images"].shape == (3, s, 1, 16, 16) and 2 <= s <= 6
    assert batch["query_images"].shape == (3, 1, 1, 16, 16) and len(batch["task"]) == 3
    fixed = EpisodeDataset(vol, support_size=4, seed=0)
    collated = next(iter(torch.utils.data.DataLoader(fixed, batch_size=2)))
    assert collated["support_images"].shape == (2, 4, 1, 16, 16)


def test_split_spacing_matches_load_split_order(tmp_path):
    from incontext.data import TaskIndex, build_index
    from incontext.data.fixtures import write_nnunet

    root = write_nnunet(tmp_path / "nn", n=6)
    build_index("nnunet", root, tmp_path / "nn.h5", size=16, progress=False)
    with TaskIndex.open(tmp_path / "nn.h5") as index:
        name = index.tasks[0].name
        for split in ("train", "test"):
            images, _, _ = index.load_split(name, split)
            spacing = index.split_spacing(name, split)
            assert spacing.shape == (images.shape[0], 2)
            assert np.isfinite(spacing).all() and (spacing > 0).all()
