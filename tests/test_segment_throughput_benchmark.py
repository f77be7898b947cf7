"""benchmarks/segment_throughput.py: generated task, one row per (N, mode), atomic JSON."""

import json

import numpy as np
import pytest
import torch
from bench_scripts import load_script

from incontext.models import UniverSeg, save


def _load():
    return load_script("segment_throughput")


def test_generated_task_is_colour_with_one_disc_each():
    bench = _load()
    images, labels = bench.make_task(3, 48, seed=1)
    assert images.shape == (3, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (3, 48, 48) and set(np.unique(labels)) == {0, 1}
    for image, label in zip(images, labels, strict=True):
        inside = image[label == 1].mean(axis=0)
        outside = image[label == 0].mean(axis=0)
        assert inside[0] > outside[0] + 30  # the disc is redder than its background


def test_rows_for_every_support_size_and_mode(tmp_path):
    bench = _load()
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save(UniverSeg(encoder_widths=(8, 8), resolution=32), weights)
    out = tmp_path / "res" / "throughput.json"
    assert bench.main(["--model", str(weights), "--device", "cpu", "--supports", "3,4",
                       "--queries", "2", "--size", "40", "--repeats", "1",
                       "--modes", "plain,default", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["image_size"] == 40
    assert [(r["support_size"], r["mode"]) for r in report["rows"]] == [
        (3, "plain"), (3, "default"), (4, "plain"), (4, "default")]
    for row in report["rows"]:
        assert row["cold_s"] > 0 and row["warm_s"] > 0 and row["queries"] == 2
        assert row["queries_per_s"] == pytest.approx(2 / row["warm_s"])
        assert row["ms_per_file"] > 0
    default = [r for r in report["rows"] if r["mode"] == "default"][0]
    assert list(default["choices"]) == ["1"]  # one label value, its choices recorded
    assert not list(out.parent.glob("*.tmp"))


def test_unknown_mode_is_rejected():
    bench = _load()
    with pytest.raises(SystemExit):
        bench.main(["--modes", "plain,fastest"])
