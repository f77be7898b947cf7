"""Training loop: runs, checkpoints, bit-for-bit resume, learning on synthetic tasks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from incontext.models import io as weights_io
from incontext.training import ConfigError, config_from_dict, load_config, train
from incontext.training.checkpoint import load_checkpoint


def tiny_config(steps: int = 8, **overrides) -> dict:
    cfg = {
        "name": "tiny", "seed": 3, "steps": steps,
        "model": {"encoder_widths": [8, 8], "resolution": 32},
        "data": {"batch_size": 2, "support_size": [2, 4], "synthetic_ratio": 1.0,
                 "synthetic_tasks": 6, "synthetic_val_tasks": 2, "synthetic_subjects": 6,
                 "val_support_size": 3, "val_queries": 2},
        "optim": {"lr": 1e-3},
        "schedule": {"warmup_steps": 2},
        "run": {"val_every": 3, "checkpoint_every": 100, "log_every": 2, "progress": False},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def weights(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / name / "model.safetensors"))


def test_run_dir_contents(tmp_path):
    run = tmp_path / "run"
    summary = train(config_from_dict(tiny_config()), run_dir=run)
    assert summary.steps == 8 and not summary.interrupted
    assert load_config(run / "config.toml").to_dict() == config_from_dict(tiny_config()).to_dict()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    val_steps = [r["step"] for r in records if r["kind"] == "val"]
    assert train_steps == [2, 4, 6, 8]
    assert val_steps == [0, 3, 6, 8]
    assert all(0.0 <= r["val_dice"] <= 1.0 for r in records if r["kind"] == "val")
    # weights load through the model I/O; state loads with weights_only
    model = weights_io.load(run / "last" / "model.safetensors")
    assert model.config.encoder_widths == (8, 8)
    _, state = load_checkpoint(run, "last")
    assert state["step"] == 8 and len(state["rng"]) == 1
    best_step = summary.best_step
    assert best_step in (3, 6, 8)
    assert (run / "best").resolve().name.startswith(f"best-{best_step:08d}")
    # only the checkpoints the links point to are kept
    assert len(list((run / "checkpoints").iterdir())) == 2


def test_refuses_to_overwrite_a_run(tmp_path):
    run = tmp_path / "run"
    train(config_from_dict(tiny_config(steps=2)), run_dir=run)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config_from_dict(tiny_config(steps=2)), run_dir=run)


def test_resume_is_bit_for_bit(tmp_path):
    cfg = tiny_config(steps=8)
    straight = train(config_from_dict(cfg), run_dir=tmp_path / "a")
    half = train(config_from_dict(cfg), run_dir=tmp_path / "b", stop_after=4)
    assert half.interrupted and half.steps == 4
    assert load_checkpoint(tmp_path / "b", "last")[1]["step"] == 4
    resumed = train(None, run_dir=tmp_path / "b", resume=True)
    assert resumed.steps == 8 and not resumed.interrupted
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    # the optimiser state and the logs agree too
    sa, sb = load_checkpoint(tmp_path / "a")[1], load_checkpoint(tmp_path / "b")[1]
    for pid, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], sb["optimizer"]["state"][pid]["exp_avg"])
    log_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    strip = ("elapsed_s", "steps_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in log_a] == \
        [{k: v for k, v in r.items() if k not in strip} for r in log_b]
    assert straight.best_val_dice == resumed.best_val_dice


def test_resume_checks(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        train(None, run_dir=tmp_path / "nothing", resume=True)
    run = tmp_path / "run"
    train(config_from_dict(tiny_config(steps=4)), run_dir=run, stop_after=2)
    other = config_from_dict(tiny_config(steps=4, seed=99))
    with pytest.raises(ConfigError, match="differs"):
        train(other, run_dir=run, resume=True)


def test_no_training_data_is_a_clear_error(tmp_path):
    cfg = tiny_config(data={"synthetic_ratio": 0.0})
    with pytest.raises(ConfigError, match="no training data"):
        train(config_from_dict(cfg), run_dir=tmp_path / "run")


def test_learns_on_synthetic_tasks(tmp_path):
    """Validation Dice on held-back synthetic tasks rises well above its step-0 value."""
    cfg = {
        "name": "learn", "seed": 0, "steps": 80,
        "model": {"encoder_widths": [16, 16, 16], "resolution": 32},
        "data": {"batch_size": 4, "support_size": [4, 8], "synthetic_ratio": 1.0,
                 "synthetic_tasks": 200, "synthetic_val_tasks": 16, "synthetic_subjects": 16,
                 "val_support_size": 8, "val_queries": 4},
        "augment": {"enabled": False},
        "optim": {"lr": 2e-3},
        "schedule": {"warmup_steps": 10},
        "run": {"val_every": 40, "checkpoint_every": 1000, "log_every": 20, "progress": False},
    }
    start = time.perf_counter()
    summary = train(config_from_dict(cfg), run_dir=tmp_path / "run")
    assert time.perf_counter() - start < 120
    assert summary.initial_val_dice is not None and summary.best_val_dice is not None
    assert summary.best_val_dice > summary.initial_val_dice + 0.2, summary.val_history
    assert summary.best_val_dice > 0.5


def test_trains_on_a_task_index_mixed_with_synthetic(tmp_path):
    from incontext.data import build_index
    from incontext.data.fixtures import write_png_pairs

    src = write_png_pairs(tmp_path / "src", n=15)
    index = tmp_path / "pairs.h5"
    build_index("png-pairs", src, index, size=64, progress=False)
    cfg = tiny_config(steps=4, data={"synthetic_ratio": 0.5})
    summary = train(config_from_dict(cfg), indexes=[index], run_dir=tmp_path / "run")
    assert summary.steps == 4
    saved = load_config(tmp_path / "run" / "config.toml")
    assert saved.data.indexes == (str(index.resolve()),)
    val = summary.val_history[-1]
    # index tasks (val split) and held-back synthetic tasks are both validated
    assert "synthetic-heldout" in val["per_dataset"] and len(val["per_dataset"]) == 2
    resumed = train(None, run_dir=tmp_path / "run", resume=True)  # reopens the index
    assert resumed.steps == 4


def test_init_from_weights_at_another_resolution(tmp_path):
    from incontext.models import UniverSeg, UniverSegConfig, save

    torch.manual_seed(7)
    start = save(UniverSeg(UniverSegConfig(encoder_widths=(8, 8), resolution=16)),
                 tmp_path / "start.safetensors")
    cfg = tiny_config(steps=1, model={"init": str(start)}, optim={"lr": 1e-12},
                      run={"validate_at_start": False, "val_every": 100})
    train(config_from_dict(cfg), run_dir=tmp_path / "run")
    got, want = weights(tmp_path / "run"), load_file(str(start))
    for key in want:  # lr ~0: the run's weights are the init weights (at 32 px now)
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)
    wide = save(UniverSeg(UniverSegConfig(encoder_widths=(16, 16), resolution=32)),
                tmp_path / "wide.safetensors")
    with pytest.raises(ConfigError, match="do not fit"):
        train(config_from_dict(tiny_config(steps=1, model={"init": str(wide)})),
              run_dir=tmp_path / "run2")


def test_time_limit_stops_and_saves_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    t0 = time.perf_counter()
    summary = train(config_from_dict(tiny_config(steps=100_000)), run_dir=run, time_limit_s=1.0)
    assert time.perf_counter() - t0 < 60
    assert summary.interrupted and 0 < summary.steps < 100_000
    assert load_checkpoint(run, "last")[1]["step"] == summary.steps
    with pytest.raises(ConfigError, match="time limit"):
        train(config_from_dict(tiny_config()), run_dir=tmp_path / "other", time_limit_s=0)


def test_worker_processes_feed_training_and_resume_with_fresh_streams(tmp_path):
    cfg = tiny_config(steps=6, data={"workers": 2})
    run = tmp_path / "run"
    half = train(config_from_dict(cfg), run_dir=run, stop_after=3)
    assert half.interrupted and half.steps == 3
    resumed = train(None, run_dir=run, resume=True)
    assert resumed.steps == 6 and not resumed.interrupted
    assert load_config(run / "config.toml").data.workers == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [2, 4, 6]
    assert all(2 <= r["support_size"] <= 4 for r in train_records)
    assert all(torch.isfinite(t).all() for t in weights(run).values())
    with pytest.raises(ConfigError, match="data.workers"):
        config_from_dict(tiny_config(data={"workers": -1}))
