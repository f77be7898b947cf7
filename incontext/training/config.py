"""Training configuration: TOML file -> nested dataclasses, validated key by key.

Every error names the offending key (``data.support_size``) and, when loaded
from a file, the file. ``config_to_toml`` writes a config back as TOML so a
run directory always holds the exact, fully resolved configuration.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration problem; the message names the file (if any) and the key."""


@dataclass
class ModelConfig:
    """UniverSeg architecture (fields of :class:`incontext.models.UniverSegConfig`)."""

    encoder_widths: tuple[int, ...] = (64, 64, 64, 64)
    decoder_widths: tuple[int, ...] | None = None
    resolution: int = 128
    init: str = ""  # start from these weights (.safetensors, same widths; any resolution)


@dataclass
class DataConfig:
    """Episode sampling.

    ``support_size`` is an int or ``[min, max]`` (drawn uniformly per step).
    ``synthetic_ratio`` is the fraction of episodes drawn from on-the-fly
    synthetic tasks (1.0 when no index is given); ``tile_crop_p`` of the index episodes
    are cut to one position-matched tile of a twice-as-large image, the input of
    ``segment(tiles=2)`` (:func:`incontext.training.sources.tile_crop_episode`);
    ``synthetic_thin_ratio`` of the synthetic ones come
    from thin-structure tasks (curvilinear networks, small round objects;
    ``data_recipes.synthetic_thin``). Validation holds ``synthetic_val_tasks`` blob tasks
    and ``synthetic_thin_val_tasks`` thin tasks (default 0, so older runs stay
    comparable), whatever the training ratios. ``workers`` > 0 samples and
    augments batches in that many background processes (faster on an accelerator;
    resumes do not replay the uninterrupted run bit for bit, see training.loader).
    """

    indexes: tuple[str, ...] = ()
    batch_size: int = 4
    support_size: int | tuple[int, int] = (4, 16)
    synthetic_ratio: float = 0.0
    synthetic_thin_ratio: float = 0.0  # share of synthetic episodes from thin-structure tasks
    dataset_weights: dict[str, float] = field(default_factory=dict)
    # share of colour datasets' training episodes rendered red, green, blue or Fisher mix
    colour_render_p: float = 0.0
    # share of index training episodes cut to one position-matched tile (what tiles=2 sees)
    tile_crop_p: float = 0.0
    skip_empty: bool = True
    train_split: str = "train"
    val_split: str = "val"
    synthetic_tasks: int = 1000
    synthetic_val_tasks: int = 20
    synthetic_thin_val_tasks: int = 0  # thin-structure tasks held back for validation
    synthetic_subjects: int = 32
    synthetic_seed: int = 0
    synthetic_cache: int = 256
    workers: int = 0  # background processes that sample and augment batches (0: in-process)
    val_support_size: int = 8
    val_queries: int = 4
    val_episodes_per_task: int = 1
    val_max_tasks: int = 0
    val_seed: int = 1234


@dataclass
class TaskAugmentConfig:
    """Task-level augmentation: one draw applied identically to query and support.

    Each ``*_p`` is a probability; ranges are ``[low, high]``. ``intensity_curve_p``
    passes every image of the episode through one random piecewise-linear intensity
    curve (``intensity_curve_knots`` evenly spaced knots, values uniform in [0, 1], so
    usually non-monotone): an appearance no other transform here produces. Off by default.
    """

    intensity_curve_p: float = 0.0
    intensity_curve_knots: tuple[int, int] = (3, 8)
    intensity_flip_p: float = 0.5
    label_flip_p: float = 0.5
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    sobel_edges_p: float = 0.5
    affine_p: float = 0.5
    rotate: tuple[float, float] = (0.0, 360.0)
    translate: tuple[float, float] = (-0.2, 0.2)
    scale: tuple[float, float] = (0.8, 1.1)
    brightness_contrast_p: float = 0.5
    brightness: tuple[float, float] = (-0.1, 0.1)
    contrast: tuple[float, float] = (0.8, 1.2)
    elastic_p: float = 0.25
    elastic_alpha: tuple[float, float] = (1.0, 2.0)
    elastic_sigma: tuple[float, float] = (6.0, 8.0)
    blur_p: float = 0.5
    blur_kernel: int = 5
    blur_sigma: tuple[float, float] = (0.1, 1.1)
    noise_p: float = 0.5
    noise_mean: tuple[float, float] = (0.0, 0.05)
    noise_var: tuple[float, float] = (0.0, 0.05)
    sharpness_p: float = 0.5
    sharpness_alpha: tuple[float, float] = (0.2, 0.5)


