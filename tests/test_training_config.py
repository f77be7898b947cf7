"""Training config: TOML loading, validation errors naming the key, TOML round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from incontext.training import ConfigError, TrainConfig, config_from_dict, config_to_toml
from incontext.training.config import load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, """
steps = 50
[model]
encoder_widths = [8, 8, 8]
resolution = 32
[data]
support_size = 6
[augment.task]
hflip_p = 0.0
"""))
    assert cfg.steps == 50 and cfg.model.encoder_widths == (8, 8, 8)
    assert cfg.data.support_size == 6
    assert cfg.augment.task.hflip_p == 0.0 and cfg.augment.task.vflip_p == 0.5
    assert cfg.optim.lr == 1e-4  # default Adam learning rate
    assert cfg.augment.in_task.elastic_p == 0.8


@pytest.mark.parametrize("text, key", [
    ("[model]\nwidths = [1]", "model.widths"),
    ("steps = 'many'", "steps"),
    ("[data]\nsupport_size = [8, 4]", "data.support_size"),
    ("[data]\nsupport_size = [1, 2, 3]", "data.support_size"),
    ("[augment.in_task]\nblur_p = 1.5", "augment.in_task.blur_p"),
    ("[augment.task]\nrotate = [10, 0]", "augment.task.rotate"),
    ("[model]\nencoder_widths = [8, 8, 8]\nresolution = 30", "model.resolution"),
    ("[optim]\nlr = -1.0", "optim.lr"),
    ("[run]\ndevice = 'tpu'", "run.device"),
    ("[run]\nprogress = 1", "run.progress"),
    ("model = 3", "model"),
])
def test_errors_name_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert key in str(info.value) and str(path) in str(info.value)


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "steps = = 3"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_toml_round_trip():
    cfg = config_from_dict({"data": {"support_size": [2, 9], "dataset_weights": {"busi": 2.0,
                                                                               "a b": 0.5}},
                            "model": {"decoder_widths": [4, 4, 4]}})
    text = config_to_toml(cfg)
    again = config_from_dict(tomllib.loads(text))
    assert again.to_dict() == cfg.to_dict()
    assert config_to_toml(TrainConfig()) == config_to_toml(config_from_dict({}))


@pytest.mark.parametrize("name", ["universeg-cpu-small.toml", "universeg-v1-published.toml"])
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert cfg.steps > 0
    assert cfg.model.resolution % 2 ** (len(cfg.model.encoder_widths) - 1) == 0
