"""Fixtures shared by several test modules."""

from pathlib import Path

import pytest
import torch

from incontext.models import UniverSeg, save


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    """A tiny untrained UniverSeg (widths 8, 32 px) saved as weights + config."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save(UniverSeg(encoder_widths=(8, 8, 8), resolution=32), path)
    return path
