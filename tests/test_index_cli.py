"""``incontext index`` CLI: build, info, validate, merge (called through its own parser)."""

from __future__ import annotations

import argparse
import json

import h5py
import pytest

from incontext.cli import index as index_cli
from incontext.data.fixtures import write_nnunet, write_png_pairs


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="incontext")
    index_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["index", *argv])
    return args.func(args)


@pytest.fixture()
def built(tmp_path):
    src = write_png_pairs(tmp_path / "src", n=6)
    out = tmp_path / "a.h5"
    assert run("build", "png-pairs", "--source", str(src), "--out", str(out), "--size", "16",
               "--no-progress", "--option", "dataset=alpha", "--option", "spacing=0.25") == 0
    return out


def test_build_and_info_json(built, capsys):
    capsys.readouterr()
    assert run("info", str(built), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in summary["datasets"]] == ["alpha"]
    assert summary["datasets"][0]["slices"] == {"train": 4, "val": 1, "test": 1}
    assert [t["name"] for t in summary["tasks"]] == ["alpha/2d/foreground"]


def test_info_table(built, capsys):
    assert run("info", str(built)) == 0
    out = capsys.readouterr().out
    assert "alpha/2d/foreground" in out and "foreground" in out


def test_build_options_file_and_error_exit(tmp_path, capsys):
    ds = write_nnunet(tmp_path / "raw", n=3)
    opts = tmp_path / "opts.toml"
    opts.write_text('dataset = "organs"\nmodality = "other"\n')
    out = tmp_path / "o.h5"
    assert run("build", "nnunet", "--source", str(ds), "--out", str(out), "--size", "16",
               "--options", str(opts), "--no-progress", "--workers", "2") == 0
    with h5py.File(out, "r") as f:
        assert f["datasets/organs"].attrs["modality"] == "other"
    capsys.readouterr()
    assert run("build", "nnunet", "--source", str(tmp_path / "nowhere"), "--out",
               str(tmp_path / "x.h5"), "--no-progress") == 1
    assert "nowhere" in capsys.readouterr().err


def test_validate_ok_and_corruptions(built, tmp_path, capsys):
    assert run("validate", str(built)) == 0
    with h5py.File(built, "r+") as f:
        f["datasets/alpha/masks"][0, 0, 0, 0] = 3
    assert run("validate", str(built)) == 1
    assert "masks hold values other than 0/1" in capsys.readouterr().err
    with h5py.File(built, "r+") as f:
        del f["datasets/alpha"].attrs["modality"]
        f.attrs["schema_version"] = 99
    assert run("validate", str(built)) == 1
    assert "schema version 99" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    assert run("validate", str(junk)) == 1


def test_validate_detects_split_leak(built, capsys):
    with h5py.File(built, "r+") as f:
        g = f["datasets/alpha"]
        subjects = g["subject"][()]
        subjects[1] = subjects[0]
        g["subject"][...] = subjects
        split = g["split"][()]
        split[0], split[1] = 0, 2
        g["split"][...] = split
    assert run("validate", str(built)) == 1
    assert "several splits" in capsys.readouterr().err


def test_merge_and_manifest(built, tmp_path, capsys):
    src = write_png_pairs(tmp_path / "src2", n=5, seed=3)
    other = tmp_path / "b.h5"
    assert run("build", "png-pairs", "--source", str(src), "--out", str(other), "--size", "16",
               "--no-progress", "--option", "dataset=beta") == 0
    merged = tmp_path / "m.h5"
    assert run("merge", str(merged), str(built), str(other)) == 0
    manifest = tmp_path / "m.json"
    assert run("merge", "--manifest", str(manifest), str(built), str(other)) == 0
    for target in (merged, manifest):
        capsys.readouterr()
        assert run("info", str(target), "--json") == 0
        names = [t["name"] for t in json.loads(capsys.readouterr().out)["tasks"]]
        assert names == ["alpha/2d/foreground", "beta/2d/foreground"]
        assert run("validate", str(target)) == 0
    with pytest.raises(ValueError, match="already taken"):
        run("merge", str(tmp_path / "dup.h5"), str(built), str(built))
    assert not (tmp_path / "dup.h5").exists()


def test_recipes_listing(capsys):
    assert run("recipes") == 0
    assert "png-pairs" in capsys.readouterr().out.split()


def test_subset_keeps_first_rows_of_chosen_splits(tmp_path, capsys):
    src = write_png_pairs(tmp_path / "src3", n=14, seed=5)
    full = tmp_path / "full.h5"
    assert run("build", "png-pairs", "--source", str(src), "--out", str(full), "--size", "16",
               "--no-progress", "--option", "dataset=gamma") == 0
    small = tmp_path / "small.h5"
    assert run("subset", str(full), str(small), "--splits", "train,val",
               "--max-slices", "train=3", "--drop-colour") == 0
    assert "gamma 3/" in capsys.readouterr().out
    assert run("validate", str(small)) == 0
    with h5py.File(full, "r") as f, h5py.File(small, "r") as g:
        a, b = f["datasets/gamma"], g["datasets/gamma"]
        assert "colour" in a and "colour" not in b
        split = a["split"][()]
        rows = sorted([*list((split == 0).nonzero()[0][:3]), *list((split == 1).nonzero()[0])])
        assert list(b["split"][()]) == [split[r] for r in rows]
        assert (b["images"][()] == a["images"][()][rows]).all()
        assert (b["masks"][()] == a["masks"][()][rows]).all()
        assert b.attrs["n_subjects"] == len(rows) < a.attrs["n_subjects"]
        assert b["images"].chunks[0] == 1 and b["images"].compression == a["images"].compression
    kept = tmp_path / "kept.h5"
    assert run("subset", str(full), str(kept)) == 0  # defaults keep everything, colour too
    with h5py.File(full, "r") as f, h5py.File(kept, "r") as g:
        assert (g["datasets/gamma/colour"][()] == f["datasets/gamma/colour"][()]).all()


@pytest.mark.parametrize("options, message", [
    (["--splits", "train,tset"], "unknown split"),
    (["--splits", "train", "--max-slices", "val=2"], "not kept"),
    (["--max-slices", "val"], "SPLIT=K"),
    (["--splits", "test", "--max-slices", "test=0"], "no slices"),
])
def test_subset_bad_options_name_the_problem(built, tmp_path, capsys, options, message):
    out = tmp_path / "bad.h5"
    assert run("subset", str(built), str(out), *options) != 0
    err = capsys.readouterr().err
    assert message in err
    assert not out.exists() and not list(tmp_path.glob(".bad.h5.*"))


def test_subset_refuses_missing_input_and_overwriting_it(built, tmp_path, capsys):
    assert run("subset", str(tmp_path / "none.h5"), str(tmp_path / "o.h5")) == 1
    assert "none.h5" in capsys.readouterr().err
    before = built.read_bytes()
    assert run("subset", str(built), str(built), "--splits", "train") == 1
    assert "also the input" in capsys.readouterr().err
    assert built.read_bytes() == before
