"""incontext segment / evaluate on realistic user mistakes: one clear error naming the file
(no traceback, no silently wrong labels) and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from incontext.cli import main


def _disc(i: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[:size, :size]
    label = ((yy - 15 - i) ** 2 + (xx - 16) ** 2 <= (6 + i) ** 2).astype(np.uint8)
    image = np.clip(40 + 150 * label.astype(np.float32) + rng.normal(0, 10, label.shape), 0, 255)
    return image.astype(np.uint8), label


def _support_dir(root: Path, n: int = 3, value: int = 255) -> Path:
    """root/sup/{images,labels}/c{i}.png (discs marked with ``value``) and root/q/q0.png."""
    (root / "sup" / "images").mkdir(parents=True)
    (root / "sup" / "labels").mkdir()
    (root / "q").mkdir()
    for i in range(n):
        image, label = _disc(i)
        Image.fromarray(image).save(root / "sup" / "images" / f"c{i}.png")
        Image.fromarray(label * value).save(root / "sup" / "labels" / f"c{i}.png")
    Image.fromarray(_disc(5)[0]).save(root / "q" / "q0.png")
    return root


def _volume(i: int, shape=(16, 16, 8)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    label = (((z - 8) / 5) ** 2 + ((y - 8) / 5) ** 2 + ((x - 4) / 3) ** 2 <= 1).astype(np.uint8)
    image = (100 + 300 * label.astype(np.float32) + rng.normal(0, 20, shape)).astype(np.float32)
    return image, label


def _volume_dir(root: Path) -> Path:
    """root/sup/{images,labels}/v{0,1}.nii.gz and root/q/q0.nii.gz."""
    for sub in ("sup/images", "sup/labels", "q"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        image, label = _volume(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "sup" / "images" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "sup" / "labels" / f"v{i}.nii.gz")
    nib.save(nib.Nifti1Image(_volume(5)[0], np.eye(4)), root / "q" / "q0.nii.gz")
    return root


def _segment(root: Path, model: Path, *extra: str, out: str = "out") -> int:
    return main(["segment", "--support-dir", str(root / "sup"), "--query", str(root / "q"),
                 "--out", str(root / out), "--model", str(model), "--tiles", "1", *extra])


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ----------------------------------------------------------------------------- segment


def test_masks_mixing_0_1_and_0_255_are_refused(tmp_path, model_path, capsys):
    root = _support_dir(tmp_path)
    Image.fromarray(_disc(1)[1]).save(root / "sup" / "labels" / "c1.png")  # 0/1, others 0/255
    assert _segment(root, model_path) == 2
    err = _err(capsys)
    assert "c1.png has 1" in err and "c0.png has 255" in err and "--labels" in err
    assert not (root / "out").exists()


def test_anti_aliased_mask_is_refused(tmp_path, model_path, capsys):
    root = _support_dir(tmp_path)
    label = Image.fromarray(_disc(2)[1] * 255)
    label.resize((64, 64), Image.BILINEAR).resize((32, 32), Image.BILINEAR).save(
        root / "sup" / "labels" / "c2.png")
    assert _segment(root, model_path) == 2
    err = _err(capsys)
    assert "c2.png has 255 and also" in err
    assert not (root / "out").exists()


def test_image_given_as_its_own_label_is_refused(tmp_path, model_path, capsys):
    root = _support_dir(tmp_path, value=1)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 200, (32, 32), dtype=np.uint8)).save(
        root / "sup" / "labels" / "c0.png")
    assert _segment(root, model_path) == 2
    err = _err(capsys)
    assert "c0.png: label map has" in err and "different values" in err


def test_labels_option_accepts_unusual_label_values(tmp_path, model_path):
    root = _support_dir(tmp_path)
    Image.fromarray(_disc(1)[1] * 128).save(root / "sup" / "labels" / "c1.png")
    assert _segment(root, model_path, "--labels", "128,255") == 0
    assert (root / "out" / "q0.png").is_file()


def test_16_bit_masks_give_16_bit_label_maps(tmp_path, model_path):
    root = _support_dir(tmp_path)
    for i in range(3):
        Image.fromarray(_disc(i)[1].astype(np.uint16) * 65535).save(
            root / "sup" / "labels" / f"c{i}.png")
    assert _segment(root, model_path) == 0
    values = np.unique(np.asarray(Image.open(root / "out" / "q0.png")))
    assert set(values.tolist()) <= {0, 65535}


def test_4d_nifti_query_is_refused_as_4d(tmp_path, model_path, capsys):
    root = _volume_dir(tmp_path)
    image = _volume(7)[0]
    nib.save(nib.Nifti1Image(np.stack([image, image], -1), np.eye(4)),
             root / "q" / "q1.nii.gz")
    assert _segment(root, model_path) == 2
    err = _err(capsys)
    assert "q1.nii.gz: 4D image" in err and "give one 2D or 3D image" in err
    assert not (root / "out").exists()


def test_nan_in_a_support_image_names_the_file(tmp_path, model_path, capsys):
    root = _volume_dir(tmp_path)
    image = _volume(1)[0]
    image[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), root / "sup" / "images" / "v1.nii.gz")
    assert _segment(root, model_path) == 2
    assert "v1.nii.gz: contains 1 NaN/inf" in _err(capsys)
    assert not (root / "out").exists()


def test_nan_in_a_query_names_the_file(tmp_path, model_path, capsys):
    root = _volume_dir(tmp_path)
    image = _volume(5)[0]
    image[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(image, np.eye(4)), root / "q" / "q0.nii.gz")
    assert _segment(root, model_path) == 2
    err = _err(capsys)
    assert "q0.nii.gz: contains 1 NaN/inf" in err
    assert not (root / "out" / "q0.nii.gz").exists()


def test_negative_label_values_are_refused(tmp_path, model_path, capsys):
    root = _volume_dir(tmp_path)
    label = _volume(1)[1].astype(np.int16) - 1  # background -1, structure 0
    nib.save(nib.Nifti1Image(label, np.eye(4)), root / "sup" / "labels" / "v1.nii.gz")
    assert _segment(root, model_path) == 2
    assert "v1.nii.gz: negative label value -1" in _err(capsys)
    assert not (root / "out").exists()


def test_output_or_report_that_is_a_folder_fails_before_any_work(tmp_path, model_path,
                                                                  capsys):
    root = _support_dir(tmp_path)
    (root / "out" / "q0.png").mkdir(parents=True)
    assert _segment(root, model_path, "--overwrite") == 2
    assert "q0.png: is a folder, not a file" in _err(capsys)
    (root / "report.json").mkdir()
    assert _segment(root, model_path, "--overwrite", "--report", str(root / "report.json"),
                    out="out2") == 2
    assert "report.json: is a folder, not a file" in _err(capsys)
    assert not (root / "out2").exists()


# ----------------------------------------------------------------------------- evaluate


def _eval_dirs(root: Path) -> tuple[Path, Path]:
    pred, truth = root / "pred", root / "truth"
    pred.mkdir()
    truth.mkdir()
    for i in range(2):
        label = _disc(i)[1]
        Image.fromarray(label).save(pred / f"c{i}.png")
        Image.fromarray(label).save(truth / f"c{i}.png")
    return pred, truth


def test_evaluate_refuses_two_ground_truths_for_one_case(tmp_path, capsys):
    pred, truth = _eval_dirs(tmp_path)
    Image.fromarray(_disc(1)[0]).save(truth / "c1_mask.png")  # c1.png is then ambiguous
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth)]) == 2
    err = _err(capsys)
    assert "'c1' has several files" in err and "c1.png" in err and "c1_mask.png" in err


def test_evaluate_negative_ground_truth_is_refused(tmp_path, capsys):
    pred, truth = _eval_dirs(tmp_path)
    (truth / "c1.png").unlink()
    label = _disc(1)[1].astype(np.int16)[..., None] - 1
    nib.save(nib.Nifti1Image(label, np.eye(4)), truth / "c1.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth)]) == 2
    assert "c1.nii.gz: negative label value -1" in _err(capsys)


def test_evaluate_csv_that_is_a_folder_or_the_json_fails_before_scoring(tmp_path, capsys):
    pred, truth = _eval_dirs(tmp_path)
    (tmp_path / "scores.csv").mkdir()
    argv = ["evaluate", "--pred", str(pred), "--truth", str(truth), "--overwrite"]
    assert main([*argv, "--csv", str(tmp_path / "scores.csv")]) == 2
    assert "scores.csv: is a folder, not a file" in _err(capsys)
    same = str(tmp_path / "s.txt")
    assert main([*argv, "--csv", same, "--json", same]) == 2
    assert "same file" in _err(capsys)
    assert not (tmp_path / "s.txt").exists()


def test_three_value_label_maps_are_two_labels(tmp_path, model_path):
    root = _support_dir(tmp_path)
    for i in range(3):  # 0 / 128 / 255, as two-structure masks (WBC) are saved
        label = _disc(i + 1)[1] * 128
        label[_disc(i)[1] > 0] = 255
        Image.fromarray(label).save(root / "sup" / "labels" / f"c{i}.png")
    assert _segment(root, model_path) == 0  # not refused as a mix of 255 and other values
    values = set(np.unique(np.asarray(Image.open(root / "out" / "q0.png"))).tolist())
    assert values <= {0, 128, 255}
