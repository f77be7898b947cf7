"""Losses, learning-rate schedule, episode sources and the train CLI."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch

from data_recipes.synthetic import generate_synthetic_task
from incontext.data.episode import Episode
from incontext.training.config import ConfigError, config_from_dict
from incontext.training.losses import hard_dice, segmentation_loss, soft_dice_loss
from incontext.training.schedule import WarmupCosine, warmup_cosine_factor
from incontext.training.sources import (
    IndexSource,
    MixedSource,
    SourceError,
    SyntheticSource,
    synthetic_seeds,
    tile_crop_episode,
)


def test_losses():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 20
    assert soft_dice_loss(perfect, target) < 1e-3
    assert soft_dice_loss(-perfect, target) > 0.9
    assert torch.equal(hard_dice(perfect, target), torch.ones(2))
    assert torch.equal(hard_dice(-perfect, target), torch.zeros(2))
    empty = torch.zeros(1, 1, 8, 8)
    assert hard_dice(-torch.ones(1, 1, 8, 8), empty).item() == 1.0
    zero = torch.zeros(2, 1, 8, 8, requires_grad=True)
    bce_only = segmentation_loss(zero, target, dice_weight=0.0, bce_weight=1.0)
    assert math.isclose(bce_only.item(), math.log(2), rel_tol=1e-6)
    both = segmentation_loss(zero, target, 1.0, 1.0)
    assert math.isclose(both.item(), bce_only.item() + soft_dice_loss(zero, target).item(),
                        rel_tol=1e-6)
    both.backward()
    assert zero.grad is not None and zero.grad.abs().sum() > 0


def test_warmup_cosine():
    factors = [warmup_cosine_factor(s, 100, 10, 0.1) for s in range(101)]
    assert all(a < b for a, b in zip(factors[:10], factors[1:11], strict=True))  # warm-up
    assert factors[10] == 1.0
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))  # decay
    assert math.isclose(factors[100], 0.1)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = WarmupCosine(opt, 100, 10, 0.1)
    for _ in range(30):
        sched.step()
    other = WarmupCosine(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3),
                         100, 10, 0.1)
    other.load_state_dict(sched.state_dict())
    assert other.lr == sched.lr == pytest.approx(1e-3 * factors[30])


def test_synthetic_source():
    train_seeds, val_seeds = synthetic_seeds(0, 4, 2)
    assert not set(train_seeds) & set(val_seeds)
    src = SyntheticSource(train_seeds, n_subjects=6, resolution=32, cache_size=2)
    rng = np.random.default_rng(0)
    for _ in range(6):
        ep = src.sample(rng, support_size=3, n_queries=1)
        assert ep.support_images.shape == (3, 32, 32) and ep.query_images.shape == (1, 32, 32)
        assert set(np.unique(ep.support_labels)) <= {0.0, 1.0}
        assert not set(ep.query_subjects) & set(ep.support_subjects)
        # the binary label is one label of the task's label map
        seed, label = int(ep.task.split("/")[1]), int(ep.task.split("-")[-1])
        _, maps = generate_synthetic_task(seed, 6, 32)
        subject = int(ep.query_subjects[0].split("/")[1])
        np.testing.assert_array_equal(ep.query_labels[0], maps[subject] == label)
    assert len(src._cache) <= 2
    # more support than subjects: support drawn with replacement, queries stay distinct
    ep = src.sample(rng, support_size=9, n_queries=1)
    assert ep.support_size == 9 and ep.query_subjects[0] not in ep.support_subjects
    val = SyntheticSource(val_seeds, 6, 32).validation_episodes(3, 2, 1, seed=0)
    again = SyntheticSource(val_seeds, 6, 32).validation_episodes(3, 2, 1, seed=0)
    assert len(val) == 2 and all(np.array_equal(a.query_images, b.query_images)
                                 for a, b in zip(val, again, strict=True))


def test_synthetic_source_rejects_bad_generator():
    def bad(seed, n, size):
        return np.zeros((n, size, size), np.float32), np.zeros((n, size, size), np.int16)

    with pytest.raises(SourceError, match="no foreground"):
        SyntheticSource([1], 4, 16, generator=bad).sample(np.random.default_rng(0), 2)


def test_synthetic_source_generates_only_the_subjects_an_episode_uses():
    from data_recipes.synthetic import generate_synthetic_subject

    calls = []

    def counting(seed, index, size):
        calls.append((seed, index))
        return generate_synthetic_subject(seed, index, size)

    src = SyntheticSource([3, 4], n_subjects=32, resolution=32, subject_generator=counting)
    ep = src.sample(np.random.default_rng(1), support_size=3, n_queries=1)
    used = {int(s.split("/")[1]) for s in ep.support_subjects + ep.query_subjects}
    assert len(calls) == len(used) <= 4  # not the task's 32 subjects
    seed, label = int(ep.task.split("/")[1]), int(ep.task.split("-")[-1])
    for name, mask in zip(ep.support_subjects + ep.query_subjects,
                          np.concatenate([ep.support_labels, ep.query_labels]), strict=True):
        _, labels = generate_synthetic_subject(seed, int(name.split("/")[1]), 32)
        np.testing.assert_array_equal(mask, labels == label)
    # the label is shown by at least one of the episode's subjects
    assert ep.support_labels.sum() + ep.query_labels.sum() > 0
    # a cached subject is not generated again; results do not depend on the cache size
    small = SyntheticSource([3, 4], 32, 32, cache_size=0, subject_generator=counting)
    big = SyntheticSource([3, 4], 32, 32, cache_size=100, subject_generator=counting)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(4):
        ea, eb = small.sample(a, 5), big.sample(b, 5)
        assert ea.task == eb.task and np.array_equal(ea.support_images, eb.support_images)
        assert np.array_equal(ea.query_labels, eb.query_labels)
    assert len(small._subjects) == 0 and 0 < len(big._subjects) <= 100 * 32


def test_synthetic_source_validation_uses_whole_tasks():
    """Validation episodes are those of the whole-task generator, whatever the path."""
    from data_recipes.synthetic import generate_synthetic_subject

    lazy = SyntheticSource([7, 8], 6, 32, subject_generator=generate_synthetic_subject)
    whole = SyntheticSource([7, 8], 6, 32, generator=generate_synthetic_task)
    for a, b in zip(lazy.validation_episodes(3, 2, 2, seed=9),
                    whole.validation_episodes(3, 2, 2, seed=9), strict=True):
        assert a.task == b.task and np.array_equal(a.query_labels, b.query_labels)
        assert np.array_equal(a.support_images, b.support_images)


def test_synthetic_source_rejects_bad_subject_generator():
    def wrong_shape(seed, index, size):
        return np.zeros((size, size + 1), np.float32), np.ones((size, size + 1), np.int16)

    def empty(seed, index, size):
        return np.zeros((size, size), np.float32), np.zeros((size, size), np.int16)

    with pytest.raises(SourceError, match=r"shapes \(16, 17\).*expected \(16, 16\)"):
        SyntheticSource([1], 4, 16, subject_generator=wrong_shape).sample(
            np.random.default_rng(0), 2)
    with pytest.raises(SourceError, match="no foreground"):
        SyntheticSource([1], 4, 16, subject_generator=empty).sample(np.random.default_rng(0), 2)


class FakeTask:
    def __init__(self, name: str, dataset: str) -> None:
        self.name, self.dataset = name, dataset


class FakeIndex:
    """Duck-typed TaskIndex: dataset 'big' has 9 tasks, dataset 'small' has 1."""

    def __init__(self) -> None:
        self.tasks = [FakeTask(f"big/t{i}", "big") for i in range(9)] + \
            [FakeTask("small/t0", "small")]

    def pool(self, task, split, skip_empty=False):
        return argparse.Namespace(n_subjects=5)

    def episode(self, task, split, support_size, n_queries, rng, skip_empty=False,
                support_split=None):
        from incontext.data.episode import Episode

        z = np.zeros((support_size, 64, 64), np.float32)
        q = np.ones((n_queries, 64, 64), np.float32)
        return Episode(task, z, z, q, q, dataset=task.split("/")[0])


def test_index_source_samples_dataset_then_task():
    src = IndexSource(FakeIndex(), resolution=32)
    rng = np.random.default_rng(0)
    eps = [src.sample(rng, 2) for _ in range(2000)]
    small = sum(e.dataset == "small" for e in eps) / len(eps)
    assert 0.45 < small < 0.55  # datasets equally likely, not tasks
    assert eps[0].support_images.shape == (2, 32, 32)  # resized to the model resolution
    weighted = IndexSource(FakeIndex(), resolution=32, dataset_weights={"small": 0.0})
    assert weighted.datasets == ["big"]
    with pytest.raises(SourceError, match="not in the index"):
        IndexSource(FakeIndex(), 32, dataset_weights={"nope": 1.0})
    val = src.validation_episodes(3, 2, 1, seed=0)
    assert len(val) == 10 and val[0].query_images.shape == (2, 32, 32)


def _box_episode(y: int, x: int, side: int) -> Episode:
    """64-px episode of random texture; the supports' foreground is the bottom-right
    quadrant, the query's a ``side``-px square at (y, x)."""
    rng = np.random.default_rng(5)
    images = rng.random((4, 64, 64)).astype(np.float32)
    labels = np.zeros((4, 64, 64), np.float32)
    labels[:3, 32:, 32:] = 1  # supports: bottom-right
    labels[3, y:y + side, x:x + side] = 1
    return Episode("t", images[:3], labels[:3], images[3:], labels[3:], dataset="d")


