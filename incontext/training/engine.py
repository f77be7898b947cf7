"""The meta-training loop: episodes -> augmentation -> UniverSeg -> Dice+BCE -> Adam.

``train(config, indexes=[...], run_dir=...)`` runs (or, with ``resume=True``,
continues) a run and returns a :class:`RunSummary`. Under ``torchrun`` every
process trains on its own episode stream (per-rank seeds) and
DistributedDataParallel averages the gradients; rank 0 validates, logs and
writes checkpoints.

Reproducibility: all sampling and augmentation draws come from one
``numpy.random.Generator`` per rank whose state (with Python's, numpy's and
torch's global RNG states) is saved in every checkpoint, so a run resumed from
its last checkpoint reproduces the uninterrupted run bit for bit on the same
hardware and thread count.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from incontext.data.episode import Episode
from incontext.models.universeg import UniverSeg, UniverSegConfig
from incontext.training import distributed as dist_utils
from incontext.training.augment import EpisodeAugmenter
from incontext.training.checkpoint import (
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from incontext.training.config import (
    ConfigError,
    TrainConfig,
    config_to_toml,
    load_config,
)
from incontext.training.loader import (
    EpisodeBatches,
    batch_iterator,
    close_batches,
    draw_batch,
    stack_episodes,
)
from incontext.training.losses import hard_dice, segmentation_loss
from incontext.training.schedule import WarmupCosine
from incontext.training.sources import (
    EpisodeSource,
    IndexSource,
    MixedSource,
    SyntheticGenerator,
    SyntheticSource,
    synthetic_seeds,
)

CONFIG_FILE = "config.toml"
THIN_SEED_OFFSET = 5_000_000  # thin-structure task seeds sit apart from the blob tasks' seeds
METRICS_FILE = "metrics.jsonl"


@dataclass
class RunSummary:
    """What a (possibly interrupted) run achieved."""

    run_dir: Path
    steps: int
    total_steps: int
    interrupted: bool
    elapsed_s: float
    steps_per_second: float
    final_loss: float | None
    initial_val_dice: float | None
    final_val_dice: float | None
    best_val_dice: float | None
    best_step: int | None
    world_size: int = 1
    val_history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- building


def build_model(config: TrainConfig) -> UniverSeg:
    m = config.model
    return UniverSeg(UniverSegConfig(encoder_widths=m.encoder_widths,
                                     decoder_widths=m.decoder_widths, resolution=m.resolution))


def build_sources(config: TrainConfig, index: Any = None,
                  synthetic_generator: SyntheticGenerator | None = None,
                  ) -> tuple[EpisodeSource, list[Episode]]:
    """(training source, validation episodes) for ``config``; ``index`` is a TaskIndex or None."""
    d = config.data
    res = config.model.resolution
    ratio = d.synthetic_ratio if index is not None else 1.0
    if index is None and d.synthetic_ratio == 0:
        raise ConfigError("no training data: pass --index FILE.h5 (or data.indexes) or set "
                          "data.synthetic_ratio > 0")
    parts: list[tuple[EpisodeSource, float]] = []
    val: list[Episode] = []
    if index is not None and ratio < 1:
        idx = IndexSource(index, res, split=d.train_split, val_split=d.val_split,
                          dataset_weights=d.dataset_weights, skip_empty=d.skip_empty,
                          colour_render_p=d.colour_render_p, tile_crop_p=d.tile_crop_p)
        parts.append((idx, 1.0 - ratio))
        val += idx.validation_episodes(d.val_support_size, d.val_queries,
                                       d.val_episodes_per_task, d.val_seed, d.val_max_tasks)
    train_seeds, val_seeds = synthetic_seeds(d.synthetic_seed, d.synthetic_tasks,
                                             d.synthetic_val_tasks)
    if ratio > 0:
        thin = d.synthetic_thin_ratio
        if thin < 1:
            parts.append((SyntheticSource(train_seeds, d.synthetic_subjects, res,
                                          synthetic_generator, d.synthetic_cache),
                          ratio * (1.0 - thin)))
        if thin > 0:
            parts.append((SyntheticSource([s + THIN_SEED_OFFSET for s in train_seeds],
                                          d.synthetic_subjects, res, cache_size=d.synthetic_cache,
                                          name="synthetic-thin",
                                          subject_generator=_thin_subject_generator()),
                          ratio * thin))
        if val_seeds:
            held = SyntheticSource(val_seeds, d.synthetic_subjects, res, synthetic_generator,
                                   cache_size=len(val_seeds), name="synthetic-heldout")
            val += held.validation_episodes(d.val_support_size, d.val_queries,
                                            d.val_episodes_per_task, d.val_seed)
    if d.synthetic_thin_val_tasks:
        # thin validation seeds follow the thin training seeds' range, so never overlap them
        _, thin_val = synthetic_seeds(d.synthetic_seed, d.synthetic_tasks,
                                      d.synthetic_thin_val_tasks)
        held = SyntheticSource([s + THIN_SEED_OFFSET for s in thin_val], d.synthetic_subjects,
                               res, cache_size=len(thin_val), name="synthetic-thin-heldout",
                               subject_generator=_thin_subject_generator())
        val += held.validation_episodes(d.val_support_size, d.val_queries,
                                        d.val_episodes_per_task, d.val_seed)
    return MixedSource(parts), val


def _thin_subject_generator() -> SyntheticGenerator:
    from data_recipes.synthetic_thin import generate_thin_subject

    return generate_thin_subject


def collate(episodes: Sequence[Episode], device: torch.device,
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Episodes with equal support size -> (query (B,1,H,W), support images/labels
    (B,S,1,H,W), query labels (B,1,H,W)) on ``device``; the first query of each episode."""
    return tuple(x.to(device) for x in stack_episodes(episodes))  # type: ignore[return-value]


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, episodes: Sequence[Episode], device: torch.device,
             amp: bool = False) -> dict[str, Any]:
    """Mean hard Dice per task (over its queries), then averaged over tasks and per dataset."""
    was_training = model.training
    model.eval()
    per_task: dict[str, list[float]] = {}
    dataset_of: dict[str, str] = {}
    try:
        for ep in episodes:
            n_q = ep.query_images.shape[0]
            q = torch.from_numpy(np.ascontiguousarray(ep.query_images, np.float32))
            ql = torch.from_numpy(np.ascontiguousarray(ep.query_labels, np.float32))
            si = torch.from_numpy(np.ascontiguousarray(ep.support_images, np.float32))
            sl = torch.from_numpy(np.ascontiguousarray(ep.support_labels, np.float32))
            q, ql = q[:, None].to(device), ql[:, None].to(device)
            si = si[None, :, None].expand(n_q, -1, -1, -1, -1).to(device)
            sl = sl[None, :, None].expand(n_q, -1, -1, -1, -1).to(device)
            with _autocast(device, amp):
                logits = model(q, si, sl)
            per_task.setdefault(ep.task, []).extend(hard_dice(logits.float(), ql).tolist())
            dataset_of[ep.task] = ep.dataset
    finally:
        model.train(was_training)
    task_means = {k: float(np.mean(v)) for k, v in per_task.items()}
    by_dataset: dict[str, list[float]] = {}
    for k, v in task_means.items():
        by_dataset.setdefault(dataset_of[k], []).append(v)
    return {
        "val_dice": float(np.mean(list(task_means.values()))) if task_means else float("nan"),
        "per_dataset": {k: float(np.mean(v)) for k, v in sorted(by_dataset.items())},
        "per_task": task_means,
        "n_tasks": len(task_means),
    }


