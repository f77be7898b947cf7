"""Index builder: content, 3D slicing, splits, determinism, resume, atomicity, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from data_recipes import get_recipe
from data_recipes.base import SubjectRef
from incontext.data import BuildError, build_index
from incontext.data.builder import assign_splits, stable_hash
from incontext.data.fixtures import write_nifti_pairs, write_nnunet, write_png_pairs
from incontext.data.index_format import validate
from incontext.preprocessing import pad_to_square, resize_mask_nearest

REPO = Path(__file__).resolve().parents[1]


def h5_content(path: Path) -> dict:
    """Every array and attribute of an HDF5 file, for equality checks."""
    out: dict = {}

    def visit(name, obj):
        out[f"{name}@attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                for k, v in obj.attrs.items()}
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        out["/@attrs"] = dict(f.attrs)
        f.visititems(visit)
    return out


def assert_same_content(a: Path, b: Path) -> None:
    ca, cb = h5_content(a), h5_content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        if isinstance(ca[key], np.ndarray):
            np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)
        else:
            assert ca[key] == cb[key], key


def test_png_pairs_index_content(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=10)
    out = tmp_path / "toy.h5"
    report = build_index("png-pairs", src, out, size=32, progress=False,
                         recipe_options={"dataset": "toy", "spacing": 0.5})
    assert (report.built, report.slices, report.skipped) == (10, 10, [])
    assert not (tmp_path / "toy.h5.partial").exists()
    recipe = get_recipe("png-pairs")
    with h5py.File(out, "r") as f:
        assert f.attrs["schema_version"] == 1
        g = f["datasets/toy"]
        assert g["images"].shape == (10, 32, 32) and g["images"].dtype == np.uint8
        assert g["images"].chunks == (1, 32, 32) and g["images"].compression == "gzip"
        assert g["masks"].shape == (10, 1, 32, 32)
        assert json.loads(g.attrs["label_names"]) == ["foreground"]
        assert g.attrs["modality"] == "other"
        subjects = [s.decode() for s in g["subject"][()]]
        assert subjects == [f"case_{i:03d}" for i in range(10)]
        assert sorted(np.bincount(g["split"][()], minlength=3).tolist()) == [2, 2, 6]
        assert (g["plane"][()] == 0).all()
        # masks are the recipe's masks, square-padded and resized by nearest neighbour
        ref = recipe.subjects(src)[3]
        expected = resize_mask_nearest(pad_to_square(recipe.load(ref).masks["foreground"]), 32)
        np.testing.assert_array_equal(g["masks"][3, 0], expected)
        assert g["foreground"][3, 0] == expected.sum()
        # spacing at the stored resolution: 0.5 mm * 52 px side / 32 px
        np.testing.assert_allclose(g["spacing"][0], [0.5 * 52 / 32] * 2, rtol=1e-6)
        np.testing.assert_array_equal(g["orig_shape"][0], [40, 52, 0])
        assert g["log"].shape == (0,)
    assert validate(out) == []


def test_3d_midslice_and_maxslice(tmp_path):
    ds = write_nnunet(tmp_path / "raw", n=3, shape=(14, 12, 10))
    out = tmp_path / "toy.h5"
    build_index("nnunet", ds, out, size=16, progress=False)
    recipe = get_recipe("nnunet")
    with h5py.File(out, "r") as f:
        g = f["datasets/toy"]
        subjects = np.array([s.decode() for s in g["subject"][()]])
        plane, index, selected = g["plane"][()], g["slice_index"][()], g["selected"][()]
        spacing = g["spacing"][()]
        for ref in recipe.subjects(ds):
            subject = recipe.load(ref)
            rows = np.flatnonzero(subjects == ref.subject_id)
            for axis in range(3):
                on_axis = rows[plane[rows] == axis + 1]
                mid = on_axis[selected[on_axis, 0] == 1]
                assert index[mid].tolist() == [subject.image.shape[axis] // 2]
                for li, name in enumerate(["liver", "tumour"]):
                    other = tuple(a for a in range(3) if a != axis)
                    counts = subject.masks[name].sum(axis=other)
                    picked = on_axis[selected[on_axis, 1 + li] == 1]
                    assert index[picked].tolist() == ([int(np.argmax(counts))] if counts.any()
                                                      else [])
                in_plane = np.delete(np.array([1.5, 1.0, 2.0]), axis)
                side = max(np.delete(np.array(subject.image.shape), axis))
                np.testing.assert_allclose(spacing[on_axis[0]], in_plane * side / 16, rtol=1e-5)


def test_3d_all_slices_with_foreground(tmp_path):
    ds = write_nnunet(tmp_path / "raw", n=2, shape=(10, 9, 8))
    out = tmp_path / "all.h5"
    build_index("nnunet", ds, out, size=16, slices="all", progress=False)
    recipe = get_recipe("nnunet")
    expected = 0
    for ref in recipe.subjects(ds):
        subject = recipe.load(ref)
        union = subject.masks["liver"] | subject.masks["tumour"]
        for axis in range(3):
            other = tuple(a for a in range(3) if a != axis)
            expected += int((union.sum(axis=other) > 0).sum())
    with h5py.File(out, "r") as f:
        assert f["datasets/toy/images"].shape[0] == expected
        # every stored slice is picked only for labels whose foreground it holds (upsampling
        # by nearest neighbour keeps every foreground pixel)
        sel, fg = f["datasets/toy/selected"][()], f["datasets/toy/foreground"][()]
        assert (sel[:, 0] == 0).all()
        np.testing.assert_array_equal(sel[:, 1:] == 1, fg > 0)


def test_splits_are_stable_and_by_subject():
    assert stable_hash("abc") == stable_hash("abc") != stable_hash("abd")
    refs = [SubjectRef(f"s{i}", {}) for i in range(50)]
    codes = assign_splits(refs, "ds")
    assert np.bincount(codes).tolist() == [30, 10, 10]
    shuffled = list(reversed(refs))
    by_id = dict(zip([r.subject_id for r in shuffled], assign_splits(shuffled, "ds"), strict=True))
    assert [by_id[r.subject_id] for r in refs] == codes
    # a split group (e.g. one examination) never straddles splits; forced splits are kept
    grouped = [SubjectRef(f"s{i}", {}, extra={"split_group": f"g{i // 5}"}) for i in range(40)]
    grouped.append(SubjectRef("forced", {}, extra={"split": "test"}))
    codes = assign_splits(grouped, "ds")
    for g in range(8):
        assert len(set(codes[g * 5:(g + 1) * 5])) == 1
    assert codes[-1] == 2


def test_build_is_deterministic_across_runs_and_workers(tmp_path):
    ds = write_nnunet(tmp_path / "raw", n=5, shape=(10, 9, 8))
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    build_index("nnunet", ds, a, size=16, workers=1, progress=False)
    build_index("nnunet", ds, b, size=16, workers=2, progress=False)
    assert_same_content(a, b)


def test_resume_after_interruption_gives_identical_index(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=8)
    reference = tmp_path / "ref.h5"
    build_index("png-pairs", src, reference, size=16, progress=False)
    out = tmp_path / "out.h5"
    done = []

    def interrupt_after_three(result):
        done.append(result)
        if len(done) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index("png-pairs", src, out, size=16, progress=False,
                    on_subject_done=interrupt_after_three)
    assert not out.exists()
    assert len(list((tmp_path / "out.h5.partial").glob("*.npz"))) == 3
    report = build_index("png-pairs", src, out, size=16, progress=False)
    assert report.resumed == 3
    assert_same_content(reference, out)
    assert not (tmp_path / "out.h5.partial").exists()


def test_damaged_work_file_is_recomputed(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=5)
    out = tmp_path / "out.h5"
    done = []

    def interrupt_after_two(result):
        done.append(result)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index("png-pairs", src, out, size=16, progress=False,
                    on_subject_done=interrupt_after_two)
    first = sorted((tmp_path / "out.h5.partial").glob("*.npz"))[0]
    first.write_bytes(first.read_bytes()[:50])  # e.g. a power cut mid-write
    report = build_index("png-pairs", src, out, size=16, progress=False)
    assert report.resumed == 1
    reference = tmp_path / "ref.h5"
    build_index("png-pairs", src, reference, size=16, progress=False)
    assert_same_content(reference, out)


def test_changed_parameters_restart_instead_of_resuming(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=4)
    out = tmp_path / "out.h5"

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index("png-pairs", src, out, size=16, progress=False, on_subject_done=stop)
    report = build_index("png-pairs", src, out, size=24, progress=False)
    assert report.resumed == 0
    with h5py.File(out, "r") as f:
        assert f["datasets/src/images"].shape == (4, 24, 24)


SLOW_BUILD = """
import sys, time
import incontext.data.builder as b
real = b.process_subject
def slow(*args, **kwargs):
    time.sleep(0.15)
    return real(*args, **kwargs)
