"""Two CPU processes (gloo) train with DistributedDataParallel and end with identical weights."""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from incontext.training import Trainer, config_from_dict


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config() -> dict:
    return {
        "name": "ddp", "seed": 5, "steps": 4,
        "model": {"encoder_widths": [8, 8], "resolution": 32},
        "data": {"batch_size": 2, "support_size": [2, 4], "synthetic_ratio": 1.0,
                 "synthetic_tasks": 8, "synthetic_val_tasks": 2, "synthetic_subjects": 6,
                 "val_support_size": 3, "val_queries": 2},
        "optim": {"lr": 1e-3},
        "schedule": {"warmup_steps": 1},
        "run": {"val_every": 2, "checkpoint_every": 2, "log_every": 1, "progress": False},
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    trainer = Trainer(config_from_dict(_config()), run_dir=Path(out) / "run")
    first_draw = int(copy.deepcopy(trainer.rng).integers(2**31))  # this rank's episode stream
    summary = trainer.run()
    weights = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(weights, str(Path(out) / f"rank{rank}.safetensors"))
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(
        {"steps": summary.steps, "world_size": summary.world_size, "first_draw": first_draw}))


def test_two_processes_end_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["steps"] for i in info] == [4, 4]
    assert [i["world_size"] for i in info] == [2, 2]
    assert info[0]["first_draw"] != info[1]["first_draw"]  # per-rank sampling streams
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # rank 0 wrote the checkpoint and the log
    saved = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
