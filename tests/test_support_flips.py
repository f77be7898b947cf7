"""Flipped copies of the supports: the copies, the per-label check, and the options that
use them (segment, the benchmark's model method, the CLI)."""

from __future__ import annotations

import argparse

import nibabel as nib
import numpy as np
import pytest
import torch
from fake_models import MeanSupportLabel

from incontext.benchmark.methods import ModelMethod
from incontext.cli import CLIError
from incontext.cli import segment as segment_cli
from incontext.cli.segment_run import run as run_segment_cli
from incontext.inference import SupportSetError, segment
from incontext.support_flips import (
    check_support_flips,
    choose_support_flips,
    default_support_flips,
    flipped_copies,
)


def segment_plain(*args, **kwargs):
    """``segment`` without the pixel head (these tests check what the model alone does)."""
    return segment(*args, refine="off", **kwargs)


def _mean_label(q, si, sl):
    """A stand-in model: every query gets the mean support label."""
    return sl.mean(dim=0, keepdim=True).expand(q.shape[0], -1, -1)


def _quadrant(corner: str, size: int = 8) -> torch.Tensor:
    mask = torch.zeros(size, size)
    h = size // 2
    rows = slice(0, h) if corner[0] == "t" else slice(h, size)
    cols = slice(0, h) if corner[1] == "l" else slice(h, size)
    mask[rows, cols] = 1
    return mask


def test_flipped_copies_are_the_three_mirrors_after_the_originals():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    out = flipped_copies(x)
    assert out.shape == (8, 3, 4)
    torch.testing.assert_close(out[:2], x)
    torch.testing.assert_close(out[2:4], x.flip(-1))
    torch.testing.assert_close(out[4:6], x.flip(-2))
    torch.testing.assert_close(out[6:], x.flip(-2, -1))


def test_check_refuses_flips_where_the_side_matters():
    # every label is the top-left quadrant: its mirrors put foreground everywhere else
    labels = torch.stack([_quadrant("tl")] * 4)
    images = torch.rand(4, 8, 8)
    check = choose_support_flips(_mean_label, images, labels, cut=0.5)
    assert not check.use and check.checks == 4
    assert check.plain == pytest.approx(1.0) and check.flipped == pytest.approx(0.0)


def test_check_takes_flips_where_they_segment_the_supports_better():
    # the structure sits in a different corner in each support: the mirrors cover them all
    labels = torch.stack([_quadrant(c) for c in ("tl", "tr", "bl", "br")])
    images = torch.rand(4, 8, 8)
    check = choose_support_flips(_mean_label, images, labels, cut=0.2)
    assert check.use and check.flipped > check.plain


def test_one_support_is_checked_by_segmenting_its_own_flipped_copies():
    label = _quadrant("tl")[None]
    # a side-bound model (the support's label where it was) misses every mirrored copy
    bound = choose_support_flips(_mean_label, torch.rand(1, 8, 8), label)
    assert not bound.use and bound.consistency == 0.0
    assert bound.checks == 0 and bound.plain is None

    def echo(q, si, sl):  # follows the content: the query's own intensity
        return q.clone()

    content = choose_support_flips(echo, label.clone(), label)  # the image is the label
    assert content.use and content.consistency == pytest.approx(1.0)


def test_check_caps_the_checks():
    calls = []

    def counting(q, si, sl):
        calls.append(si.shape[0])
        return _mean_label(q, si, sl)

    labels = torch.stack([_quadrant("tl")] * 12)
    check = choose_support_flips(counting, torch.rand(12, 8, 8), labels, max_checks=3)
    assert check.checks == 3 and calls == [11, 44] * 3


def test_bad_setting_is_refused():
    with pytest.raises(ValueError, match="support flips must be one of off, on, auto"):
        check_support_flips("yes")
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    label = np.zeros((16, 16), np.uint8)
    label[2:8, 2:8] = 1
    with pytest.raises(SupportSetError, match="support flips"):
        segment(MeanSupportLabel(16), image, [image], [label], support_flips="maybe")


def _corner_task(corners: str, size: int = 16):
    rng = np.random.default_rng(0)
    images, labels = [], []
    for c in corners:
        lab = np.zeros((size, size), np.uint8)
        h = size // 2
        lab[(slice(0, h) if c in "ab" else slice(h, size)),
            (slice(0, h) if c in "ac" else slice(h, size))] = 1
        images.append(rng.random((size, size)).astype(np.float32))
        labels.append(lab)
    return images, labels