b.process_subject = slow
b.build_index("png-pairs", sys.argv[1], sys.argv[2], size=16, progress=False)
"""


def test_sigkill_midway_then_resume(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=12)
    out = tmp_path / "out.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(src), str(out)], cwd=REPO,
                            env=env)
    partial = tmp_path / "out.h5.partial"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(partial.glob("*.npz"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(partial.glob("*.npz")))
    assert 3 <= finished < 12
    assert not out.exists()
    report = build_index("png-pairs", src, out, size=16, progress=False)
    assert report.resumed >= 3
    reference = tmp_path / "ref.h5"
    build_index("png-pairs", src, reference, size=16, progress=False)
    assert_same_content(reference, out)


def test_crash_while_writing_leaves_no_output(tmp_path, monkeypatch):
    import incontext.data.builder as builder

    src = write_png_pairs(tmp_path / "src", n=3)
    out = tmp_path / "out.h5"

    def boom(f):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(builder, "write_root_attrs", boom)
    with pytest.raises(OSError, match="disk full"):
        build_index("png-pairs", src, out, size=16, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5.partial", "src"]


def _make_bad_pngs(src: Path) -> dict[str, str]:
    """Damage four of the cases; returns case -> expected problem text."""
    (src / "masks" / "case_001.png").unlink()
    (src / "images" / "case_002.png").write_bytes(b"definitely not a png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "masks" / "case_003.png")
    odd = np.zeros((40, 52), np.uint8)
    odd[5:9, 5:9] = 7
    Image.fromarray(odd).save(src / "masks" / "case_004.png")
    return {"case_001": "file not found", "case_002": "cannot read image",
            "case_003": "shape", "case_004": "unexpected mask values"}


def test_bad_inputs_are_skipped_named_and_logged(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=8)
    expected = _make_bad_pngs(src)
    out = tmp_path / "out.h5"
    report = build_index("png-pairs", src, out, size=16, progress=False, workers=2)
    assert report.built == 4
    skipped = {s["subject"]: s for s in report.skipped}
    assert set(skipped) == set(expected)
    for case, problem in expected.items():
        assert problem in skipped[case]["problem"]
        assert f"{case}.png" in skipped[case]["problem"]  # names the file
    with h5py.File(out, "r") as f:
        log = [json.loads(s) for s in f["datasets/src/log"][()]]
        stored = {s.decode() for s in f["datasets/src/subject"][()]}
    assert {entry["subject"] for entry in log} == set(expected)
    assert stored.isdisjoint(expected)
    assert validate(out) == []


def test_nan_image_is_reported(tmp_path):
    import nibabel as nib

    src = write_nifti_pairs(tmp_path / "src", n=4)
    path = src / "images" / "s01.nii.gz"
    data = np.asarray(nib.load(str(path)).dataobj).astype(np.float32)
    data[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    report = build_index("nifti-pairs", src, tmp_path / "o.h5", size=16, progress=False,
                         recipe_options={"labels": {"a": 1, "b": 2}})
    assert [s["subject"] for s in report.skipped] == ["s01"]
    assert "s01.nii.gz" in report.skipped[0]["problem"]
    assert "NaN" in report.skipped[0]["problem"]


def test_stop_on_error_names_the_file_and_writes_nothing(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=6)
    _make_bad_pngs(src)
    out = tmp_path / "out.h5"
    with pytest.raises(BuildError, match=r"case_001\.png: file not found"):
        build_index("png-pairs", src, out, size=16, progress=False, on_error="stop")
    assert not out.exists()


def test_empty_and_all_bad_datasets_fail_without_output(tmp_path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(BuildError, match="no subjects"):
        build_index("png-pairs", empty, tmp_path / "e.h5", progress=False)
    src = write_png_pairs(tmp_path / "src", n=2)
    for p in (src / "masks").iterdir():
        p.unlink()
    with pytest.raises(BuildError, match="no usable subjects"):
        build_index("png-pairs", src, tmp_path / "b.h5", progress=False)
    assert not (tmp_path / "e.h5").exists() and not (tmp_path / "b.h5").exists()


def test_bad_build_options(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=2)
    with pytest.raises(BuildError, match="slices"):
        build_index("png-pairs", src, tmp_path / "x.h5", slices="middle", progress=False)
    with pytest.raises(BuildError, match="unknown recipe"):
        build_index("nope", src, tmp_path / "x.h5", progress=False)
    with pytest.raises(BuildError, match="source not found"):
        build_index("png-pairs", tmp_path / "missing", tmp_path / "x.h5", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="file: is a file, not a folder"):
        build_index("png-pairs", src, tmp_path / "file" / "x.h5", progress=False)
    # a missing output folder is created, like segment's --out
    build_index("png-pairs", src, tmp_path / "new" / "sub" / "x.h5", size=16, progress=False)
    assert (tmp_path / "new" / "sub" / "x.h5").is_file()


def test_float16_images(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=3)
    out = tmp_path / "f.h5"
    build_index("png-pairs", src, out, size=16, dtype="float16", progress=False)
    with h5py.File(out, "r") as f:
        images = f["datasets/src/images"][()]
    assert images.dtype == np.float16 and 0 <= images.min() and images.max() <= 1
    assert validate(out) == []
