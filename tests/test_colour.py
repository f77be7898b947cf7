"""Colour: R, G, B stored in the index, grey renderings, and their per-task choice."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from incontext.benchmark.methods import ModelMethod
from incontext.benchmark.protocol import load_task
from incontext.colour import (
    RENDERINGS,
    check_colour,
    choose_rendering,
    fisher_weights,
    render,
    renderings,
)
from incontext.data import TaskIndex, build_index, validate
from tests.fake_models import EchoQuery


def hue_task(n: int = 8, size: int = 32, seed: int = 0):
    """Disks visible in red and blue only: luma is flat, so a grey model sees nothing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels, colour = [], []
    for _ in range(n):
        cy, cx = rng.uniform(10, size - 10, 2)
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 < 36).astype(np.float32)
        base = 0.5 + rng.normal(0, 0.01, (size, size))
        # +0.15 red, -0.15 * 0.299 / 0.114 blue: the luma change cancels
        rgb = np.stack([base + 0.15 * disk, base, base - 0.15 * 0.299 / 0.114 * disk])
        labels.append(disk)
        colour.append(np.clip(rgb, 0, 1))
    colour = np.asarray(colour, np.float32)
    grey = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), colour, axes=([0], [1]))
    return grey.astype(np.float32), np.asarray(labels), colour


def test_check_colour_and_choice_rule():
    assert check_colour("auto") == "auto"
    with pytest.raises(ValueError, match="colour must be one of"):
        check_colour("purple")
    assert choose_rendering({"luma": 0.5, "red": 0.505}) == "luma"  # within the margin
    assert choose_rendering({"luma": 0.5, "red": 0.6, "fisher": None}) == "red"
    assert choose_rendering({"luma": None, "red": None}) == "luma"


def test_fisher_weights_find_the_channel_that_separates():
    rng = np.random.default_rng(1)
    labels = (rng.random((4, 16, 16)) < 0.3).astype(np.float32)
    rgb = rng.normal(0.5, 0.05, (4, 3, 16, 16))
    rgb[:, 1] += 0.4 * labels  # green carries the foreground
    w = fisher_weights(rgb, labels)
    assert w is not None and np.argmax(np.abs(w)) == 1 and w.sum() > 0
    assert abs(np.abs(w).sum() - 1) < 1e-9
    assert fisher_weights(rgb, np.zeros_like(labels)) is None
    grey = render(rgb, w)
    assert grey.shape == (4, 16, 16) and grey.min() >= 0 and grey.max() <= 1
    assert grey[labels > 0].mean() > grey[labels == 0].mean() + 0.3


def test_renderings_are_the_channels_and_luma_is_the_grey_given():
    grey, labels, colour = hue_task(4)
    out = renderings(RENDERINGS, grey[:2], grey[2:], colour[:2], colour[2:], labels[:2])
    assert set(out) == set(RENDERINGS)
    np.testing.assert_array_equal(out["luma"][0], grey[:2])
    np.testing.assert_array_equal(out["red"][1], colour[2:, 0])
    np.testing.assert_array_equal(out["blue"][0], colour[:2, 2])
    with pytest.raises(ValueError, match="unknown rendering"):
        renderings(("cyan",), grey, grey, colour, colour, labels)