def test_segment_adds_copies_only_where_asked_and_reports_it():
    model = MeanSupportLabel(16)
    images, labels = _corner_task("aaaa")  # always top-left: the side matters
    query = images[0]
    off = segment_plain(model, query, images, labels, threshold=0.5)
    auto = segment_plain(model, query, images, labels, threshold=0.5, support_flips="auto")
    on = segment_plain(model, query, images, labels, threshold=0.5, support_flips="on")
    assert off.flips == [False] and auto.flips == [False] and on.flips == [True]
    np.testing.assert_array_equal(auto.mask, off.mask)
    assert off.mask[:8, :8].all() and not off.mask[8:].any()
    # with the mirrors the mean label is 0.25 everywhere: nothing passes the 0.5 cut
    assert not on.mask.any()
    reuse: dict = {}
    first = segment_plain(model, query, images, labels, threshold=0.5, support_flips="on",
                          reuse=reuse)
    again = segment_plain(model, query, images, labels, threshold=0.5, support_flips="on",
                          reuse=reuse)
    assert first.flips == again.flips == [True]


def test_default_checks_the_copies_only_with_one_to_four_supports():
    assert [default_support_flips(n) for n in (0, 1, 2, 4, 5, 16)] == [
        "off", "auto", "auto", "auto", "off", "off"]
    model = MeanSupportLabel(16)
    # each support a different quadrant: from the other three, only the mirrors reach the
    # held-out support's quadrant, so the check takes them (at a 0.2 cut)
    images, labels = _corner_task("abcd")
    few = segment_plain(model, images[0], images, labels, threshold=0.2)
    assert few.flips == [True]
    assert few.mask.all()  # every quadrant is covered by a quarter of the entries
    # the estimate is that of the copies: each held-out quadrant within the whole image
    assert few.support_checks == [4]
    assert few.support_dice[0] == pytest.approx(2 * 64 / (256 + 64))
    images, labels = _corner_task("abcdabcd")  # 8 supports: unchecked, as given
    many = segment_plain(model, images[0], images, labels, threshold=0.2)
    assert many.flips == [False]
    fixed = segment_plain(model, images[0], images[:4], labels[:4], threshold=0.2,
                    support_flips="off")
    assert fixed.flips == [False]
    named = segment_plain(model, images[0], images[:4], labels[:4], threshold=0.2,
                    support_flips="default")
    assert named.flips == [True]
    # with --nearest the copies would compete with the supports for the K places: off
    near = segment_plain(model, images[0], images[:4], labels[:4], threshold=0.2, nearest=4)
    assert near.flips == [False]


def test_benchmark_method_names_records_and_uses_the_choice():
    images, labels = _corner_task("aaaa")
    si = np.stack(images)
    sl = np.stack(labels).astype(np.float32)
    method = ModelMethod(MeanSupportLabel(16), name="m", support_flips="auto")
    assert method.name == "m-flips-auto" and method.describe()["support_flips"] == "auto"
    assert "support_flips" not in ModelMethod(MeanSupportLabel(16), name="m").describe()
    prob = method.predict(si, sl, si[:1], seed=0)
    assert method.chosen_flips == [False] and prob[0, :8, :8].min() > 0.5
    default = ModelMethod(MeanSupportLabel(16), name="m", support_flips="default")
    assert default.name == "m-flips-default"
    default.predict(si, sl, si[:1], seed=0)  # 4 supports: checked, as segment does
    default.predict(np.concatenate([si, si]), np.concatenate([sl, sl]), si[:1], seed=0)
    assert default.chosen_flips == [False]  # 8 supports: not checked
    on = ModelMethod(MeanSupportLabel(16), name="m", support_flips="on")
    assert on.predict(si, sl, si[:1], seed=0).max() < 0.5
    with pytest.raises(ValueError, match="support flips"):
        ModelMethod(MeanSupportLabel(16), name="m", support_flips="both")


def test_cli_refuses_support_flips_for_volumes(tmp_path):
    vol = np.random.default_rng(0).random((8, 8, 6)).astype(np.float32)
    lab = np.zeros((8, 8, 6), np.uint8)
    lab[2:5, 2:5, :] = 1
    for name, arr in (("img.nii.gz", vol), ("lab.nii.gz", lab)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / name))
    parser = argparse.ArgumentParser()
    segment_cli.register(parser.add_subparsers(dest="command"))
    pair = f"{tmp_path}/img.nii.gz:{tmp_path}/lab.nii.gz"
    args = parser.parse_args(["segment", "--support", pair, "--query",
                              str(tmp_path / "img.nii.gz"), "--out", str(tmp_path / "out"),
                              "--support-flips", "auto"])
    with pytest.raises(CLIError, match="--support-flips is for 2D images"):
        run_segment_cli(args)
