"""A compact training loop for :class:`TextDriven` on multi-label data with partial labels.

Each dataset annotates its own classes; a class is the prompt "A {modality} image of a
{label}" of its dataset. A batch mixes images of several datasets; the model predicts
every class annotated anywhere in the batch, and the loss (BCE + soft Dice) covers only
the (image, class) pairs whose dataset annotates that class, so unannotated classes get
no gradient. Hybrid models also see support examples (images of the same dataset) for a
fraction of the batches, sometimes with the text dropped, so text only, examples only
and both all work at inference.

``python -m incontext.text.train configs/text-driven-cpu.toml`` trains from a config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from incontext.atomic import atomic_write_text
from incontext.models.text_driven import TextDriven, TextDrivenConfig
from incontext.text.base import format_prompt, get_text_encoder
from incontext.text.cache import EmbeddingCache, embed_prompts

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


# ---------------------------------------------------------------------------- data

@dataclass
class MultiLabelData:
    """Images with masks for every class of a shared vocabulary and which ones are annotated.

    images (N, H, W) float32 in [0, 1]; masks (N, K, H, W) uint8; annotated (K,) per
    dataset -> ``dataset`` (N,) int index into ``dataset_names`` and
    ``dataset_classes[d]`` the class ids dataset ``d`` annotates; ``prompts`` (K,).
    """

    images: np.ndarray
    masks: np.ndarray
    dataset: np.ndarray
    dataset_names: list[str]
    dataset_classes: list[list[int]]
    prompts: list[str]
    class_labels: list[str]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 3 or self.masks.shape[:1] != (n,) or self.dataset.shape != (n,):
            raise ValueError(f"MultiLabelData: inconsistent shapes images {self.images.shape}, "
                             f"masks {self.masks.shape}, dataset {self.dataset.shape}")
        if self.masks.shape[1] != len(self.prompts):
            raise ValueError(f"MultiLabelData: {self.masks.shape[1]} mask channels for "
                             f"{len(self.prompts)} prompts")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def annotated(self) -> np.ndarray:
        """(N, K) bool: class k is annotated for image i."""
        table = np.zeros((len(self.dataset_names), len(self.prompts)), dtype=bool)
        for d, classes in enumerate(self.dataset_classes):
            table[d, classes] = True
        return table[self.dataset]

    @classmethod
    def from_arrays(cls, images: np.ndarray, masks: np.ndarray, class_names: Sequence[str],
                    modality_name: str = "other", dataset_name: str = "data",
                    template: str = "A {modality} image of a {label}") -> MultiLabelData:
        """One dataset: images (N, H, W) in [0, 1], masks (N, L, H, W) for ``class_names``."""
        images = np.asarray(images, dtype=np.float32)
        masks = np.asarray(masks).astype(np.uint8)
        prompts = [format_prompt(c, modality_name, template) for c in class_names]
        return cls(images, masks, np.zeros(len(images), dtype=np.int64), [dataset_name],
                   [list(range(len(class_names)))], prompts, list(class_names))

    @classmethod
    def concat(cls, parts: Sequence[MultiLabelData]) -> MultiLabelData:
        """Merge datasets; classes with the same prompt are shared."""
        if not parts:
            raise ValueError("MultiLabelData.concat: nothing to merge")
        prompts: list[str] = []
        labels: list[str] = []
        for p in parts:
            for prompt, label in zip(p.prompts, p.class_labels, strict=True):
                if prompt not in prompts:
                    prompts.append(prompt)
                    labels.append(label)
        n = sum(len(p) for p in parts)
        h, w = parts[0].images.shape[1:]
        masks = np.zeros((n, len(prompts), h, w), dtype=np.uint8)
        images, dataset, names, classes = [], [], [], []
        start = 0
        for p in parts:
            if p.images.shape[1:] != (h, w):
                raise ValueError("MultiLabelData.concat: image sizes differ "
                                 f"({p.images.shape[1:]} vs {(h, w)})")
            ids = [prompts.index(x) for x in p.prompts]
            masks[start:start + len(p), ids] = p.masks
            images.append(p.images)
            dataset.append(p.dataset + len(names))
            names.extend(p.dataset_names)
            classes.extend([[ids[c] for c in cl] for cl in p.dataset_classes])
            start += len(p)
        return cls(np.concatenate(images), masks, np.concatenate(dataset), names, classes,
                   prompts, labels)

    @classmethod
    def from_index(cls, path: str | os.PathLike, split: str, *,
                   datasets: Sequence[str] | None = None, max_slices: int = 0,
                   seed: int = 0, template: str = "A {modality} image of a {label}"
                   ) -> MultiLabelData:
        """All selected slices of ``split`` of each dataset group of an index file.

        ``max_slices`` > 0 keeps a random subset per dataset (seeded).
        """
        from incontext.data.index_format import open_h5, read_group_meta, resolve_paths

        if split not in SPLIT_CODES:
            raise ValueError(f"unknown split {split!r} (use {sorted(SPLIT_CODES)})")
        parts = []
        rng = np.random.default_rng(seed)
        for file in resolve_paths(path):
            with open_h5(file) as f:
                for key in sorted(f["datasets"]):
                    g = f["datasets"][key]
                    meta = read_group_meta(file, g)
                    if datasets and meta.name not in datasets:
                        continue
                    rows = np.flatnonzero(meta.selected.any(axis=1)
                                          & (meta.split == SPLIT_CODES[split]))
                    if rows.size == 0:
                        continue
                    if max_slices and rows.size > max_slices:
                        rows = np.sort(rng.choice(rows, max_slices, replace=False))
                    raw = g["images"][rows]
                    images = (raw.astype(np.float32) / 255.0 if raw.dtype == np.uint8
                              else raw.astype(np.float32))
                    masks = g["masks"][rows]
                    name = str(meta.attrs.get("modality_name", meta.attrs.get("modality",
                                                                                "other")))
                    parts.append(cls.from_arrays(images, masks, meta.label_names, name,
                                                 meta.name, template))
        if not parts:
            raise ValueError(f"{path}: no slices in split {split!r}"
                             + (f" for datasets {list(datasets)}" if datasets else ""))
        return cls.concat(parts)


# ---------------------------------------------------------------------------- loss

def partial_label_loss(logits: torch.Tensor, targets: torch.Tensor, annotated: torch.Tensor,
                       dice_weight: float = 1.0, bce_weight: float = 1.0,
                       eps: float = 1.0) -> torch.Tensor:
    """BCE + soft Dice over the annotated (image, class) pairs only.

    logits/targets (B, K, H, W); annotated (B, K) bool. Pairs that are not annotated
    are dropped before the loss, so they get exactly zero gradient.
    """
    if logits.shape != targets.shape or annotated.shape != logits.shape[:2]:
        raise ValueError(f"partial_label_loss: shapes logits {tuple(logits.shape)}, targets "
                         f"{tuple(targets.shape)}, annotated {tuple(annotated.shape)}")
    sel = annotated.bool()
    if not bool(sel.any()):
        return logits.sum() * 0.0
    x = logits[sel].float().flatten(1)
    t = targets[sel].float().flatten(1)
    bce = F.binary_cross_entropy_with_logits(x, t)
    p = torch.sigmoid(x)
    dice = 1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)
    return bce_weight * bce + dice_weight * dice.mean()


# ---------------------------------------------------------------------------- config

@dataclass
class TextTrainConfig:
    """Training settings (the ``[train]`` table of the TOML config).

    ``index``: an index file, a manifest, or a list of them; ``datasets``: dataset names to
    use (empty = all); ``*_max_slices``: random cap per dataset (0 = all).
    """

    index: str | list[str] = ""
    datasets: list[str] = field(default_factory=list)
    out: str = "runs/text-driven"
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    support_size: int = 2
    p_support: float = 0.5
    p_text_drop: float = 0.3
    eval_every: int = 200
    val_max_slices: int = 64
    train_max_slices: int = 0
    seed: int = 0
    threads: int = 1
    embedding_cache: str = ""
    init: str = ""  # start from these TextDriven weights (.safetensors) instead of scratch


def load_config(path: str | os.PathLike) -> tuple[TextDrivenConfig, TextTrainConfig]:
    """Read ``[model]`` (TextDrivenConfig fields) and ``[train]`` from a TOML file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read config ({exc})") from exc
    unknown = set(data) - {"model", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown tables {sorted(unknown)} (use [model], [train])")
    try:
        model = TextDrivenConfig.from_dict(dict(data.get("model", {})))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: [model]: {exc}") from exc
    fields = {f.name for f in dataclasses.fields(TextTrainConfig)}
    bad = set(data.get("train", {})) - fields
    if bad:
        raise ValueError(f"{path}: [train]: unknown keys {sorted(bad)}")
    return model, TextTrainConfig(**data.get("train", {}))


# ---------------------------------------------------------------------------- batches

class Batcher:
    """Random mixed batches (images, targets, annotated, support) from :class:`MultiLabelData`."""

    def __init__(self, data: MultiLabelData, support_size: int, seed: int) -> None:
        self.data = data
        self.support_size = support_size
        self.rng = np.random.default_rng(seed)
        self.by_dataset = [np.flatnonzero(data.dataset == d)
                           for d in range(len(data.dataset_names))]
        self.by_dataset_nonempty = [d for d, rows in enumerate(self.by_dataset) if rows.size]
        self.annotated = data.annotated

    def sample(self, batch_size: int, with_support: bool) -> dict[str, torch.Tensor]:
        ds = self.rng.choice(self.by_dataset_nonempty, batch_size)
        rows = np.array([self.rng.choice(self.by_dataset[d]) for d in ds])
        classes = np.flatnonzero(self.annotated[rows].any(axis=0))
        out = {
            "rows": torch.from_numpy(rows),
            "classes": torch.from_numpy(classes),
            "images": torch.from_numpy(self.data.images[rows][:, None]),
            "targets": torch.from_numpy(self.data.masks[rows][:, classes].astype(np.float32)),
            "annotated": torch.from_numpy(self.annotated[rows][:, classes]),
        }
        if with_support and self.support_size > 0:
            sup = []
            for r, d in zip(rows, ds, strict=True):
                pool = self.by_dataset[d][self.by_dataset[d] != r]
                if pool.size == 0:
                    pool = self.by_dataset[d]
                sup.append(self.rng.choice(pool, self.support_size, replace=pool.size
                                           < self.support_size))
            sup = np.stack(sup)  # (B, S)
            out["support_images"] = torch.from_numpy(self.data.images[sup][:, :, None])
            out["support_labels"] = torch.from_numpy(
                self.data.masks[sup][:, :, classes].astype(np.float32))
        return out


# ---------------------------------------------------------------------------- evaluation

@torch.no_grad()
def evaluate(model: TextDriven, data: MultiLabelData, text: torch.Tensor, *,
             mode: str = "text", support_size: int = 2, batch_size: int = 8,
             seed: int = 0) -> dict[str, float]:
    """Per-class Dice (aggregated over all annotated images of the class) -> {prompt: Dice}.

    mode: "text" (names only), "support" (examples only) or "both".
    """
    if mode not in ("text", "support", "both"):
        raise ValueError(f"unknown mode {mode!r}")
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    annotated = data.annotated
    k = len(data.prompts)
    inter = np.zeros(k)
    total = np.zeros(k)
    try:
        for d in range(len(data.dataset_names)):
            rows = np.flatnonzero(data.dataset == d)
            classes = np.asarray(data.dataset_classes[d])
            if rows.size == 0 or classes.size == 0:
                continue
            t = text[classes]
            kwargs = {}
            if mode != "text":
                sup = rng.choice(rows, min(support_size, rows.size), replace=False)
                kwargs["support_images"] = torch.from_numpy(data.images[sup][None, :, None])
                kwargs["support_labels"] = torch.from_numpy(
                    data.masks[sup][None][:, :, classes].astype(np.float32))
                rows = np.setdiff1d(rows, sup) if rows.size > sup.size else rows
            present = torch.full((classes.size,), mode != "support", dtype=torch.bool)
            for start in range(0, rows.size, batch_size):
                r = rows[start:start + batch_size]
                x = torch.from_numpy(data.images[r][:, None])
                pred = (model(x, t, text_present=present, **kwargs) > 0).numpy()
                gt = data.masks[r][:, classes] > 0
                inter[classes] += (pred & gt).sum(axis=(0, 2, 3))
                total[classes] += pred.sum(axis=(0, 2, 3)) + gt.sum(axis=(0, 2, 3))
    finally:
        model.train(was_training)
    used = annotated.any(axis=0)
    return {data.prompts[i]: (float(2 * inter[i] / total[i]) if total[i] else 1.0)
            for i in range(k) if used[i]}


# ---------------------------------------------------------------------------- training

def _atomic_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def embed_vocabulary(model_config: TextDrivenConfig, prompts: Sequence[str],
                     cache: EmbeddingCache | None = None) -> torch.Tensor:
    """(K, text_dim) embeddings of the prompts with the config's encoder."""
    encoder = get_text_encoder(model_config.text_encoder, **model_config.text_encoder_options)
    if encoder.dim != model_config.text_dim:
        raise ValueError(f"text encoder {encoder.name!r} gives {encoder.dim}-d embeddings, "
                         f"[model] text_dim is {model_config.text_dim}")
    return torch.from_numpy(embed_prompts(encoder, list(prompts), cache))


STATE_FILE = "last-state.pt"


def _save_state(path: Path, step: int, model: TextDriven, opt, sched, batcher: Batcher,
                rng: np.random.Generator, history: list[dict], best_dice: float) -> None:
    """Everything needed to continue at ``step``, written atomically (tensors + plain data)."""
    from incontext.atomic import atomic_write

    state = {"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
             "sched": sched.state_dict(),
             "batcher_rng": json.dumps(batcher.rng.bit_generator.state),
             "rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
             "history": json.dumps(history), "best_dice": float(best_dice)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def train(model_config: TextDrivenConfig, cfg: TextTrainConfig, train_data: MultiLabelData,
          val_data: MultiLabelData | None = None, *, progress: bool = True,
          save_path: str | os.PathLike | None = None, resume: bool = False,
          stop_after: int | None = None) -> tuple[TextDriven, list[dict]]:
    """Train a TextDriven model; returns it (best validation state) and the history.

    Validation (text-only mean Dice over the classes) runs every ``eval_every`` steps
    and at the end; with ``save_path`` the best model is saved there (safetensors) and,
    beside it, ``last-state.pt`` (model, optimiser, schedule, random states) at every
    validation. ``resume=True`` continues from that state exactly where it stopped.
    ``stop_after`` ends this call after that many steps in total (the run can resume).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(cfg.seed)
    model = TextDriven(model_config)
    if cfg.init:
        from incontext.models.io import load

        start = load(cfg.init)
        if not isinstance(start, TextDriven) or start.config.to_dict() != model_config.to_dict():
            raise ValueError(f"{cfg.init}: init weights do not match the [model] config")
        model.load_state_dict(start.state_dict())
    cache = EmbeddingCache(cfg.embedding_cache) if cfg.embedding_cache else EmbeddingCache()
    text_train = embed_vocabulary(model_config, train_data.prompts, cache)
    text_val = (embed_vocabulary(model_config, val_data.prompts, cache)
                if val_data is not None else None)
    if cache.path is not None and cache.dirty:
        cache.save()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, cfg.steps // 20))
        * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / max(1, cfg.steps))))
    batcher = Batcher(train_data, cfg.support_size, cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    history: list[dict] = []
    best = (-1.0, None)
    start_step = 1
    state_path = Path(save_path).with_name(STATE_FILE) if save_path is not None else None
    if resume:
        from incontext.models.io import load

        if state_path is None or not state_path.exists():
            raise ValueError(f"{state_path}: no saved state to resume from")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: one clear error
            raise ValueError(f"{state_path}: cannot read the saved state ({exc})") from None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        batcher.rng.bit_generator.state = json.loads(state["batcher_rng"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        history = json.loads(state["history"])
        if Path(save_path).exists() and state["best_dice"] >= 0:
            best = (state["best_dice"], load(save_path).state_dict())
        start_step = int(state["step"]) + 1
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)

    def validate(step: int, loss: float) -> None:
        nonlocal best
        entry = {"step": step, "loss": loss, "seconds": time.perf_counter() - t0}
        improved = False
        if val_data is not None and text_val is not None:
            dice = evaluate(model, val_data, text_val)
            entry["val_dice"] = dice
            entry["val_mean_dice"] = float(np.mean(list(dice.values()))) if dice else 0.0
            if entry["val_mean_dice"] > best[0]:
                improved = True
                best = (entry["val_mean_dice"],
                        {k: v.detach().clone() for k, v in model.state_dict().items()})
        history.append(entry)
        if save_path is not None:
            # a killed run still leaves its best model, the history and a state to resume
            _atomic_json(Path(save_path).with_name("history.json"), history)
            if improved and step > 0:
                _save(model, best[1], save_path, cfg, train_data, best[0])
            _save_state(state_path, step, model, opt, sched, batcher, rng, history, best[0])
        if not progress:
            mean = entry.get("val_mean_dice")
            print(f"step {step}/{cfg.steps} loss {loss:.4f}"
                  + (f" val mean Dice {mean:.4f}" if mean is not None else "")
                  + f" ({entry['seconds']:.0f} s)", flush=True)

    columns = [TextColumn("[bold]text-driven"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    running = history[-1]["loss"] if start_step > 1 and history else None
    if running is not None and not math.isfinite(running):
        running = None
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=cfg.steps, info="", completed=start_step - 1)
        if val_data is not None and start_step == 1:
            validate(0, float("nan"))  # the untrained baseline
        model.train()
        last_step = cfg.steps if stop_after is None else min(cfg.steps, int(stop_after))
        for step in range(start_step, last_step + 1):
            with_support = model_config.hybrid and rng.random() < cfg.p_support
            batch = batcher.sample(cfg.batch_size, with_support)
            text = text_train[batch["classes"]]
            present = None
            if with_support and rng.random() < cfg.p_text_drop:
                present = torch.zeros(text.shape[0], dtype=torch.bool)
            logits = model(batch["images"], text, batch.get("support_images"),
                           batch.get("support_labels"), text_present=present)
            loss = partial_label_loss(logits, batch["targets"], batch["annotated"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            if step % max(1, cfg.eval_every) == 0 or step in (cfg.steps, last_step):
                validate(step, running)
                last = history[-1].get("val_mean_dice")
                info = f"loss {running:.3f}" + (f" val Dice {last:.3f}" if last is not None else "")
                bar.update(task, info=info)
            bar.update(task, advance=1)
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    if save_path is not None:
        _save(model, None, save_path, cfg, train_data,
              best[0] if best[1] is not None else None)
    return model, history


def _save(model: TextDriven, state: dict | None, path: str | os.PathLike,
          cfg: TextTrainConfig, train_data: MultiLabelData, best_dice: float | None) -> None:
    """Save ``model`` (with ``state`` loaded into a copy when given) and its provenance."""
    import copy

    from incontext.models.io import save

    if state is not None:
        model = copy.deepcopy(model)
        model.load_state_dict(state)
    save(model, Path(path), provenance={
        "trainer": "incontext.text.train", "steps": cfg.steps,
        "datasets": train_data.dataset_names, "prompts": train_data.prompts,
        "best_val_mean_dice": best_dice, "init": cfg.init or None})


def resume_run(run_dir: str | os.PathLike, *, progress: bool | None = None,
               stop_after: int | None = None) -> dict:
    """Continue the text-driven run in ``run_dir`` (its ``config.json``) from its saved state."""
    run_dir = Path(run_dir)
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        model_cfg = TextDrivenConfig.from_dict(saved["model"])
        cfg = TextTrainConfig(**saved["train"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{run_dir}: not a text-driven run directory ({exc})") from None
    cfg.out = str(run_dir)
    return _run(model_cfg, cfg, progress, resume=True, stop_after=stop_after)


def is_text_run(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a text-driven run (``config.json`` with model + train)."""
    try:
        saved = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"model", "train"} <= set(saved)


def run_from_config(config: str | os.PathLike, *, index: Sequence[str] | str | None = None,
                    steps: int | None = None, out: str | os.PathLike | None = None,
                    progress: bool | None = None, init: str | None = None,
                    stop_after: int | None = None) -> dict:
    """Train from a TOML config (``[model]`` + ``[train]``); returns the run summary.

    ``index``/``steps``/``out``/``init`` override the config. Writes ``model.safetensors``
    (+ JSON), ``history.json``, ``summary.json``, ``config.json`` and ``last-state.pt`` (for
    :func:`resume_run`) to the output directory.
    """
    model_cfg, cfg = load_config(config)
    if index:
        cfg.index = [str(i) for i in index] if not isinstance(index, str) else index
    if steps:
        cfg.steps = int(steps)
    if out:
        cfg.out = str(out)
    if init:
        cfg.init = str(init)
    if not cfg.index:
        raise ValueError(f"{config}: [train] index is empty; give --index")
    return _run(model_cfg, cfg, progress, resume=False, stop_after=stop_after)


def _run(model_cfg: TextDrivenConfig, cfg: TextTrainConfig, progress: bool | None, *,
         resume: bool, stop_after: int | None) -> dict:
    import sys

    if progress is None:
        progress = sys.stdout.isatty()
    torch.set_num_threads(max(1, cfg.threads))
    train_data = MultiLabelData.from_index(cfg.index, "train", datasets=cfg.datasets or None,
                                           max_slices=cfg.train_max_slices, seed=cfg.seed)
    val_data = MultiLabelData.from_index(cfg.index, "val", datasets=cfg.datasets or None,
                                         max_slices=cfg.val_max_slices, seed=cfg.seed)
    if train_data.images.shape[-1] != model_cfg.resolution:
        raise ValueError(f"{cfg.index}: slices are {train_data.images.shape[-1]} px, [model] "
                         f"resolution is {model_cfg.resolution}")
    out_dir = Path(cfg.out)
    if not resume and (out_dir / STATE_FILE).exists():
        raise ValueError(f"{out_dir}: holds a run already; resume it (incontext train "
                         "--resume DIR) or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_json(out_dir / "config.json", {"model": model_cfg.to_dict(),
                                           "train": dataclasses.asdict(cfg)})
    model, history = train(model_cfg, cfg, train_data, val_data, progress=progress,
                           save_path=out_dir / "model.safetensors", resume=resume,
                           stop_after=stop_after)
    _atomic_json(out_dir / "history.json", history)
    best = max((h.get("val_mean_dice", -1) for h in history), default=None)
    summary = {"best_val_mean_dice": best, "train_slices": len(train_data),
               "datasets": train_data.dataset_names, "classes": len(train_data.prompts),
               "final": history[-1] if history else {}}
    _atomic_json(out_dir / "summary.json", summary)
    print(f"done: {len(train_data)} train slices, {len(train_data.prompts)} classes; "
          f"best val mean Dice {best}; model -> {out_dir / 'model.safetensors'}")
    return summary


def is_text_config(path: str | os.PathLike) -> bool:
    """True when a TOML config is a TextDriven config (has a top-level ``[train]`` table)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return "train" in data and "data" not in data


def main(argv: list[str] | None = None) -> int:
    """``python -m incontext.text.train CONFIG [--index ...] [--steps N] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m incontext.text.train",
                                     description="Train a TextDriven model on an index.")
    parser.add_argument("config", type=Path)
    parser.add_argument("--index", nargs="+", default=None,
                        help="index file(s) or manifest(s); overrides [train] index")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-progress", action="store_true",
                        help="plain log lines instead of a progress bar")
    parser.add_argument("--init", default=None,
                        help="start from these TextDriven weights (a new schedule), e.g. to "
                             "continue a finished run")
    args = parser.parse_args(argv)
    try:
        run_from_config(args.config, index=args.index, steps=args.steps, out=args.out,
                        progress=False if args.no_progress else None, init=args.init)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