def test_model_method_colour_auto_finds_a_task_only_colour_shows():
    """EchoQuery predicts the query intensity: useless on flat luma, right on red."""
    grey, labels, colour = hue_task(12, seed=3)
    kwargs = dict(support_colour=colour[:8], query_colour=colour[8:], seed=5)
    plain = ModelMethod(EchoQuery(32), threshold="auto")
    auto = ModelMethod(EchoQuery(32), threshold="auto", colour="auto")
    assert auto.name.endswith("-thr-auto-colour-auto") and auto.describe()["colour"] == "auto"
    assert "colour" not in plain.describe() and not getattr(plain, "uses_colour", False)

    def dice(prob):
        p, t = prob >= 0.5, labels[8:] > 0.5
        return 2 * (p & t).sum() / (p.sum() + t.sum())

    d_plain = dice(plain.predict(grey[:8], labels[:8], grey[8:], **kwargs))
    d_auto = dice(auto.predict(grey[:8], labels[:8], grey[8:], **kwargs))
    assert auto.chosen_colours[-1] in ("red", "fisher")
    assert d_auto > 0.8 and d_plain < 0.5
    # a fixed rendering is used without scoring; no colour given -> grey as before
    green = ModelMethod(EchoQuery(32), colour="green")
    green.predict(grey[:8], labels[:8], grey[8:], **kwargs)
    assert green.chosen_colours == ["green"]
    np.testing.assert_allclose(
        auto.predict(grey[:8], labels[:8], grey[8:], seed=5),
        plain.predict(grey[:8], labels[:8], grey[8:], seed=5))


def _write_pairs(root, images, labels):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(img).save(root / "images" / f"case_{i:03d}.png")
        Image.fromarray((lab * 255).astype(np.uint8)).save(root / "masks" / f"case_{i:03d}.png")


def _built_index(tmp_path, images, labels, name: str):
    """Write (image, label) PNG pairs and build a png-pairs index of them at 32 px."""
    _write_pairs(tmp_path / "src", images, labels)
    out = tmp_path / f"{name}.h5"
    build_index("png-pairs", tmp_path / "src", out, size=32, progress=False,
                recipe_options={"dataset": name})
    return out


def test_index_stores_colour_beside_the_grey_image(tmp_path):
    _, labels, colour = hue_task(10, seed=4)
    rgb8 = (np.moveaxis(colour, 1, -1) * 255).round().astype(np.uint8)
    rgb8[3] = rgb8[3, ..., :1]  # one grey image in a colour dataset
    out = _built_index(tmp_path, rgb8, labels, "toy")
    assert validate(out) == []
    with h5py.File(out) as f:
        g = f["datasets/toy"]
        assert g["colour"].shape == (10, 3, 32, 32) and g["colour"].dtype == np.uint8
        rows = {s.decode() if isinstance(s, bytes) else s: i
                for i, s in enumerate(g["subject"][()])}
        grey_row = rows["case_003"]
        for c in range(3):  # the grey image repeated
            np.testing.assert_array_equal(g["colour"][grey_row, c], g["images"][grey_row])
        red_row = rows["case_000"]
        assert not np.array_equal(g["colour"][red_row, 0], g["colour"][red_row, 2])
    from incontext.data import summarize

    assert summarize(out)["datasets"][0]["colour"] is True
    index = TaskIndex(out)
    task = index.tasks[0].name
    images, _, ids = index.load_split(task, "train")
    rgb = index.load_split_colour(task, "train")
    assert rgb.shape == (len(ids), 3, 32, 32) and rgb.dtype == np.float32 and rgb.max() <= 1
    if "case_003" in ids:
        np.testing.assert_allclose(rgb[ids.index("case_003"), 1], images[ids.index("case_003")])
    data = load_task(index, task, queries_per_task=1)
    assert data.query_colour.shape == (1, 3, 32, 32)
    assert data.pool_colour.shape[0] == data.pool_size


def test_grey_sources_store_no_colour(tmp_path):
    grey, labels, _ = hue_task(6, seed=6)
    out = _built_index(tmp_path, (grey * 255).round().astype(np.uint8), labels, "grey")
    index = TaskIndex(out)
    task = index.tasks[0].name
    assert not index.has_colour(task) and index.load_split_colour(task, "train") is None
    from incontext.data import summarize

    assert summarize(out)["datasets"][0]["colour"] is False
    assert load_task(index, task).pool_colour is None


def test_validate_reports_a_bad_colour_array(tmp_path):
    _, labels, colour = hue_task(6, seed=7)
    rgb8 = (np.moveaxis(colour, 1, -1) * 255).astype(np.uint8)
    out = _built_index(tmp_path, rgb8, labels, "toy")
    with h5py.File(out, "a") as f:
        del f["datasets/toy/colour"]
        f["datasets/toy"].create_dataset("colour", data=np.zeros((6, 2, 32, 32), np.uint8))
    assert any("colour must be (N, 3, S, S)" in p for p in validate(out))