@dataclass
class InTaskAugmentConfig:
    """In-task augmentation: drawn independently for every query and support entry."""

    affine_p: float = 0.5
    rotate: tuple[float, float] = (0.0, 360.0)
    translate: tuple[float, float] = (-0.2, 0.2)
    scale: tuple[float, float] = (0.8, 1.1)
    brightness_contrast_p: float = 0.25
    brightness: tuple[float, float] = (-0.1, 0.1)
    contrast: tuple[float, float] = (0.5, 1.5)
    elastic_p: float = 0.8
    elastic_alpha: tuple[float, float] = (1.0, 2.5)
    elastic_sigma: tuple[float, float] = (7.0, 8.0)
    blur_p: float = 0.25
    blur_kernel: int = 5
    blur_sigma: tuple[float, float] = (0.1, 1.1)
    noise_p: float = 0.25
    noise_mean: tuple[float, float] = (0.0, 0.05)
    noise_var: tuple[float, float] = (0.0, 0.05)
    sharpness_p: float = 0.25
    sharpness_alpha: tuple[float, float] = (0.2, 0.5)


@dataclass
class AugmentConfig:
    enabled: bool = True
    task: TaskAugmentConfig = field(default_factory=TaskAugmentConfig)
    in_task: InTaskAugmentConfig = field(default_factory=InTaskAugmentConfig)


@dataclass
class OptimConfig:
    """Adam, gradient clipping (``grad_clip = 0`` disables) and loss weights."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dice_weight: float = 1.0
    bce_weight: float = 1.0


@dataclass
class ScheduleConfig:
    """Linear warm-up to ``optim.lr``, then cosine decay to ``min_lr_ratio * lr``."""

    warmup_steps: int = 100
    min_lr_ratio: float = 0.0


@dataclass
class RunConfig:
    """Loop cadence and execution options. ``device``: "auto", "cpu", "cuda" or "cuda:N"."""

    val_every: int = 500
    validate_at_start: bool = True
    checkpoint_every: int = 500
    log_every: int = 10
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    progress: bool = True


@dataclass
class TrainConfig:
    """A whole training run."""

    name: str = "run"
    seed: int = 0
    steps: int = 1000
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# ----------------------------------------------------------------------------- parsing


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a TOML training config."""
    path = Path(path)
    text = read_config_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data, source=str(path))