# ----------------------------------------------------------------------------- run dir I/O


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines written after checkpoint ``step`` (they will be re-done)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a crash
    _atomic_write_text(path, "".join(k + "\n" for k in kept))


def _default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.name}-{stamp}"


# ----------------------------------------------------------------------------- trainer


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # second Ctrl-C: give up immediately
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Trainer:
    """One training run (use :func:`train` unless you need the model afterwards)."""

    def __init__(self, config: TrainConfig | str | Path | None = None,
                 indexes: Sequence[str | Path] = (), run_dir: str | Path | None = None,
                 resume: bool = False, *, synthetic_generator: SyntheticGenerator | None = None,
                 index: Any = None, stop_after: int | None = None,
                 progress: bool | None = None, time_limit_s: float | None = None) -> None:
        if time_limit_s is not None and time_limit_s <= 0:
            raise ConfigError(f"the time limit must be > 0 seconds, got {time_limit_s}")
        self.time_limit_s = time_limit_s
        self.dist = dist_utils.setup(_peek_device(config, run_dir, resume))
        try:
            self._init(config, indexes, run_dir, resume, synthetic_generator, index,
                       stop_after, progress)
        except BaseException:
            dist_utils.cleanup(self.dist)
            raise

    # -- setup

    def _init(self, config, indexes, run_dir, resume, synthetic_generator, index, stop_after,
              progress) -> None:
        if resume:
            if run_dir is None:
                raise ConfigError("resume needs the run directory")
            run_dir = Path(run_dir)
            saved = run_dir / CONFIG_FILE
            if not saved.exists():
                raise FileNotFoundError(f"{run_dir}: not a run directory ({CONFIG_FILE} missing)")
            if not (run_dir / "last").exists():
                raise ConfigError(f"{run_dir}: no checkpoint to resume (the run stopped before "
                                  "its first one); start it again with --config and another "
                                  "--out, or remove this folder first")
            cfg = load_config(saved)
            if config is not None:
                given = config if isinstance(config, TrainConfig) else load_config(config)
                given.data.indexes = cfg.data.indexes
                if config_to_toml(given) != config_to_toml(cfg):
                    raise ConfigError(f"--config differs from {saved}; a resumed run keeps its "
                                      "own configuration (omit --config)")
            if indexes and sorted(str(Path(p).resolve()) for p in indexes) != \
                    sorted(cfg.data.indexes):
                raise ConfigError(f"--index differs from the indexes of {saved}")
        else:
            if config is None:
                raise ConfigError("a config is required (--config FILE.toml)")
            cfg = config if isinstance(config, TrainConfig) else load_config(config)
            all_indexes = list(cfg.data.indexes) + [str(p) for p in indexes]
            cfg.data.indexes = tuple(dict.fromkeys(str(Path(p).resolve())
                                                   for p in all_indexes))
            if run_dir is None:
                run_dir = dist_utils.broadcast_object(self.dist, _default_run_dir(cfg))
            run_dir = Path(run_dir)
            _check_new_run_dir(run_dir)
            if (run_dir / "last").exists() or (run_dir / CONFIG_FILE).exists():
                raise ConfigError(f"{run_dir} already holds a run; resume it with --resume "
                                  f"{run_dir} or choose another --out")
        self.config = cfg
        self.run_dir = run_dir
        self.stop_after = stop_after
        self.show_progress = (cfg.run.progress if progress is None else progress) and \
            self.dist.is_main
        device = self.dist.device
        self.amp = cfg.run.amp and device.type == "cuda"

        # seeds: identical model init on every rank, per-rank sampling streams
        torch.manual_seed(cfg.seed)
        seq = dist_utils.rank_seed(cfg.seed, self.dist.rank)
        random.seed(int(seq.generate_state(1)[0]))
        np.random.seed(int(seq.generate_state(2)[1]))
        self.rng = np.random.default_rng(seq)

        self.model = build_model(cfg).to(device)
        if cfg.model.init and not resume:
            _load_init_weights(self.model, cfg.model.init)
        o = cfg.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, betas=o.betas,
                                          weight_decay=o.weight_decay)
        self.scheduler = WarmupCosine(self.optimizer, cfg.steps, cfg.schedule.warmup_steps,
                                      cfg.schedule.min_lr_ratio)
        if index is None and cfg.data.indexes:
            from incontext.data import TaskIndex

            index = TaskIndex.open([Path(p) for p in cfg.data.indexes])
        self.source, self.val_episodes = build_sources(cfg, index, synthetic_generator)
        self.augmenter = EpisodeAugmenter(cfg.augment)
        self._batches: Any = None  # worker-fed batch iterator (data.workers > 0), made lazily

        self.step = 0
        self.elapsed_before = 0.0
        self.best: dict[str, Any] = {"step": None, "val_dice": None}
        self.val_history: list[dict[str, Any]] = []
        self.resumed = resume
        if resume:
            self._load_resume_state()
        elif self.dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(cfg))
        dist_utils.barrier(self.dist)

        self.forward_model: nn.Module = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            # the last decoder block's support branch is never used by the fast forward
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids,
                                                         find_unused_parameters=True)
        if cfg.run.compile:
            self.forward_model = torch.compile(self.forward_model)

    def _load_resume_state(self) -> None:
        weights, state = load_checkpoint(self.run_dir, "last")
        from incontext.models.io import load_state_dict_checked

        load_state_dict_checked(self.model, weights, self.run_dir / "last")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng_states = state["rng"]
        if len(rng_states) != self.dist.world_size:
            raise ConfigError(f"{self.run_dir}: checkpoint was written by {len(rng_states)} "
                              f"process(es); resume it with the same number "
                              f"(got {self.dist.world_size})")
        restore_rng(rng_states[self.dist.rank], self.rng)
        self.step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.best = json.loads(state.get("best", '{"step": null, "val_dice": null}'))
        self.val_history = json.loads(state.get("val_history", "[]"))
        if self.dist.is_main:
            _truncate_metrics(self.run_dir / METRICS_FILE, self.step)

    # -- checkpoints and logs

    def _save(self, name: str, elapsed: float) -> None:
        rng_states = dist_utils.gather_objects(self.dist, capture_rng(self.rng))
        if self.dist.is_main:
            state = {
                "step": self.step,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_states,
                "elapsed_s": elapsed,
                "best": json.dumps(self.best),
                "val_history": json.dumps(self.val_history),
                "world_size": self.dist.world_size,
            }
            save_checkpoint(self.run_dir, name, self.model, state, self.step)
        dist_utils.barrier(self.dist)

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def _validate(self, elapsed: float) -> float | None:
        result = None
        if self.dist.is_main and self.val_episodes:
            result = evaluate(self.model, self.val_episodes, self.dist.device, self.amp)
            record = {"kind": "val", "step": self.step, "val_dice": result["val_dice"],
                      "per_dataset": result["per_dataset"], "n_tasks": result["n_tasks"],
                      "elapsed_s": round(elapsed, 3)}
            self._log({**record, "per_task": result["per_task"]})
            self.val_history.append(record)
        return dist_utils.broadcast_object(self.dist, None if result is None
                                           else result["val_dice"])

    # -- loop

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, device = self.config, self.dist.device
        if cfg.data.workers == 0:  # in-process, from the run's own (checkpointed) generator
            return collate(draw_batch(self.source, self.augmenter, cfg.data.batch_size,
                                      cfg.data.support_size, self.rng), device)
        if self._batches is None:
            dataset = EpisodeBatches(self.source, self.augmenter, cfg.data.batch_size,
                                     cfg.data.support_size,
                                     (cfg.seed, self.dist.rank, self.step))
            self._batches = batch_iterator(dataset, cfg.data.workers,
                                           pin_memory=device.type == "cuda")
        return tuple(x.to(device, non_blocking=True)  # type: ignore[return-value]
                     for x in next(self._batches))

    def _train_step(self) -> tuple[float, float, int]:
        cfg = self.config
        q, si, sl, ql = self._next_batch()
        support_size = si.shape[1]
        with _autocast(self.dist.device, self.amp):
            logits = self.forward_model(q, si, sl)
        loss = segmentation_loss(logits.float(), ql, cfg.optim.dice_weight, cfg.optim.bce_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        dice = float(hard_dice(logits.detach().float(), ql).mean())
        return float(loss.detach()), dice, support_size

    def _stop_requested(self, flag: _StopFlag) -> bool:
        stop = flag.requested or (self.stop_after is not None and self.step >= self.stop_after)
        if self.time_limit_s is not None:
            stop = stop or time.perf_counter() - self._session_start >= self.time_limit_s
        if self.dist.distributed:
            stop = any(dist_utils.gather_objects(self.dist, stop))
        return stop

    def run(self) -> RunSummary:
        """Train to ``config.steps`` (or until interrupted); returns the summary."""
        self._session_start = time.perf_counter()
        finished = False
        try:
            summary = self._run()
            finished = True
            return summary
        finally:
            close_batches(self._batches)
            self._batches = None
            dist_utils.cleanup(self.dist, meet=finished)

    def _run(self) -> RunSummary:
        cfg, r = self.config, self.config.run
        total = cfg.steps
        t0 = time.perf_counter()
        start_step = self.step
        initial_val = None
        if not self.resumed and r.validate_at_start:
            initial_val = self._validate(0.0)
        elif self.val_history:
            initial_val = self.val_history[0]["val_dice"] if self.val_history[0]["step"] == 0 \
                else None
        window_loss: list[float] = []
        window_dice: list[float] = []
        running_dice: deque[float] = deque(maxlen=50)
        last_loss = None
        interrupted = False
        bar = _ProgressBar(self.show_progress, total, self.step)
        with _StopFlag() as flag, bar:
            while self.step < total:
                if self._stop_requested(flag):
                    interrupted = True
                    break
                loss, dice, s = self._train_step()
                self.step += 1
                window_loss.append(loss)
                window_dice.append(dice)
                running_dice.append(dice)
                last_loss = loss
                elapsed = self.elapsed_before + time.perf_counter() - t0
                sps = (self.step - start_step) / max(time.perf_counter() - t0, 1e-9)
                bar.update(self.step, loss, float(np.mean(running_dice)), sps)
                if self.step % r.log_every == 0 or self.step == total:
                    mean_loss, mean_dice = dist_utils.all_reduce_mean(
                        self.dist, [float(np.mean(window_loss)), float(np.mean(window_dice))])
                    self._log({"kind": "train", "step": self.step, "loss": mean_loss,
                               "dice": mean_dice, "lr": self.scheduler.lr, "support_size": s,
                               "steps_per_s": round(sps, 4), "elapsed_s": round(elapsed, 3)})
                    window_loss, window_dice = [], []
                if self.step % r.val_every == 0 or self.step == total:
                    value = self._validate(elapsed)
                    if value is not None and (self.best["val_dice"] is None
                                              or value > self.best["val_dice"]):
                        self.best = {"step": self.step, "val_dice": value}
                        self._save("best", elapsed)
                if self.step % r.checkpoint_every == 0 or self.step == total:
                    self._save("last", elapsed)
            elapsed = self.elapsed_before + time.perf_counter() - t0
            if interrupted:
                self._save("last", elapsed)
        done = self.step - start_step
        wall = time.perf_counter() - t0
        finals = [h for h in self.val_history if h["step"] == self.step]
        summary = RunSummary(
            run_dir=self.run_dir, steps=self.step, total_steps=total, interrupted=interrupted,
            elapsed_s=elapsed, steps_per_second=done / wall if wall > 0 else 0.0,
            final_loss=last_loss, initial_val_dice=initial_val,
            final_val_dice=finals[-1]["val_dice"] if finals else None,
            best_val_dice=self.best["val_dice"], best_step=self.best["step"],
            world_size=self.dist.world_size, val_history=list(self.val_history),
        )
        if self.show_progress:
            print_summary(summary)
        if interrupted and flag.requested:
            raise KeyboardInterrupt
        return summary


def _peek_device(config: Any, run_dir: Any, resume: bool) -> str:
    """run.device of the config that will be used (before the process group exists)."""
    try:
        if resume and run_dir is not None and (Path(run_dir) / CONFIG_FILE).exists():
            return load_config(Path(run_dir) / CONFIG_FILE).run.device
        if isinstance(config, TrainConfig):
            return config.run.device
        if config is not None:
            return load_config(config).run.device
    except (OSError, ValueError):
        pass  # the real load reports the problem
    return "auto"


class _ProgressBar:
    """rich progress bar with loss, running Dice, steps/s and ETA (no-op when disabled)."""

    def __init__(self, enabled: bool, total: int, completed: int) -> None:
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  dice {task.fields[dice]:.3f}  "
                       "{task.fields[sps]:.2f} steps/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("train", total=total, completed=completed,
                                           loss=math.nan, dice=math.nan, sps=0.0)

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, step: int, loss: float, dice: float, sps: float) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=step, loss=loss, dice=dice, sps=sps)


