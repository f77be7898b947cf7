"""Scoring saved models on a config's validation episodes (train --validate)."""

from __future__ import annotations

import json

import pytest
from test_training_engine import tiny_config

from incontext.cli.train import main as train_cli
from incontext.training import ConfigError, config_from_dict, config_to_toml, train
from incontext.training.validate import (
    load_candidate,
    manually_labelled,
    real_dataset_mean,
    validate_weights,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    cfg = tiny_config(steps=6, run={"val_every": 6})
    run = root / "run"
    summary = train(config_from_dict(cfg), run_dir=run)
    config_file = root / "config.toml"
    config_file.write_text(config_to_toml(config_from_dict(cfg)))
    return run, config_file, summary


def test_reproduces_the_runs_own_validation(trained):
    run, config_file, summary = trained
    recorded = {h["step"]: h["val_dice"] for h in summary.val_history}
    (last,) = validate_weights(config_file, [run / "last"])
    assert last["model"] == str(run / "last")
    assert last["val_dice"] == pytest.approx(recorded[6], abs=1e-6)
    assert set(last["per_dataset"]) == {"synthetic-heldout"} and last["n_tasks"] == 2
    assert last["real_dice"] is None  # no index: no manually labelled dataset


def test_weights_file_and_directory_agree_and_differ_from_another_model(trained):
    run, config_file, summary = trained
    results = validate_weights(config_file, [run / "last" / "model.safetensors",
                                             run / "last", run / "best"])
    assert results[0]["per_task"] == results[1]["per_task"]
    assert results[2]["val_dice"] == pytest.approx(summary.best_val_dice, abs=1e-6)


def test_cli_prints_and_writes_json(trained, tmp_path, capsys):
    run, config_file, _ = trained
    out = tmp_path / "scores.json"
    code = train_cli(["--config", str(config_file), "--validate", str(run / "last"),
                      "--validate-json", str(out), "--no-progress"])
    assert code == 0
    assert "validation Dice" in capsys.readouterr().out
    (saved,) = json.loads(out.read_text())
    assert saved["model"] == str(run / "last") and 0.0 <= saved["val_dice"] <= 1.0
    assert not list(tmp_path.glob(".*tmp*"))


def test_clear_errors(trained, tmp_path, capsys):
    run, config_file, _ = trained
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_candidate("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_candidate(tmp_path / "empty")
    with pytest.raises(ConfigError, match="nothing to validate"):
        validate_weights(config_file, [])
    no_val = tiny_config(data={"synthetic_val_tasks": 0})
    with pytest.raises(ConfigError, match="no validation episodes"):
        validate_weights(config_from_dict(no_val), [run / "last"])
    assert train_cli(["--config", str(config_file), "--validate-json", "x.json"]) == 2
    assert "needs --validate" in capsys.readouterr().err
    assert train_cli(["--config", str(config_file), "--validate", str(run / "last"),
                      "--out", str(tmp_path / "r")]) == 2
    assert "trains nothing" in capsys.readouterr().err


class _Index:
    datasets = ["busi", "drions_vessels", "jsrt", "old"]

    def dataset_attrs(self, name):
        return {"busi": {"extra": "{}"},
                "drions_vessels": {"extra": json.dumps({"pseudo_labels": "top-hat"})},
                "jsrt": {"extra": "not json"},  # unreadable: treated as manual
                "old": {}}[name]  # indexes written before "extra" existed


def test_manual_label_mean_leaves_out_pseudo_and_synthetic_datasets():
    real = manually_labelled(_Index())
    assert real == ["busi", "jsrt", "old"]
    scores = {"busi": 0.4, "drions_vessels": 0.9, "jsrt": 0.6, "synthetic-heldout": 0.95}
    assert real_dataset_mean(scores, real) == pytest.approx(0.5)
    assert real_dataset_mean({"synthetic-heldout": 0.9}, real) is None
