"""incontext segment: 2D and 3D round trips on generated files, outputs, and bad input."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import incontext.cli
from incontext.cli import CLIError
from incontext.cli import segment as segment_cli
from incontext.models import UniverSeg, save


def run_cli(argv: list[str]) -> int:
    """incontext.cli.main once ``segment`` is registered there; an equivalent parser until then."""
    if "segment" in incontext.cli.SUBCOMMANDS:
        return incontext.cli.main(argv)
    parser = argparse.ArgumentParser(prog="incontext")
    sub = parser.add_subparsers(dest="command")
    segment_cli.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"incontext {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _disc_image(shape, centre, radius, rng):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2).astype(np.uint8)
    image = 40 + 150 * label + rng.normal(0, 10, shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_2d_folder(root: Path, n: int = 3, seed: int = 0, label_value: int = 255,
                   colour: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        image, label = _disc_image((40 + 4 * i, 48), (20, 24 + i), 8 + i, rng)
        if colour:
            Image.fromarray(np.stack([image, image // 2, image], -1)).save(
                root / "images" / f"case{i}.png")
        else:
            Image.fromarray(image).save(root / "images" / f"case{i}.png")
        Image.fromarray(label * label_value).save(root / "labels" / f"case{i}_mask.png")
    return root


def _affine(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    aff = np.eye(4)
    aff[:3, :3] = rot * np.array([0.9, 1.1, 2.0])
    aff[:3, 3] = rng.normal(0, 50, 3)
    return aff


def make_volume(shape, seed: int, two_labels: bool = False):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    ball = ((zz - c[0]) ** 2 / (shape[0] / 4) ** 2 + (yy - c[1]) ** 2 / (shape[1] / 4) ** 2
            + (xx - c[2]) ** 2 / (shape[2] / 4) ** 2) <= 1
    label = ball.astype(np.uint8)
    if two_labels:
        label[(zz < c[0]) & ball] = 2
    image = (200 * label + rng.normal(0, 20, shape)).astype(np.int16)
    return image, label


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, **header) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, str(path))


def make_nnunet(root: Path, n: int = 3, shape=(16, 18, 12), two_labels: bool = False) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        image, label = make_volume(shape, i, two_labels)
        aff = _affine(i)
        write_nifti(root / "imagesTr" / f"la_{i:03d}_0000.nii.gz", image, aff)
        write_nifti(root / "labelsTr" / f"la_{i:03d}.nii.gz", label, aff)
    return root


# ----------------------------------------------------------------------------- 2D


def test_2d_folder_round_trip(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup", colour=True)
    queries = tmp_path / "queries"
    queries.mkdir()
    rng = np.random.default_rng(5)
    shapes = [(37, 52), (60, 30)]
    for i, shape in enumerate(shapes):
        image, _ = _disc_image(shape, (shape[0] // 2, shape[1] // 2), 7, rng)
        Image.fromarray(image).save(queries / f"q{i}.png" if i == 0 else queries / f"q{i}.bmp")
    out = tmp_path / "out"
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(queries), "--out", str(out),
                  "--model", str(model_path), "--overlays", "--uncertainty", "--ensemble", "2",
                  "--support-size", "2"])
    assert rc == 0, capsys.readouterr().err
    for i, shape in enumerate(shapes):
        mask = np.asarray(Image.open(out / f"q{i}.png"))
        assert mask.shape == shape
        assert set(np.unique(mask)) <= {0, 255}  # the supports' label value is kept
        overlay = np.asarray(Image.open(out / f"q{i}_overlay.png"))
        assert overlay.shape == (*shape, 3)
        assert np.asarray(Image.open(out / f"q{i}_uncertainty.png")).shape == shape
    printed = capsys.readouterr().out
    assert "q0.png" in printed and "fg % label 255" in printed


def test_nnunet_channel_suffix_dropped_from_2d_output_names(tmp_path, model_path):
    sup = make_2d_folder(tmp_path / "sup")
    queries = tmp_path / "imagesTs"
    queries.mkdir()
    shutil.copy(sup / "images" / "case0.png", queries / "case010_0000.png")
    out = tmp_path / "out"
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(queries), "--out",
                  str(out), "--model", str(model_path), "--overlays"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["case010.png", "case010_overlay.png"]


def test_existing_output_needs_overwrite(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup")
    query = sup / "images" / "case0.png"
    out = tmp_path / "out"
    out.mkdir()
    (out / "case0.png").write_bytes(b"keep me")
    argv = ["segment", "--support-dir", str(sup), "--query", str(query), "--out", str(out),
            "--model", str(model_path)]
    assert run_cli(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "case0.png").read_bytes() == b"keep me"
    assert run_cli([*argv, "--overwrite"]) == 0
    assert np.asarray(Image.open(out / "case0.png")).shape == (40, 48)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_unwritable_output_folder_fails_before_any_work(tmp_path, model_path, capsys,
                                                       monkeypatch):
    import tempfile

    import incontext.inference

    sup = make_2d_folder(tmp_path / "sup")
    query = sup / "images" / "case0.png"
    (tmp_path / "a_file").write_text("x")
    argv = ["segment", "--support-dir", str(sup), "--query", str(query), "--model",
            str(model_path)]

    def no_work(*a, **k):
        raise AssertionError("segmentation ran before the output folder was checked")

    monkeypatch.setattr(incontext.inference, "segment", no_work)
    assert run_cli([*argv, "--out", str(tmp_path / "a_file" / "out")]) == 2
    err = capsys.readouterr().err
    assert "a_file is a file" in err and "Traceback" not in err
    real = tempfile.mkstemp

    def read_only(*a, dir=None, **k):  # a read-only mount (root ignores permission bits)
        if str(dir) == str(tmp_path):
            raise OSError(30, "Read-only file system")
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert run_cli([*argv, "--out", str(tmp_path / "new" / "deeper")]) == 2
    err = capsys.readouterr().err
    assert "cannot be created in" in err and "Read-only file system" in err
    assert not (tmp_path / "new").exists()  # nothing created


def test_2d_nifti_query_gets_png_and_nifti(tmp_path, model_path):
    sup = make_2d_folder(tmp_path / "sup", label_value=1)
    aff = _affine(3)
    image, _ = _disc_image((30, 34), (15, 17), 6, np.random.default_rng(0))
    write_nifti(tmp_path / "q.nii", image[..., None].astype(np.float32), aff)
    out = tmp_path / "out"
    assert run_cli(["segment", "--support-dir", str(sup), "--query", str(tmp_path / "q.nii"),
                    "--out", str(out), "--model", str(model_path)]) == 0
    res = nib.load(str(out / "q.nii.gz"))
    assert res.shape == (30, 34, 1)
    np.testing.assert_array_equal(res.affine, nib.load(str(tmp_path / "q.nii")).affine)
    png = np.asarray(Image.open(out / "q.png"))
    np.testing.assert_array_equal(png, np.asarray(res.dataobj)[..., 0])


# ----------------------------------------------------------------------------- 3D


def test_3d_nnunet_round_trip_keeps_geometry(tmp_path, model_path, capsys):
    data = make_nnunet(tmp_path / "Dataset001_Test", n=3, two_labels=True)
    qdir = tmp_path / "queries"
    qdir.mkdir()
    q_image, _ = make_volume((14, 20, 10), 9, True)
    q_aff = _affine(9)
    write_nifti(qdir / "case_0000.nii.gz", q_image, q_aff, descrip=b"query scan",
                xyzt_units=10)
    nib.load(str(qdir / "case_0000.nii.gz"))
    out = tmp_path / "out"
    rc = run_cli(["segment", "--support-dir", str(tmp_path), "--query", str(qdir / "*.nii.gz"),
                  "--out", str(out), "--model", str(model_path), "--modality", "mr",
                  "--planes", "3", "--uncertainty", "--overlays", "--ensemble", "2",
                  "--support-size", "4", "--largest-component", "--fill-holes"])
    assert rc == 0, capsys.readouterr().err
    assert data.exists()
    ref = nib.load(str(qdir / "case_0000.nii.gz"))
    res = nib.load(str(out / "case.nii.gz"))  # nnU-Net channel suffix dropped
    assert res.shape == ref.shape
    np.testing.assert_array_equal(res.affine, ref.affine)
    for key in ("qform_code", "sform_code", "pixdim", "xyzt_units", "descrip", "quatern_b",
                "srow_x", "srow_y", "srow_z", "dim"):
        np.testing.assert_array_equal(res.header[key], ref.header[key], err_msg=key)
    assert res.get_data_dtype() == np.uint8
    values = set(np.unique(np.asarray(res.dataobj)).tolist())
    assert values <= {0, 1, 2}
    unc = nib.load(str(out / "case_uncertainty.nii.gz"))
    assert unc.shape == (*ref.shape, 2)
    np.testing.assert_array_equal(unc.affine, ref.affine)
    assert np.asarray(unc.dataobj).max() > 0  # planes and members disagree somewhere
    assert (out / "case_overlay.png").exists() and (out / "case_uncertainty.png").exists()


def test_3d_support_pairs_and_labels_option(tmp_path, model_path):
    data = make_nnunet(tmp_path / "ds", n=2, two_labels=True)
    pairs = [f"{data}/imagesTr/la_{i:03d}_0000.nii.gz:{data}/labelsTr/la_{i:03d}.nii.gz"
             for i in range(2)]
    out = tmp_path / "out"
    argv = ["segment", "--query", f"{data}/imagesTr/la_001_0000.nii.gz", "--out", str(out),
            "--model", str(model_path), "--labels", "2", "--axis", "1"]
    for p in pairs:
        argv += ["--support", p]
    assert run_cli(argv) == 0
    values = set(np.unique(np.asarray(nib.load(str(out / "la_001.nii.gz")).dataobj)).tolist())
    assert values <= {0, 2}


def test_3d_tiles(tmp_path, model_path):
    data = make_nnunet(tmp_path / "ds", n=2)
    out = tmp_path / "out"
    argv = ["segment", "--support-dir", str(data), "--query",
            f"{data}/imagesTr/la_001_0000.nii.gz", "--out", str(out), "--model",
            str(model_path), "--axis", "2", "--tiles", "2"]
    assert run_cli(argv) == 0
    res = nib.load(str(out / "la_001.nii.gz"))
    assert res.shape == nib.load(str(data / "labelsTr" / "la_001.nii.gz")).shape


def test_colour_is_refused_for_volumes(tmp_path, model_path, capsys):
    data = make_nnunet(tmp_path / "ds", n=2)
    argv = ["segment", "--support-dir", str(data), "--query",
            f"{data}/imagesTr/la_001_0000.nii.gz", "--out", str(tmp_path / "out"), "--model",
            str(model_path), "--colour", "green"]
    assert run_cli(argv) == 2
    assert "--colour is for 2D colour images" in _err(capsys)


def test_nearest_runs_in_2d_and_is_refused_for_volumes(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup", n=4)
    out = tmp_path / "out2d"
    assert run_cli(["segment", "--support-dir", str(sup), "--query",
                    str(sup / "images" / "case1.png"), "--out", str(out), "--model",
                    str(model_path), "--nearest", "2"]) == 0
    assert np.asarray(Image.open(out / "case1.png")).shape == (44, 48)
    data = make_nnunet(tmp_path / "ds", n=2)
    argv = ["segment", "--support-dir", str(data), "--query",
            f"{data}/imagesTr/la_001_0000.nii.gz", "--out", str(tmp_path / "out3d"), "--model",
            str(model_path), "--nearest", "4"]
    assert run_cli(argv) == 2
    assert "--nearest is for 2D images" in _err(capsys)


# ----------------------------------------------------------------------------- bad input


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def test_query_and_support_dimensionality_differ(tmp_path, model_path, capsys):
    data = make_nnunet(tmp_path / "ds", n=1)
    sup2d = make_2d_folder(tmp_path / "sup2d")
    query = data / "imagesTr" / "la_000_0000.nii.gz"
    rc = run_cli(["segment", "--support-dir", str(sup2d), "--query", str(query),
                  "--out", str(tmp_path / "o"), "--model", str(model_path)])
    assert rc == 2
    err = _err(capsys)
    assert "la_000_0000.nii.gz" in err and "3D" in err and "2D" in err


def test_requested_label_missing_from_supports(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup", label_value=1)
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(sup / "images"),
                  "--out", str(tmp_path / "o"), "--model", str(model_path), "--labels", "1,3"])
    assert rc == 2
    err = _err(capsys)
    assert "label 3" in err and "case0_mask.png" in err


def test_empty_support_label_warns_with_file(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup", label_value=1)
    Image.fromarray(np.zeros((44, 48), np.uint8)).save(sup / "labels" / "case1_mask.png")
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(sup / "images/case0.png"),
                  "--out", str(tmp_path / "o"), "--model", str(model_path)])
    assert rc == 0
    assert "case1_mask.png" in capsys.readouterr().err


def test_mismatched_support_shapes(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(sup / "labels" / "case2_mask.png")
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(sup / "images/case0.png"),
                  "--out", str(tmp_path / "o"), "--model", str(model_path)])
    assert rc == 2
    err = _err(capsys)
    assert "case2_mask.png" in err and "shape" in err


def test_mismatched_support_affines_warn(tmp_path, model_path, capsys):
    data = make_nnunet(tmp_path / "ds", n=1)
    label = nib.load(str(data / "labelsTr" / "la_000.nii.gz"))
    write_nifti(data / "labelsTr" / "la_000.nii.gz", np.asarray(label.dataobj), _affine(42))
    rc = run_cli(["segment", "--support-dir", str(data), "--query",
                  str(data / "imagesTr" / "la_000_0000.nii.gz"), "--out", str(tmp_path / "o"),
                  "--model", str(model_path)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "la_000.nii.gz" in err and "affine" in err


def test_unreadable_files(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup")
    (sup / "images" / "case1.png").write_bytes(b"not a png at all")
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(sup / "images/case0.png"),
                  "--out", str(tmp_path / "o"), "--model", str(model_path)])
    assert rc == 2
    assert "case1.png" in _err(capsys)
    good = make_2d_folder(tmp_path / "good")
    bad_query = tmp_path / "broken.nii.gz"
    bad_query.write_bytes(b"\x1f\x8b garbage")
    rc = run_cli(["segment", "--support-dir", str(good), "--query", str(bad_query),
                  "--out", str(tmp_path / "o2"), "--model", str(model_path)])
    assert rc == 2
    assert "broken.nii.gz" in _err(capsys)


def test_bad_query_files_before_and_during_the_work(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup")
    queries = tmp_path / "q"
    queries.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        shutil.copy(sup / "images" / "case0.png", queries / name)
    (queries / "b.png").write_bytes(b"not a png at all")  # caught before any work
    argv = ["segment", "--support-dir", str(sup), "--query", str(queries), "--model",
            str(model_path)]
    assert run_cli([*argv, "--out", str(tmp_path / "o1")]) == 2
    assert "b.png: cannot read image" in _err(capsys)
    assert not (tmp_path / "o1").exists()
    data = (sup / "images" / "case0.png").read_bytes()
    (queries / "b.png").write_bytes(data[: len(data) // 2])  # header fine, pixels cut off
    assert run_cli([*argv, "--out", str(tmp_path / "o2")]) == 2
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "b.png" in captured.err
    assert "1 of 3 query files could not be read" in captured.err
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a.png", "c.png"]


def test_mixed_query_folder(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup")
    qdir = tmp_path / "q"
    qdir.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(qdir / "a.png")
    write_nifti(qdir / "b.nii.gz", np.zeros((8, 8, 8), np.int16), np.eye(4))
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(qdir),
                  "--out", str(tmp_path / "o"), "--model", str(model_path)])
    assert rc == 2
    err = _err(capsys)
    assert "mixed" in err and "a.png" in err and "b.nii.gz" in err


def test_support_source_required(tmp_path, capsys):
    rc = run_cli(["segment", "--query", str(tmp_path), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "--support" in _err(capsys)


def test_support_index(tmp_path, model_path, capsys):
    from PIL import Image

    from incontext.data import build_index
    from incontext.data.fixtures import write_png_pairs

    src = write_png_pairs(tmp_path / "pairs", n=10, shape=(40, 52))
    index = tmp_path / "pairs.h5"
    build_index("png-pairs", src, index, size=32, progress=False)
    from incontext.data import TaskIndex

    with TaskIndex.open(index) as idx:
        task = idx.tasks[0].name
    rc = run_cli(["segment", "--support-index", str(index), "--task", task,
                  "--query", str(src / "images"), "--out", str(tmp_path / "o"),
                  "--model", str(model_path)])
    assert rc == 0
    outputs = sorted((tmp_path / "o").glob("*.png"))
    assert len(outputs) == 10
    mask = np.asarray(Image.open(outputs[0]))
    assert mask.shape == (40, 52) and set(np.unique(mask)) <= {0, 1}
    assert run_cli(["segment", "--support-index", str(index), "--task", "no/such/task",
                    "--query", str(src / "images"), "--out", str(tmp_path / "o2"),
                    "--model", str(model_path)]) == 2
    assert f"tasks here: {task}" in _err(capsys)  # the error names the tasks there
    assert run_cli(["segment", "--support-index", str(index), "--query", str(src / "images"),
                    "--out", str(tmp_path / "o2"), "--model", str(model_path)]) == 2
    assert f"needs --task NAME; tasks in {index}: {task}" in _err(capsys)


def test_text_prompt_through_segment(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from incontext.models import TextDriven, TextDrivenConfig

    torch.manual_seed(0)
    weights = save(TextDriven(TextDrivenConfig(widths=(8, 16), resolution=32, text_dim=64,
                                               text_encoder="hashing",
                                               text_encoder_options={"dim": 64})),
                   tmp_path / "td.safetensors")
    (tmp_path / "q").mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((30, 34)) * 255).astype(np.uint8)
                        ).save(tmp_path / "q" / f"img{i}.png")
    rc = run_cli(["segment", "--text", "heart", "--text", "left lung", "--query",
                  str(tmp_path / "q"), "--out", str(tmp_path / "o"), "--model", str(weights)])
    assert rc == 0
    mask = np.asarray(Image.open(tmp_path / "o" / "img1.png"))
    assert mask.shape == (30, 34) and mask.max() <= 2
    # without --model, --text uses the registry's default TextDriven model
    from incontext.models import registry

    monkeypatch.setattr(registry, "DEFAULT_TEXT_MODEL", str(weights))
    assert run_cli(["segment", "--text", "heart", "--query", str(tmp_path / "q"),
                    "--out", str(tmp_path / "o3")]) == 0
    assert (tmp_path / "o3" / "img0.png").exists()
    # text + examples (hybrid prompt): the examples change the prediction
    lab = np.zeros((30, 34), np.uint8)
    lab[5:20, 8:25] = 2  # value 2 marks the 2nd class ("left lung")
    Image.fromarray(lab).save(tmp_path / "lab0.png")
    rc = run_cli(["segment", "--text", "heart", "--text", "left lung", "--support",
                  f"{tmp_path / 'q' / 'img0.png'}:{tmp_path / 'lab0.png'}", "--query",
                  str(tmp_path / "q"), "--out", str(tmp_path / "o5"), "--model", str(weights),
                  "--save-probabilities"])
    assert rc == 0
    rc = run_cli(["segment", "--text", "heart", "--text", "left lung", "--query",
                  str(tmp_path / "q"), "--out", str(tmp_path / "o6"), "--model", str(weights),
                  "--save-probabilities"])
    assert rc == 0
    assert not np.allclose(np.load(tmp_path / "o5" / "img1.npy"),
                           np.load(tmp_path / "o6" / "img1.npy"))
    # a UniverSeg model cannot take --text: a clear error, not a traceback
    plain = save(UniverSeg(), tmp_path / "u.safetensors")
    assert run_cli(["segment", "--text", "heart", "--query", str(tmp_path / "q"),
                    "--out", str(tmp_path / "o4"), "--model", str(plain)]) == 2
    assert "needs a TextDriven model" in _err(capsys)
    # --hand-over trains on example supports: refused with --text, nothing written
    assert run_cli(["segment", "--text", "heart", "--query", str(tmp_path / "q"),
                    "--out", str(tmp_path / "o7"), "--model", str(weights),
                    "--hand-over"]) == 2
    assert "--hand-over is for example-based" in _err(capsys)
    assert not (tmp_path / "o7").exists()



def test_tiles_option(tmp_path, model_path, capsys):
    sup = make_2d_folder(tmp_path / "sup", colour=True)
    query = next(p for p in sorted((sup / "images").iterdir()))
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(query), "--out",
                  str(tmp_path / "out"), "--model", str(model_path), "--tiles", "2"])
    assert rc == 0, capsys.readouterr().err
    mask = np.asarray(Image.open(tmp_path / "out" / f"{query.stem}.png"))
    assert mask.shape == np.asarray(Image.open(query)).shape[:2]
    rc = run_cli(["segment", "--support-dir", str(sup), "--query", str(query), "--out",
                  str(tmp_path / "o3"), "--model", str(model_path), "--tiles", "auto"])
    assert rc == 0, capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run_cli(["segment", "--support-dir", str(sup), "--query", str(query), "--out",
                 str(tmp_path / "o2"), "--model", str(model_path), "--tiles", "0"])
    assert exc.value.code == 2 and "--tiles" in _err(capsys)


def test_threshold_defaults_to_auto_in_2d_and_is_passed_through(tmp_path, model_path,
                                                                monkeypatch):
    import incontext.inference as inference

    seen = []
    real = inference.segment

    def spy(*args, **kwargs):
        seen.append(kwargs["threshold"])
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "segment", spy)
    sup = make_2d_folder(tmp_path / "sup", n=4)
    query = sup / "images" / "case0.png"
    for extra, expected in (([], "auto"), (["--threshold", "0.4"], 0.4),
                            (["--threshold", "auto"], "auto")):
        out = tmp_path / f"out{len(seen)}"
        assert run_cli(["segment", "--support-dir", str(sup), "--query", str(query),
                        "--out", str(out), "--model", str(model_path), *extra]) == 0
        assert seen[-1] == expected
        assert (out / "case0.png").exists()


def test_threshold_auto_for_volumes_is_chosen_on_whole_support_volumes(tmp_path, model_path,
                                                                        capsys, monkeypatch):
    import json

    import incontext.volume_check as volume_check
    import incontext.volumes as volumes

    make_nnunet(tmp_path / "Dataset001_Test", n=3)
    cuts = []
    real = volumes.segment_volume

    def spy(*args, **kwargs):
        cuts.append(kwargs.get("threshold"))
        return real(*args, **kwargs)

    monkeypatch.setattr(volumes, "segment_volume", spy)
    monkeypatch.setattr(volume_check, "segment_volume", spy)
    code = run_cli(["segment", "--support-dir", str(tmp_path / "Dataset001_Test"), "--query",
                    str(tmp_path / "Dataset001_Test" / "imagesTr" / "la_000_0000.nii.gz"),
                    "--out", str(tmp_path / "o"), "--model", str(model_path),
                    "--support-size", "4", "--threshold", "auto",
                    "--report", str(tmp_path / "run.json")])
    assert code == 0, capsys.readouterr().err
    (choice,) = json.loads((tmp_path / "run.json").read_text())["choices"]
    assert choice["support_checks"] == 3 and choice["cut"] > 0
    # 3 checks at the raw probabilities, then the query at the chosen cut (one per label)
    assert cuts[-1] == [choice["cut"]] and len(cuts) == 4
    assert "support-set check" in capsys.readouterr().out


def test_colour_option_passes_rgb_and_the_choice(tmp_path, model_path, monkeypatch, capsys):
    import incontext.inference as inference

    seen = []
    real = inference.segment

    def spy(model, query, support_images, *args, **kwargs):
        result = real(model, query, support_images, *args, **kwargs)
        seen.append((np.asarray(query).ndim, [np.asarray(s).ndim for s in support_images],
                     kwargs["colour"], result.colours))
        return result

    monkeypatch.setattr(inference, "segment", spy)
    sup = make_2d_folder(tmp_path / "sup", n=4, colour=True)
    query = sup / "images" / "case0.png"
    base = ["segment", "--support-dir", str(sup), "--query", str(query), "--model",
            str(model_path)]
    assert run_cli(base + ["--out", str(tmp_path / "a")]) == 0  # auto: the 2D default
    assert run_cli(base + ["--out", str(tmp_path / "b"), "--colour", "luma"]) == 0
    (q_auto, s_auto, c_auto, chosen), (q_plain, s_plain, c_plain, plain) = seen
    assert (q_auto, set(s_auto), c_auto) == (3, {3}, "auto")  # R, G, B reach segment
    assert chosen[0] in ("luma", "red", "green", "blue", "fisher")
    assert (q_plain, set(s_plain), c_plain, plain) == (2, {2}, "luma", ["luma"])
    assert (tmp_path / "a" / "case0.png").exists()
    with pytest.raises(SystemExit) as exc:
        run_cli(base + ["--out", str(tmp_path / "c"), "--colour", "cyan"])
    assert exc.value.code == 2 and "--colour" in _err(capsys)


def test_report_lists_choices_with_their_support_dice_and_the_files(tmp_path, model_path,
                                                                    capsys):
    import json

    sup = make_2d_folder(tmp_path / "sup", n=5)
    out = tmp_path / "out"
    report = tmp_path / "logs" / "run.json"
    argv = ["segment", "--support-dir", str(sup), "--query", str(sup / "images"), "--out",
            str(out), "--model", str(model_path), "--report", str(report)]
    assert run_cli(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["model"] == str(model_path) and data["settings"]["support_dir"] == str(sup)
    assert [f["name"] for f in data["files"]] == [f"case{i}.png" for i in range(5)]
    (choice,) = data["choices"]
    assert choice["label"] == 255 and choice["support_checks"] == 5
    assert 0.0 <= choice["support_dice"] <= 1.0
    assert f"{choice['support_dice']:.2f}" in printed and "Dice on them" in printed
    # the note on a weak label appears exactly when the supports say so
    assert ("note: label 255" in printed) == (choice["support_dice"] < 0.5)
    # an existing report is kept unless --overwrite, and nothing is written before that check
    report.write_text("keep me")
    assert run_cli([*argv, "--out", str(tmp_path / "out2")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert report.read_text() == "keep me" and not (tmp_path / "out2").exists()
    # a report path that is also an output is refused
    assert run_cli([*argv[:-1], str(out / "case0.png"), "--overwrite"]) == 2
    assert "--report" in capsys.readouterr().err


def test_check_supports_for_volumes_reports_leave_one_volume_out_dice(tmp_path, model_path,
                                                                      capsys):
    import json

    make_nnunet(tmp_path / "Dataset001_Test", n=3)
    qdir = tmp_path / "queries"
    qdir.mkdir()
    q_image, _ = make_volume((14, 20, 10), 9)
    write_nifti(qdir / "case_0000.nii.gz", q_image, _affine(9))
    argv = ["segment", "--support-dir", str(tmp_path / "Dataset001_Test"), "--query",
            str(qdir), "--out", str(tmp_path / "out"), "--model", str(model_path),
            "--support-size", "4", "--report", str(tmp_path / "run.json")]
    assert run_cli(argv) == 0, capsys.readouterr().err
    assert "support-set check" not in capsys.readouterr().out  # volumes: only on request
    assert json.loads((tmp_path / "run.json").read_text())["choices"] == []
    assert run_cli([*argv, "--check-supports", "--overwrite"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    (choice,) = json.loads((tmp_path / "run.json").read_text())["choices"]
    assert choice["support_checks"] == 3 and 0.0 <= choice["support_dice"] <= 1.0
    assert "support-set check" in printed and f"{choice['support_dice']:.2f}" in printed


def test_hand_over_compares_on_the_supports_and_reports_it(tmp_path, model_path, capsys):
    import json

    from incontext.hand_over import DEFAULT_MARGIN, prefers_unet

    sup = make_2d_folder(tmp_path / "sup", n=5)
    out = tmp_path / "out"
    report = tmp_path / "run.json"
    argv = ["segment", "--support-dir", str(sup), "--query", str(sup / "images"), "--out",
            str(out), "--model", str(model_path), "--report", str(report), "--hand-over"]
    assert run_cli(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    (choice,) = json.loads(report.read_text())["choices"]
    compared = choice["hand_over"]
    assert compared["supports"] == 5
    assert 0.0 <= compared["model_dice"] <= 1.0 and 0.0 <= compared["unet_dice"] <= 1.0
    wins = prefers_unet(compared["model_dice"], compared["unet_dice"], DEFAULT_MARGIN)
    assert choice["method"] == compared["method"] == ("unet" if wins else "model")
    assert "segmented by" in printed and f"U-Net {compared['unet_dice']:.2f}" in printed
    assert compared["unet_size"] == 32 and "U-Net at 32 px" in printed  # 48-px images
    assert np.asarray(Image.open(out / "case2.png")).shape == (48, 48)
    data = make_nnunet(tmp_path / "ds", n=2)
    argv = ["segment", "--support-dir", str(data), "--query",
            f"{data}/imagesTr/la_001_0000.nii.gz", "--out", str(tmp_path / "out3d"), "--model",
            str(model_path), "--hand-over"]
    assert run_cli(argv) == 2
    assert "--hand-over is for 2D images" in _err(capsys)


def test_refine_on_reports_the_pixel_head_and_is_refused_for_volumes(tmp_path, model_path,
                                                                   capsys):
    import json

    sup = make_2d_folder(tmp_path / "sup", n=5)
    report = tmp_path / "run.json"
    argv = ["segment", "--support-dir", str(sup), "--query", str(sup / "images"), "--out",
            str(tmp_path / "out"), "--model", str(model_path), "--report", str(report),
            "--refine", "on"]
    assert run_cli(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    (choice,) = json.loads(report.read_text())["choices"]
    assert choice["refined"] is True and choice["cut"] == 0.5
    assert "pixel head" in printed and "used" in printed
    assert np.asarray(Image.open(tmp_path / "out" / "case2.png")).shape == (48, 48)
    argv[argv.index("on")] = "off"
    assert run_cli([*argv, "--overwrite"]) == 0, capsys.readouterr().err
    assert json.loads(report.read_text())["choices"][0]["refined"] is False
    assert "pixel head" not in capsys.readouterr().out
    data = make_nnunet(tmp_path / "ds", n=2)
    argv = ["segment", "--support-dir", str(data), "--query",
            f"{data}/imagesTr/la_001_0000.nii.gz", "--out", str(tmp_path / "out3d"), "--model",
            str(model_path), "--refine", "auto"]
    assert run_cli(argv) == 2
    assert "--refine is for 2D images" in _err(capsys)
