"""Realistic user mistakes with ``incontext index``, ``benchmark`` and ``train``: each gives
one clear error naming the file and the problem (no traceback), a non-zero exit, and
leaves nothing half-written or replaced."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from incontext.cli import main
from incontext.data.fixtures import write_png_pairs

BENCH = ["--model", "none", "--baselines", "threshold", "--support-sizes", "1", "--ensembles",
         "1", "--repeats", "1", "--no-plots", "--no-progress"]

TINY_CONFIG = """name = "tiny"
steps = 2
[model]
encoder_widths = [8, 8]
resolution = 32
{init}
[data]
batch_size = 2
support_size = [2, 4]
synthetic_ratio = 1.0
synthetic_tasks = 6
synthetic_val_tasks = 2
synthetic_subjects = 6
val_support_size = 3
val_queries = 2
[run]
progress = false
device = "cpu"
"""


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """A small, valid one-dataset index (6 PNG pairs, 16 px)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    src = write_png_pairs(root / "src", n=6)
    out = root / "good.h5"
    assert main(["index", "build", "png-pairs", "--source", str(src), "--out", str(out),
                 "--size", "16", "--no-progress", "--option", "dataset=alpha"]) == 0
    return out


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI: it must exit non-zero (no exception) with an error naming ``needles``."""
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def copy(index: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copy(index, tmp_path / name))


def damaged_chunk(index: Path, tmp_path: Path) -> Path:
    """A copy whose first compressed image chunk is overwritten (e.g. a bad disk sector)."""
    path = copy(index, tmp_path, "damaged.h5")
    with h5py.File(path, "r") as f:
        info = f["datasets/alpha/images"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset:info.byte_offset + info.size] = b"\xab" * info.size
    path.write_bytes(bytes(data))
    return path


def bad_plane_codes(index: Path, tmp_path: Path) -> Path:
    path = copy(index, tmp_path, "planes.h5")
    with h5py.File(path, "r+") as f:
        f["datasets/alpha/plane"][0] = 9
    return path


def bad_json_attr(index: Path, tmp_path: Path) -> Path:
    path = copy(index, tmp_path, "attrs.h5")
    with h5py.File(path, "r+") as f:
        f["datasets/alpha"].attrs["label_names"] = "not json"
    return path


# ----------------------------------------------------------------------------- damaged indexes

@pytest.mark.parametrize("command", [["index", "info"], ["benchmark", *BENCH, "--index"],
                                     ["index", "subset"]])
def test_out_of_range_plane_codes_name_the_file(index, tmp_path, capsys, command):
    path = bad_plane_codes(index, tmp_path)
    extra = [str(tmp_path / "sub.h5")] if command[-1] == "subset" else []
    if command[0] == "benchmark":
        extra = ["--out", str(tmp_path / "bench")]
    fails(capsys, [*command, str(path), *extra], str(path), "plane codes")
    assert not (tmp_path / "sub.h5").exists()


@pytest.mark.parametrize("command", [["index", "info"], ["benchmark", *BENCH, "--index"]])
def test_malformed_json_attribute_names_the_file(index, tmp_path, capsys, command):
    path = bad_json_attr(index, tmp_path)
    extra = ["--out", str(tmp_path / "bench")] if command[0] == "benchmark" else []
    fails(capsys, [*command, str(path), *extra], str(path), "label_names", "not valid JSON")


def test_validate_reads_the_images_and_reports_a_damaged_chunk(index, tmp_path, capsys):
    path = damaged_chunk(index, tmp_path)
    fails(capsys, ["index", "validate", str(path)], str(path), "damaged")


def test_subset_of_a_damaged_index_is_an_error_and_writes_nothing(index, tmp_path, capsys):
    path = damaged_chunk(index, tmp_path)
    out = tmp_path / "sub.h5"
    fails(capsys, ["index", "subset", str(path), str(out)], str(path), "cannot be read")
    assert list(tmp_path.iterdir()) == [path]  # no output, no temporary file


def test_benchmark_on_a_damaged_index_names_the_file(index, tmp_path, capsys):
    path = damaged_chunk(index, tmp_path)
    fails(capsys, ["benchmark", *BENCH, "--index", str(path), "--out", str(tmp_path / "b")],
          str(path), "cannot be read")


def test_train_on_a_damaged_index_names_the_file_and_makes_no_run(index, tmp_path, capsys):
    path = damaged_chunk(index, tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(TINY_CONFIG.format(init="").replace("synthetic_ratio = 1.0",
                                                          "synthetic_ratio = 0.0"))
    run = tmp_path / "run"
    fails(capsys, ["train", "--config", str(config), "--index", str(path), "--out", str(run),
                   "--no-progress"], str(path), "cannot be read")
    assert not run.exists()


@pytest.mark.parametrize("command", [["index", "info"], ["benchmark", *BENCH, "--index"]])
def test_a_folder_given_as_the_index(tmp_path, capsys, command):
    folder = tmp_path / "data"
    folder.mkdir()
    extra = ["--out", str(tmp_path / "b")] if command[0] == "benchmark" else []
    err = fails(capsys, [*command, str(folder), *extra], str(folder), "is a folder")
    assert "errno" not in err


# ----------------------------------------------------------------------------- outputs

def test_build_into_a_folder_fails_before_any_work(tmp_path, capsys):
    src = write_png_pairs(tmp_path / "src", n=3)
    fails(capsys, ["index", "build", "png-pairs", "--source", str(src), "--out",
                   str(src / "images"), "--size", "16", "--no-progress"],
          str(src / "images"), "is a folder")
    assert sorted(p.name for p in src.iterdir()) == ["images", "masks"]  # no .partial left
    assert not list(tmp_path.glob("*.partial"))


def test_build_refuses_negative_workers(tmp_path, capsys):
    src = write_png_pairs(tmp_path / "src", n=3)
    fails(capsys, ["index", "build", "png-pairs", "--source", str(src), "--out",
                   str(tmp_path / "o.h5"), "--size", "16", "--workers", "-2", "--no-progress"],
          "workers")
    assert not (tmp_path / "o.h5").exists()


@pytest.mark.parametrize("action", ["build", "merge", "manifest", "subset"])
def test_an_existing_index_is_not_replaced_without_overwrite(index, tmp_path, capsys, action):
    existing = copy(index, tmp_path, "existing.h5")
    before = existing.read_bytes()
    src = write_png_pairs(tmp_path / "src", n=3, seed=4) if action == "build" else None
    argv = {
        "build": ["index", "build", "png-pairs", "--source", str(src), "--out", str(existing),
                  "--size", "16", "--no-progress"],
        "merge": ["index", "merge", str(existing), str(index)],
        "manifest": ["index", "merge", "--manifest", str(existing), str(index)],
        "subset": ["index", "subset", str(index), str(existing), "--splits", "train"],
    }[action]
    fails(capsys, argv, str(existing), "already exists", "--overwrite")
    assert existing.read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0
    assert existing.read_bytes() != before


@pytest.mark.parametrize("action", ["merge", "manifest", "subset"])
def test_output_that_is_a_folder_or_under_a_file(index, tmp_path, capsys, action):
    folder = tmp_path / "folder"
    folder.mkdir()
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    head = {"merge": ["index", "merge"], "manifest": ["index", "merge", "--manifest"],
            "subset": ["index", "subset", str(index)]}[action]
    tail = [] if action == "subset" else [str(index)]
    fails(capsys, [*head, str(folder), *tail], str(folder), "is a folder")
    fails(capsys, [*head, str(blocker / "o.h5"), *tail], str(blocker), "is a file")
    assert not list(folder.iterdir()) and blocker.read_text() == "x"


def test_subset_and_merge_outputs_get_normal_permissions(index, tmp_path):
    assert main(["index", "subset", str(index), str(tmp_path / "s.h5")]) == 0
    assert main(["index", "merge", str(tmp_path / "m.h5"), str(index)]) == 0
    for name in ("s.h5", "m.h5"):
        assert (tmp_path / name).stat().st_mode & 0o044, "readable by group/others (umask)"


# ----------------------------------------------------------------------------- train

def test_train_config_that_is_a_folder_or_binary(index, tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    fails(capsys, ["train", "--config", str(folder), "--out", str(tmp_path / "r")],
          str(folder), "is a folder")
    fails(capsys, ["train", "--config", str(index), "--out", str(tmp_path / "r")],
          str(index), "not a text file")
    assert not (tmp_path / "r").exists()


def test_train_out_that_is_a_file(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(TINY_CONFIG.format(init=""))
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    fails(capsys, ["train", "--config", str(config), "--out", str(blocker), "--no-progress"],
          str(blocker), "is a file")
    fails(capsys, ["train", "--config", str(config), "--out", str(blocker / "run"),
                   "--no-progress"], str(blocker), "is a file")
    assert blocker.read_text() == "keep me"


def test_train_init_weights_problems_name_the_key(tmp_path, capsys):
    for init, needle in (("missing.safetensors", "not found"),
                         ("folder", "a folder without model.safetensors")):
        (tmp_path / "folder").mkdir(exist_ok=True)
        config = tmp_path / "c.toml"
        config.write_text(TINY_CONFIG.format(init=f'init = "{tmp_path / init}"'))
        fails(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "r"),
                       "--no-progress"], "model.init", init, needle)
        assert not (tmp_path / "r").exists()


def test_resume_of_a_run_that_never_checkpointed(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(TINY_CONFIG.format(init=""))
    fails(capsys, ["train", "--resume", str(run), "--no-progress"], str(run),
          "no checkpoint to resume")


def test_validate_json_into_a_folder_fails_before_the_work(tmp_path, capsys, monkeypatch):
    import incontext.training.validate as validate

    def no_work(*args, **kwargs):
        raise AssertionError("validated before checking --validate-json")

    monkeypatch.setattr(validate, "validate_weights", no_work)
    config = tmp_path / "c.toml"
    config.write_text(TINY_CONFIG.format(init=""))
    folder = tmp_path / "out"
    folder.mkdir()
    fails(capsys, ["train", "--validate", "x.safetensors", "--config", str(config),
                   "--validate-json", str(folder)], str(folder), "is a folder")