def test_benchmark_passes_colour_to_methods_that_use_it(tmp_path):
    _, labels, colour = hue_task(24, seed=8)
    rgb8 = (np.moveaxis(colour, 1, -1) * 255).round().astype(np.uint8)
    out = _built_index(tmp_path, rgb8, labels, "toy")
    from incontext.benchmark import run_benchmark
    from incontext.cli import build_parser

    model = EchoQuery(32)
    model.benchmark_name = "echo"
    common = dict(baselines=None, support_sizes=[6], ensembles=[1], repeats=1,
                  model_threshold="auto", progress=False, plots=False)
    plain = run_benchmark(out, model=model, **common)
    auto = run_benchmark(out, model=model, model_colour="auto", **common)
    (p_row,) = plain.rows
    (a_row,) = auto.rows
    assert a_row.method == "echo-thr-auto-colour-auto"
    assert a_row.dice_mean > p_row.dice_mean + 0.3
    args = build_parser().parse_args(["benchmark", "--index", "x.h5", "--model-colour", "auto"])
    assert args.model_colour == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["benchmark", "--index", "x.h5", "--model-colour", "cyan"])


def test_segment_colour_auto_on_rgb_arrays():
    from incontext.inference import SupportSetError, segment

    _, labels, colour = hue_task(10, seed=9)
    rgb = np.moveaxis(colour, 1, -1)  # (N, H, W, 3) as users hold them
    lab = labels.astype(np.int64)
    model = EchoQuery(32)
    plain = segment(model, list(rgb[8:]), list(rgb[:8]), list(lab[:8]), colour="luma")
    auto = segment(model, list(rgb[8:]), list(rgb[:8]), list(lab[:8]))  # auto: the default

    def dice(results):
        p = np.stack([r.mask > 0 for r in results])
        t = labels[8:] > 0
        return 2 * (p & t).sum() / (p.sum() + t.sum())

    assert plain[0].colours == ["luma"] and auto[0].colours[0] in ("red", "fisher")
    assert dice(auto) > 0.8 and dice(plain) < 0.5
    fixed = segment(model, rgb[8], list(rgb[:8]), list(lab[:8]), colour="red")
    assert fixed.colours == ["red"]
    grey = segment(model, labels[8].astype(np.float32), list(labels[:8].astype(np.float32)),
                   list(lab[:8]), colour="auto")
    assert grey.colours == ["luma"]  # grey images: nothing to choose
    with pytest.raises(SupportSetError, match="colour"):
        segment(model, rgb[8], list(rgb[:8]), list(lab[:8]), colour="cyan")


def test_model_method_refuses_colour_that_does_not_match():
    grey, labels, colour = hue_task(6, seed=10)
    method = ModelMethod(EchoQuery(32), colour="auto")
    with pytest.raises(ValueError, match="support_colour"):
        method.predict(grey[:4], labels[:4], grey[4:], seed=0, support_colour=colour[:3],
                       query_colour=colour[4:])
    with pytest.raises(ValueError, match="query_colour.*\\[0, 1\\]"):
        method.predict(grey[:4], labels[:4], grey[4:], seed=0, support_colour=colour[:4],
                       query_colour=colour[4:] * 255)


def test_benchmark_notes_when_colour_is_asked_of_grey_indexes(tmp_path):
    grey, labels, _ = hue_task(10, seed=12)
    out = _built_index(tmp_path, (grey * 255).round().astype(np.uint8), labels, "grey")
    from incontext.benchmark import run_benchmark

    model = EchoQuery(32)
    model.benchmark_name = "echo"
    res = run_benchmark(out, model=model, baselines=None, support_sizes=[2], ensembles=[1],
                        repeats=1, model_colour="auto", progress=False, plots=False)
    assert any("no task has R, G, B" in n and "echo-colour-auto" in n for n in res.notes)
    plain = run_benchmark(out, model=model, baselines=None, support_sizes=[2], ensembles=[1],
                          repeats=1, progress=False, plots=False)
    assert not any("R, G, B" in n for n in plain.notes)


