"""incontext evaluate / incontext.evaluation: matching, known scores, NIfTI spacing, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from incontext.cli import main
from incontext.evaluation import EvaluationError, evaluate_folders, match_files


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _square(r0: int, c0: int, side: int = 4, value: int = 1, shape=(16, 16)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[r0:r0 + side, c0:c0 + side] = value
    return m


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    _png(pred / "a.png", _square(2, 2))                      # exact
    _png(truth / "a_seg.png", _square(2, 2))
    _png(pred / "b.png", _square(2, 4))                      # half overlap: Dice 0.5
    _png(truth / "b_mask.png", _square(2, 2))
    _png(pred / "b_overlay.png", np.zeros((16, 16, 3)))      # a preview, not a prediction
    _png(pred / "c.png", _square(8, 8))                      # no ground truth
    _png(truth / "d.png", _square(1, 1))                     # no prediction
    return pred, truth


def test_known_scores_and_matching(tmp_path):
    pred, truth = _folders(tmp_path)
    result = evaluate_folders(pred, truth)
    assert [f.case for f in result.files] == ["a", "b"] and result.labels == [1]
    a, b = (f.scores[1] for f in result.files)
    assert a["dice"] == 1.0 and a["hd95"] == 0.0
    assert b["dice"] == pytest.approx(0.5) and b["iou"] == pytest.approx(1 / 3)
    assert b["hd95"] == pytest.approx(2.0)  # the squares' side edges are 2 px apart
    assert [p.name for p in result.unmatched_predictions] == ["c.png"]
    assert [p.name for p in result.unmatched_truths] == ["d.png"]
    assert result.summary()[1]["dice"]["mean"] == pytest.approx(0.75)


def test_nifti_in_mm_preferred_over_the_png_of_the_same_case(tmp_path):
    cube = np.zeros((10, 10, 10), np.uint8)
    cube[2:6, 2:6, 2:6] = 2
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    nib.save(nib.Nifti1Image(np.roll(cube, 3, axis=2), affine), tmp_path / "pred" / "p1.nii.gz")
    _png(tmp_path / "pred" / "p1.png", np.zeros((10, 10)))  # segment writes one for 2D NIfTI
    nib.save(nib.Nifti1Image(cube, affine), tmp_path / "truth" / "p1.nii.gz")
    (f,) = evaluate_folders(tmp_path / "pred", tmp_path / "truth").files
    assert f.prediction.name == "p1.nii.gz" and f.units == "mm"
    assert f.scores[2]["hd95"] == pytest.approx(4.5)  # 3 voxels of 1.5 mm
    assert f.scores[2]["dice"] == pytest.approx(2 * 16 / 128)


def test_labels_absent_from_a_case_score_as_empty_against_empty(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    _png(pred / "a.png", _square(2, 2, value=1))
    _png(truth / "a.png", _square(2, 2, value=1))
    _png(pred / "b.png", _square(2, 2, value=2))
    _png(truth / "b.png", _square(2, 2, value=2))
    result = evaluate_folders(pred, truth)
    assert result.labels == [1, 2]
    a = result.files[0]
    assert a.scores[2]["dice"] == 1.0 and math.isnan(a.scores[2]["hd95"])
    assert a.empty[2] == (True, True)


def test_errors_name_the_problem(tmp_path):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    _png(pred / "a.png", _square(2, 2))
    _png(truth / "x.png", _square(2, 2))
    with pytest.raises(EvaluationError, match="no prediction has a ground truth"):
        match_files(pred, truth)
    with pytest.raises(EvaluationError, match="not a folder"):
        match_files(tmp_path / "missing", truth)
    _png(truth / "a.png", np.zeros((8, 8)))
    with pytest.raises(EvaluationError, match=r"a\.png: shape \(16, 16\) differs"):
        evaluate_folders(pred, truth)
    _png(truth / "a.png", np.zeros((16, 16)))
    (truth / "x.png").unlink()
    with pytest.raises(EvaluationError, match="every ground truth file is empty"):
        evaluate_folders(pred, truth)
    assert evaluate_folders(pred, truth, labels=[1]).files[0].scores[1]["dice"] == 0.0


def test_cli_writes_csv_and_json_and_keeps_existing_files(tmp_path, capsys):
    pred, truth = _folders(tmp_path)
    out_csv, out_json = tmp_path / "res" / "scores.csv", tmp_path / "res" / "scores.json"
    argv = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--csv", str(out_csv),
            "--json", str(out_json), "--per-case"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "0.750" in printed and "1 prediction(s) without ground truth" in printed
    rows = list(csv.DictReader(out_csv.open()))
    assert [(r["case"], float(r["dice"])) for r in rows] == [("a", 1.0), ("b", 0.5)]
    data = json.loads(out_json.read_text())
    assert data["summary"]["1"]["dice"]["mean"] == pytest.approx(0.75)
    out_csv.write_text("keep me")
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err and out_csv.read_text() == "keep me"
    assert main([*argv, "--overwrite"]) == 0


def test_cli_warns_when_label_values_do_not_match(tmp_path, capsys):
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    _png(pred / "a.png", _square(2, 2, value=255))
    _png(truth / "a.png", _square(2, 2, value=1))
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth)]) == 0
    assert "1 vs 255" in capsys.readouterr().out
