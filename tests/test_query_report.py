"""benchmarks/query_report.py: per-query Dice, foreground fractions and an overlay of one task."""

import numpy as np
import pytest
import torch
from bench_scripts import load_script
from PIL import Image

from incontext.data import TaskIndex, build_index
from incontext.data.fixtures import write_png_pairs
from incontext.models import UniverSeg, save


def test_overlay_marks_the_mask_red_and_outlines_the_truth_green():
    qr = load_script("query_report")
    image = np.full((8, 8), 0.5, np.float32)
    mask = np.zeros((8, 8), bool)
    mask[:2, :2] = True
    truth = np.zeros((8, 8), bool)
    truth[4:8, 4:8] = True
    grid = qr.overlay_rows([image, np.stack([image] * 3, -1)], [mask, mask], [truth, truth])
    assert grid.shape == (16, 16, 3) and grid.dtype == np.uint8
    left, right = grid[:8, :8], grid[:8, 8:]
    assert (left == 127).all()  # the image as it is
    assert right[0, 0].tolist() == [190, 63, 63]  # masked: half image, half red
    assert right[4, 4].tolist() == [0, 255, 0] and right[6, 6].tolist() == [127, 127, 127]
    assert (grid[8:] == grid[:8]).all()  # a colour image gives the same row


def test_report_prints_each_query_and_writes_the_overlay(tmp_path, capsys):
    qr = load_script("query_report")
    pairs = write_png_pairs(tmp_path / "pairs", n=12, seed=3, rgb=True)
    build_index("png-pairs", pairs, tmp_path / "toy.h5", size=32, progress=False,
                recipe_options={"dataset": "toy"})
    with TaskIndex.open(tmp_path / "toy.h5") as index:
        task = index.tasks[0].name
        n_val = len(index.load_split(task, "val")[0])
    torch.manual_seed(0)
    weights = save(UniverSeg(encoder_widths=(8, 8, 8), resolution=32).eval(),
                   tmp_path / "tiny.safetensors")
    png = tmp_path / "look.png"
    assert qr.main([str(tmp_path / "toy.h5"), task, "--support-size", "4", "--queries", "2",
                    "--model", str(weights), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    shown = min(2, n_val)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "query" not in line]
    assert len(rows) == shown
    for row in rows:
        dice, predicted, true, covered = (float(c) for c in row.strip("|").split("|")[1:])
        assert 0 <= dice <= 100 and 0 <= predicted <= 1 and 0 < true <= 1 and 0 <= covered <= 1
    assert "label 1: 4 supports" in out and "rendering" in out
    assert Image.open(png).size == (64, 32 * shown)


def test_report_names_a_missing_index_or_task(tmp_path, capsys):
    qr = load_script("query_report")
    missing = tmp_path / "none.h5"
    with pytest.raises(SystemExit) as exc:
        qr.main([str(missing), "a/2d/b"])
    assert exc.value.code == 2
    assert f"{missing}: no such index" in capsys.readouterr().err