def test_tile_crop_episode_cuts_one_matched_tile_with_foreground():
    from incontext.tiling import tile_origins

    ep = _box_episode(32, 32, 32)
    seen = set()
    for seed in range(20):  # resolution 16, tiles 2: the 64-px images at 32 px, 16-px tiles
        out = tile_crop_episode(ep, 16, np.random.default_rng(seed))
        assert out.support_images.shape == (3, 16, 16) and out.query_images.shape == (1, 16, 16)
        big = tile_crop_episode(ep, 32, np.random.default_rng(seed), tiles=1)  # whole, 32 px
        # the crop is the same tile of every image, on the tiling grid, and holds foreground
        match = [(y, x) for y in tile_origins(32, 16) for x in tile_origins(32, 16)
                 if np.array_equal(big.query_images[:, y:y + 16, x:x + 16], out.query_images)
                 and np.array_equal(big.support_images[:, y:y + 16, x:x + 16],
                                    out.support_images)]
        assert len(match) == 1
        assert out.query_labels.any() and out.support_labels.any()
        seen.add(match[0])
    assert seen == {(8, 8), (8, 16), (16, 8), (16, 16)}  # every tile touching the quadrant
    # no tile where the query and a support both show foreground: the whole episode
    apart = _box_episode(0, 0, 8)
    whole = tile_crop_episode(apart, 16, np.random.default_rng(0))
    assert whole.query_images.shape == (1, 16, 16)
    assert whole.query_labels[0, :2, :2].all() and whole.support_labels[:, 8:, 8:].all()