def read_config_text(path: Path) -> str:
    """The text of a config file; FileNotFoundError or ConfigError naming ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a TOML config is expected)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    return text


def config_from_dict(data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a validated :class:`TrainConfig` from nested plain data (TOML tables)."""
    try:
        config = _build(TrainConfig, data, "")
        _check_values(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {' or '.join(_type_name(a) for a in args)}, "
                          f"got {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{key}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return {str(k): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover


def _check_values(cfg: TrainConfig) -> None:
    def positive(value: float, key: str, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value}")

    def prob(value: float, key: str) -> None:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key} must be a probability in [0, 1], got {value}")

    def ordered(pair: tuple, key: str) -> None:
        if pair[0] > pair[1]:
            raise ConfigError(f"{key} must be [low, high] with low <= high, got {list(pair)}")

    positive(cfg.steps, "steps")
    m = cfg.model
    if not m.encoder_widths:
        raise ConfigError("model.encoder_widths must not be empty")
    for i, w in enumerate(m.encoder_widths):
        positive(w, f"model.encoder_widths[{i}]")
    if m.decoder_widths is not None and len(m.decoder_widths) != len(m.encoder_widths) - 1:
        raise ConfigError(f"model.decoder_widths needs {len(m.encoder_widths) - 1} entries "
                          f"(one per skip connection), got {len(m.decoder_widths)}")
    multiple = 2 ** (len(m.encoder_widths) - 1)
    if m.resolution <= 0 or m.resolution % multiple:
        raise ConfigError(f"model.resolution must be a positive multiple of {multiple}, "
                          f"got {m.resolution}")
    d = cfg.data
    positive(d.batch_size, "data.batch_size")
    sizes = (d.support_size,) * 2 if isinstance(d.support_size, int) else d.support_size
    positive(sizes[0], "data.support_size")
    ordered(sizes, "data.support_size")
    prob(d.synthetic_ratio, "data.synthetic_ratio")
    prob(d.synthetic_thin_ratio, "data.synthetic_thin_ratio")
    prob(d.colour_render_p, "data.colour_render_p")
    prob(d.tile_crop_p, "data.tile_crop_p")
    for k, v in d.dataset_weights.items():
        positive(v, f"data.dataset_weights.{k}", allow_zero=True)
    for key in ("synthetic_tasks", "synthetic_subjects", "synthetic_cache", "val_support_size",
                "val_queries", "val_episodes_per_task"):
        positive(getattr(d, key), f"data.{key}")
    positive(d.synthetic_val_tasks, "data.synthetic_val_tasks", allow_zero=True)
    positive(d.synthetic_thin_val_tasks, "data.synthetic_thin_val_tasks", allow_zero=True)
    positive(d.val_max_tasks, "data.val_max_tasks", allow_zero=True)
    positive(d.workers, "data.workers", allow_zero=True)
    if d.synthetic_subjects < 2:
        raise ConfigError("data.synthetic_subjects must be >= 2 (one support + one query)")
    for section, aug in (("augment.task", cfg.augment.task),
                         ("augment.in_task", cfg.augment.in_task)):
        for f in dataclasses.fields(aug):
            value = getattr(aug, f.name)
            key = f"{section}.{f.name}"
            if f.name.endswith("_p"):
                prob(value, key)
            elif isinstance(value, tuple):
                ordered(value, key)
        knots = getattr(aug, "intensity_curve_knots", (2, 2))
        if knots[0] < 2:
            raise ConfigError(f"{section}.intensity_curve_knots must be >= 2, got {list(knots)}")
        if aug.blur_kernel < 3 or aug.blur_kernel % 2 == 0:
            raise ConfigError(f"{section}.blur_kernel must be an odd integer >= 3, "
                              f"got {aug.blur_kernel}")
        if aug.elastic_sigma[0] <= 0:
            raise ConfigError(f"{section}.elastic_sigma must be > 0")
        if aug.noise_var[0] < 0:
            raise ConfigError(f"{section}.noise_var must be >= 0")
        if aug.scale[0] <= 0:
            raise ConfigError(f"{section}.scale must be > 0")
    o = cfg.optim
    positive(o.lr, "optim.lr")
    positive(o.weight_decay, "optim.weight_decay", allow_zero=True)
    positive(o.grad_clip, "optim.grad_clip", allow_zero=True)
    positive(o.dice_weight, "optim.dice_weight", allow_zero=True)
    positive(o.bce_weight, "optim.bce_weight", allow_zero=True)
    if o.dice_weight == 0 and o.bce_weight == 0:
        raise ConfigError("optim.dice_weight and optim.bce_weight cannot both be 0")
    for i, b in enumerate(o.betas):
        if not 0 <= b < 1:
            raise ConfigError(f"optim.betas[{i}] must be in [0, 1), got {b}")
    positive(cfg.schedule.warmup_steps, "schedule.warmup_steps", allow_zero=True)
    prob(cfg.schedule.min_lr_ratio, "schedule.min_lr_ratio")
    r = cfg.run
    for key in ("val_every", "checkpoint_every", "log_every"):
        positive(getattr(r, key), f"run.{key}")
    if r.device != "auto" and r.device != "cpu" and not r.device.startswith("cuda"):
        raise ConfigError(f"run.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {r.device!r}")


# ----------------------------------------------------------------------------- writing


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return _toml_value(key)


def config_to_toml(config: TrainConfig) -> str:
    """The config as TOML text (``None`` values are omitted: they mean 'default')."""
    lines: list[str] = []

    def emit(table: dict, path: str) -> None:
        scalars = {k: v for k, v in table.items()
                   if v is not None and not (isinstance(v, dict) and k in nested_tables(table))}
        if path:
            lines.append(f"\n[{path}]")
        for k, v in scalars.items():
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k in nested_tables(table):
            emit(table[k], f"{path}.{k}" if path else k)

    def nested_tables(table: dict) -> list[str]:
        return [k for k, v in table.items() if isinstance(v, dict) and k not in _INLINE_DICTS]

    emit(config.to_dict(), "")
    return "\n".join(lines).lstrip("\n") + "\n"


_INLINE_DICTS = {"dataset_weights"}