def print_summary(summary: RunSummary) -> None:
    """A rich table of the run's results."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v: float | None, digits: int = 4) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    table = Table(title="training summary", show_header=False)
    table.add_row("run directory", str(summary.run_dir))
    table.add_row("steps", f"{summary.steps} / {summary.total_steps}"
                  + ("  (interrupted)" if summary.interrupted else ""))
    table.add_row("processes", str(summary.world_size))
    table.add_row("time", f"{summary.elapsed_s:.1f} s")
    table.add_row("steps/s (this session)", fmt(summary.steps_per_second, 2))
    table.add_row("last loss", fmt(summary.final_loss))
    table.add_row("val Dice at step 0", fmt(summary.initial_val_dice))
    table.add_row("val Dice at end", fmt(summary.final_val_dice))
    table.add_row("best val Dice", f"{fmt(summary.best_val_dice)} (step {summary.best_step})")
    Console().print(table)


def train(config: TrainConfig | str | Path | None, indexes: Sequence[str | Path] = (),
          run_dir: str | Path | None = None, resume: bool = False, *,
          synthetic_generator: SyntheticGenerator | None = None, index: Any = None,
          stop_after: int | None = None, progress: bool | None = None,
          time_limit_s: float | None = None) -> RunSummary:
    """Train (or resume) a run; see :class:`Trainer` for the arguments.

    ``config``: a :class:`TrainConfig` or a TOML path (``None`` when resuming).
    ``indexes``: extra task-index files (added to ``data.indexes``).
    ``run_dir``: run directory (default ``runs/<name>-<timestamp>``; required to resume).
    ``synthetic_generator``: replaces ``generate_synthetic_task`` (tests, custom tasks).
    ``index``: an already opened task index (instead of files).
    ``stop_after``: stop, as if interrupted, once this many steps are done.
    ``time_limit_s``: stop, as if interrupted (last checkpoint saved), once this session
    has trained for this many seconds (a cluster job's wall-clock limit, say).
    """
    trainer = Trainer(config, indexes, run_dir, resume, synthetic_generator=synthetic_generator,
                      index=index, stop_after=stop_after, progress=progress,
                      time_limit_s=time_limit_s)
    return trainer.run()


def _check_new_run_dir(run_dir: Path) -> None:
    """ConfigError unless a run directory can be created (or used) at ``run_dir``."""
    from incontext.atomic import OutputFolderError, check_output_folder

    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: is a file, not a run directory; choose another --out")
    try:
        check_output_folder(run_dir)
    except OutputFolderError as exc:
        raise ConfigError(f"run directory {exc}") from None


def _load_init_weights(model: nn.Module, path: str) -> None:
    """Copy the weights of a saved UniverSeg (same widths, any resolution) into ``model``.

    The network is fully convolutional, so weights trained at one resolution are a valid
    start at another (e.g. fine-tuning a 64-px model at 128 px).
    """
    from incontext.models.io import WeightsError, load

    try:
        source = load(path)
    except WeightsError as exc:
        raise ConfigError(f"model.init: {exc}") from None
    own, theirs = model.state_dict(), source.state_dict()
    if type(source) is not type(model) or own.keys() != theirs.keys() or any(
            own[k].shape != theirs[k].shape for k in own):
        raise ConfigError(f"{path}: [model] init weights do not fit this model (need a "
                          f"{type(model).__name__} with the same widths)")
    model.load_state_dict(theirs)
