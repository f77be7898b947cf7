"""Checkpoints: safetensors weights + training state, switched in atomically.

Layout inside a run directory::

    checkpoints/last-00000500-<id>/model.safetensors   weights (incontext.models.io format)
                                   model.json          model config (load with incontext)
                                   state.pt            optimiser, scheduler, RNG, step
    last -> checkpoints/last-00000500-<id>             symlink, replaced atomically
    best -> checkpoints/best-00000400-<id>

A checkpoint is written into a temporary folder, renamed into place, and only
then does the ``last``/``best`` symlink switch to it (``os.replace``), so a crash
at any moment leaves the previous checkpoint intact. ``state.pt`` holds only
tensors and plain Python containers and is read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from incontext.models import io as weights_io

WEIGHTS = weights_io.CHECKPOINT_WEIGHTS
STATE = "state.pt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the path."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, name: str, model: nn.Module, state: dict[str, Any],
                    step: int) -> Path:
    """Write a checkpoint and point ``run_dir/name`` at it; returns the checkpoint folder."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{name}-{step:08d}-{uuid.uuid4().hex[:8]}"
    tmp = ckpt_root / f".tmp-{final.name}"
    tmp.mkdir()
    try:
        weights_io.save(model, tmp / WEIGHTS, provenance={"training_step": step,
                                                           "run": str(run_dir.name)})
        with open(tmp / STATE, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, final)
        _fsync_dir(ckpt_root)
        link_tmp = run_dir / f".{name}.link-{uuid.uuid4().hex[:8]}"
        os.symlink(os.path.relpath(final, run_dir), link_tmp)
        os.replace(link_tmp, run_dir / name)
        _fsync_dir(run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _collect_garbage(run_dir)
    return final


def _collect_garbage(run_dir: Path) -> None:
    """Delete checkpoint folders no link points to (and stale temporary ones)."""
    keep = set()
    for link in ("last", "best"):
        p = run_dir / link
        if p.is_symlink():
            keep.add(Path(os.path.realpath(p)).name)
    for child in (run_dir / "checkpoints").iterdir():
        if child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def load_checkpoint(run_dir: Path, name: str = "last") -> tuple[dict[str, torch.Tensor],
                                                                 dict[str, Any]]:
    """(weights state dict, training state) of ``run_dir/name``."""
    folder = run_dir / name
    if not folder.exists():
        raise CheckpointError(f"{folder}: no checkpoint (was the run ever checkpointed?)")
    from safetensors.torch import load_file

    try:
        weights = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types
        raise CheckpointError(f"{folder / WEIGHTS}: cannot read weights ({exc})") from exc
    try:
        state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{folder / STATE}: cannot read training state ({exc})") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{folder / STATE}: not a training state (no 'step')")
    return weights, state


# ----------------------------------------------------------------------------- RNG state


def capture_rng(generator: np.random.Generator) -> dict[str, Any]:
    """Python, numpy (global and ``generator``) and torch RNG states as plain data/tensors."""
    py = random.getstate()
    np_global = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy_global": [np_global[0], np_global[1].tolist(), *np_global[2:]],
        "episodes": generator.bit_generator.state,
    }
    state = {"plain": json.dumps(plain), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: np.random.Generator) -> None:
    """Inverse of :func:`capture_rng` (sets the global RNGs and ``generator`` in place)."""
    plain = json.loads(state["plain"])
    py = plain["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    g = plain["numpy_global"]
    np.random.set_state((g[0], np.array(g[1], dtype=np.uint32), *g[2:]))
    generator.bit_generator.state = plain["episodes"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