def test_index_source_tile_crop_p():
    off = IndexSource(FakeIndex(), resolution=32)
    crop = IndexSource(FakeIndex(), resolution=32, tile_crop_p=1.0)
    a, b = off.sample(np.random.default_rng(1), 2), crop.sample(np.random.default_rng(1), 2)
    assert a.support_images.shape == b.support_images.shape == (2, 32, 32)
    assert a.task == b.task  # the same task; the crop only changes the view
    with pytest.raises(SourceError, match="tile_crop_p"):
        IndexSource(FakeIndex(), 32, tile_crop_p=2.0)
    with pytest.raises(ConfigError, match="tile_crop_p"):
        config_from_dict({"data": {"tile_crop_p": -0.1}})
    assert config_from_dict({"data": {"tile_crop_p": 0.5}}).data.tile_crop_p == 0.5


def test_mixed_source_ratio():
    class Const:
        def __init__(self, name):
            self.name = name

        def sample(self, rng, support_size, n_queries=1):
            return self.name

    mixed = MixedSource([(Const("a"), 0.25), (Const("b"), 0.75), (Const("c"), 0.0)])
    rng = np.random.default_rng(0)
    draws = [mixed.sample(rng, 1) for _ in range(4000)]
    assert 0.22 < draws.count("a") / 4000 < 0.28 and "c" not in draws


def test_cli_train_runs_and_resumes(tmp_path, capsys):
    from incontext.cli import train as train_cli

    config = tmp_path / "c.toml"
    config.write_text("""
steps = 4
[model]
encoder_widths = [8, 8]
resolution = 32
[data]
batch_size = 2
support_size = 2
synthetic_ratio = 1.0
synthetic_tasks = 3
synthetic_val_tasks = 1
synthetic_subjects = 4
val_support_size = 2
val_queries = 1
[run]
val_every = 2
checkpoint_every = 2
""")
    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers(dest="command"))
    run = tmp_path / "run"
    args = parser.parse_args(["train", "--config", str(config), "--out", str(run)])
    assert args.func(args) == 0
    assert "training summary" in capsys.readouterr().out
    assert (run / "last" / "model.safetensors").exists()
    args = parser.parse_args(["train", "--resume", str(run), "--no-progress"])
    assert args.func(args) == 0  # already finished: nothing to do, still fine
    with pytest.raises(ValueError, match="--config"):
        args = parser.parse_args(["train"])
        args.func(args)
