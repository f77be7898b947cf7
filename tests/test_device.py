"""Device names: resolution, clear errors for unknown or missing hardware, CLI --device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from incontext.device import DeviceError, resolve_device
from incontext.models import UniverSeg, load_model, save
from tests.test_segment_cli import make_2d_folder, run_cli


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_auto_and_cuda_pick_the_local_gpu(two_gpus):
    assert resolve_device("auto") == torch.device("cuda:0")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_gpu_index_beyond_the_machine_is_an_error(two_gpus):
    with pytest.raises(DeviceError, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_missing_cuda_is_an_error_not_a_cpu_fallback(no_cuda):
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize("name", ["gpu0", "cuda:x", "meta"])
def test_unknown_names_are_errors(name):
    with pytest.raises(DeviceError, match=repr(name)):
        resolve_device(name)


def test_load_model_places_the_model(tmp_path, no_cuda):
    path = tmp_path / "tiny.safetensors"
    save(UniverSeg(encoder_widths=(8, 8), resolution=32), path)
    model = load_model(str(path), device="auto")
    assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    assert not model.training
    with pytest.raises(DeviceError, match="CUDA is not available"):
        load_model(str(path), device="cuda")


def test_segment_cli_device_error_is_one_clear_line(tmp_path, capsys, no_cuda):
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save(UniverSeg(encoder_widths=(8, 8), resolution=32), weights)
    sup = make_2d_folder(tmp_path / "sup")
    out = tmp_path / "out"
    argv = ["segment", "--support-dir", str(sup), "--query", str(sup / "images"),
            "--out", str(out), "--model", str(weights), "--threshold", "0.5",
            "--colour", "luma"]
    assert run_cli([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
    assert run_cli([*argv, "--device", "cpu"]) == 0
    assert "(model on cpu)" in capsys.readouterr().out  # the summary says where it ran
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 and all(n.endswith(".png") for n in written)
    assert all(np.asarray(Image.open(out / n)).ndim == 2 for n in written)