class CountingEcho(EchoQuery):
    def __init__(self, resolution: int = 32) -> None:
        super().__init__(resolution)
        self.calls = 0

    def forward(self, target, images, labels):
        self.calls += 1
        return super().forward(target, images, labels)


def test_segment_reuse_runs_the_support_checks_once_with_the_same_result():
    from incontext.inference import segment
    from incontext.support_cache import CACHE_KEY

    _, labels, colour = hue_task(12, seed=13)
    rgb = np.moveaxis(colour, 1, -1)
    lab = labels.astype(np.int64)
    model = CountingEcho(32)
    fresh = [segment(model, rgb[q], list(rgb[:8]), list(lab[:8])) for q in (8, 9, 10)]
    per_call = model.calls // 3
    model.calls = 0
    reuse: dict = {}
    kept = [segment(model, rgb[q], list(rgb[:8]), list(lab[:8]), reuse=reuse) for q in (8, 9, 10)]
    assert {k for k in reuse if isinstance(k, int)} == {1} and reuse[1][2] == fresh[0].colours[0]
    assert CACHE_KEY in reuse  # the preprocessed supports, kept for the next call
    assert model.calls < per_call + 2 * (per_call // 10 + 2)  # checks once, then one pass each
    for a, b in zip(fresh, kept, strict=True):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
        assert (a.tiles, a.thresholds, a.colours) == (b.tiles, b.thresholds, b.colours)


def test_training_episodes_rendered_from_colour(tmp_path):
    from incontext.training.config import ConfigError, config_from_dict
    from incontext.training.sources import IndexSource, SourceError, render_episode

    _, labels, colour = hue_task(12, seed=10)
    rgb8 = (np.moveaxis(colour, 1, -1) * 255).round().astype(np.uint8)
    index = TaskIndex(_built_index(tmp_path, rgb8, labels, "toy"))
    task = index.tasks[0].name
    plain = index.episode(task, "train", 3, 1, np.random.default_rng(0))
    ep = index.episode(task, "train", 3, 1, np.random.default_rng(0), with_colour=True)
    assert plain.support_colour is None
    assert ep.support_colour.shape == (3, 3, 32, 32) and ep.query_colour.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(ep.support_images, plain.support_images)  # same draw
    green = render_episode(ep, "green")
    np.testing.assert_array_equal(green.query_images, ep.query_colour[:, 1])
    np.testing.assert_array_equal(green.support_labels, ep.support_labels)
    assert render_episode(plain, "green") is plain  # nothing to render from

    # p = 1: every episode differs from luma; p = 0 draws exactly what it always did
    luma_src = IndexSource(index, 32)
    always = IndexSource(index, 32, colour_render_p=1.0)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    before = [luma_src.sample(a, 4).query_images for _ in range(6)]
    recoloured = [always.sample(b, 4).query_images for _ in range(6)]
    assert all(not np.allclose(x, y) for x, y in zip(before, recoloured, strict=True))
    again = IndexSource(index, 32, colour_render_p=0.0).sample(np.random.default_rng(3), 4)
    np.testing.assert_array_equal(again.query_images, before[0])
    with pytest.raises(SourceError, match="colour_render_p"):
        IndexSource(index, 32, colour_render_p=1.5)
    grey_index = TaskIndex(_built_index(tmp_path / "grey", (colour[:, 0] * 255).astype(
        np.uint8), labels, "grey"))
    with pytest.raises(SourceError, match="no dataset of the index"):
        IndexSource(grey_index, 32, colour_render_p=0.5)
    assert config_from_dict({"data": {"colour_render_p": 0.5}}).data.colour_render_p == 0.5
    with pytest.raises(ConfigError, match="colour_render_p"):
        config_from_dict({"data": {"colour_render_p": -0.1}})
