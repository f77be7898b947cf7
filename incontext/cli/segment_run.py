"""``incontext segment``: label 2D images or 3D NIfTI volumes from a few labeled examples.

Supports come from ``--support IMG:LABEL`` pairs, a ``--support-dir`` (images/ + labels/,
or an nnU-Net dataset) or a task index (``--support-index INDEX.h5 --task NAME``).
Queries are a file, a folder or a glob. Outputs go to ``--out``: a label map per
query (PNG for 2D, NIfTI on the query's exact grid for NIfTI input), optionally
overlays and uncertainty maps. See docs/segment.md.

The work behind ``incontext segment`` (its parser is in ``incontext.cli.segment``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from incontext.cli import CLIError
from incontext.io import (
    ImageReadError,
    LoadedImage,
    file_kind,
    list_image_files,
    load_image,
    probe_ndim,
    strip_image_suffix,
    write_nifti_like,
    write_png,
)
from incontext.io.files import check_writable
from incontext.io.supports import (
    LoadedSupport,
    SupportPair,
    find_support_pairs,
    load_support,
    parse_support_arg,
)
from incontext.postprocess import postprocess
from incontext.volumes import choose_axis, resolve_window, slice_steps

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                    [210, 245, 60], [250, 190, 212]], dtype=np.float32)


# ----------------------------------------------------------------------------- options


def parse_labels(text: str | None) -> list[int] | None:
    """``"1,2"`` -> [1, 2]."""
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--labels {text!r}: give comma-separated integers, e.g. 1,2") from None
    if not values or any(v == 0 for v in values):
        raise CLIError(f"--labels {text!r}: give non-zero label values (0 is background)")
    return sorted(set(values))


def _check_options(args: argparse.Namespace) -> None:
    n_src = sum(x is not None for x in (args.support, args.support_dir, args.support_index))
    if n_src != 1:
        raise CLIError("give the support set with one of --support, --support-dir or "
                       "--support-index")
    if args.support_index is not None and not args.task:
        raise CLIError("--support-index needs --task NAME")
    if args.ensemble < 1:
        raise CLIError(f"--ensemble must be >= 1, got {args.ensemble}")
    if args.support_size is not None and args.support_size < 1:
        raise CLIError(f"--support-size must be >= 1, got {args.support_size}")
    if args.min_size < 0:
        raise CLIError(f"--min-size must be >= 0, got {args.min_size}")
    if args.max_supports is not None and args.max_supports < 1:
        raise CLIError(f"--max-supports must be >= 1, got {args.max_supports}")
    if args.threshold not in (None, "auto") and not 0 < args.threshold < 1:
        raise CLIError(f"--threshold must be in (0, 1) or auto, got {args.threshold}")


# ----------------------------------------------------------------------------- supports


@dataclass
class SupportSet:
    images: list[np.ndarray]
    labels: list[np.ndarray]
    ndim: int
    names: list[str]
    spacings: list[tuple[float, ...] | None] = field(default_factory=list)
    normalized: bool = False  # images already in [0, 1] (index slices): no re-normalisation
    colours: list[np.ndarray | None] = field(default_factory=list)  # (H, W, 3) colour images

    def with_colour(self) -> list[np.ndarray]:
        """Images as given to ``segment(colour=...)``: R, G, B where known, else grey."""
        if not self.colours:
            return self.images
        return [g if c is None else c for g, c in zip(self.images, self.colours, strict=True)]


def _load_file_supports(pairs: Sequence[SupportPair]) -> SupportSet:
    loaded: list[LoadedSupport] = [load_support(p) for p in pairs]
    dims = {s.image.ndim for s in loaded}
    if len(dims) > 1:
        first = loaded[0]
        odd = next(s for s in loaded if s.image.ndim != first.image.ndim)
        raise CLIError(f"supports mix 2D and 3D: {odd.pair.image} is {odd.image.ndim}D but "
                       f"{first.pair.image} is {first.image.ndim}D")
    return SupportSet(images=[s.image.data for s in loaded], labels=[s.label for s in loaded],
                      ndim=dims.pop(), names=[str(s.pair.label) for s in loaded],
                      spacings=[s.image.nifti.spacing if s.image.nifti is not None else None
                                for s in loaded],
                      colours=[s.image.colour for s in loaded])


def _load_index_supports(path: str, task: str) -> SupportSet:
    try:
        from incontext.data import TaskIndex  # written alongside; imported lazily
    except ImportError:
        raise CLIError("--support-index needs incontext.data.TaskIndex, which this version "
                       "does not have") from None
    if not Path(path).exists():
        raise CLIError(f"--support-index {path}: file not found")
    index = TaskIndex.open(path)
    split = index.load_split(task, "train")
    rgb = index.load_split_colour(task, "train") if hasattr(index, "load_split_colour") else None
    if isinstance(split, tuple):
        images, labels = split[0], split[1]
    elif isinstance(split, dict):
        images, labels = split["images"], split.get("labels", split.get("masks"))
    else:
        images = split.images
        labels = getattr(split, "labels", None)
        labels = labels if labels is not None else split.masks
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.ndim == 4:  # (N, L, H, W) binary masks -> label map 1..L
        lab = np.zeros(labels.shape[:1] + labels.shape[2:], dtype=np.int64)
        for li in range(labels.shape[1]):
            lab[labels[:, li] > 0] = li + 1
        labels = lab
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if len(images) == 0:
        raise CLIError(f"--support-index {path}: task {task!r} has no training entries")
    return SupportSet(images=list(images.astype(np.float32)),
                      labels=list((labels > 0).astype(np.int64) if labels.max() <= 1 else labels),
                      ndim=2, names=[f"{path}:{task}[{i}]" for i in range(len(images))],
                      normalized=True,
                      colours=[] if rgb is None else list(np.moveaxis(rgb, 1, -1)))


def load_supports(args: argparse.Namespace) -> SupportSet:
    if args.support_index is not None:
        return _load_index_supports(args.support_index, args.task)
    if args.support is not None:
        pairs = [parse_support_arg(s) for s in args.support]
    else:
        pairs = find_support_pairs(args.support_dir)
        if args.max_supports is not None:
            pairs = pairs[: args.max_supports]
    return _load_file_supports(pairs)


def check_support_labels(supports: SupportSet, labels: list[int] | None) -> list[int]:
    """The label values to segment; errors for labels no support has, warnings per file."""
    present_per = [{int(v) for v in np.unique(lab) if v != 0} for lab in supports.labels]
    present = sorted(set().union(*present_per))
    for name, values in zip(supports.names, present_per, strict=True):
        if not values:
            warnings.warn(f"{name}: support label has no foreground", stacklevel=2)
    wanted = labels if labels is not None else present
    if not present:
        raise CLIError("no support label has any foreground: nothing to learn from "
                       f"({', '.join(supports.names[:3])}{', ...' if len(supports.names) > 3 else ''})")
    for value in wanted:
        lacking = [n for n, vals in zip(supports.names, present_per, strict=True)
                   if value not in vals]
        if len(lacking) == len(present_per):
            raise CLIError(f"label {value} has no foreground in any support label "
                           f"(e.g. {lacking[0]}); present values: {present}")
        if lacking and labels is not None:
            warnings.warn(f"label {value} has no foreground in {lacking[0]}"
                          + (f" and {len(lacking) - 1} other support(s)" if len(lacking) > 1
                             else ""), stacklevel=2)
    return wanted


# ----------------------------------------------------------------------------- outputs


def output_stem(query: Path) -> str:
    """Output name stem: the query's stem, nnU-Net ``_0000`` channel suffix removed."""
    stem = strip_image_suffix(query)
    if file_kind(query) == "nifti" and stem.endswith("_0000"):
        stem = stem[:-5]
    return stem


def planned_outputs(query: Path, out: Path, ndim: int, args: argparse.Namespace) -> list[Path]:
    stem = output_stem(query)
    nifti = file_kind(query) == "nifti"
    paths = []
    if nifti:
        paths.append(out / f"{stem}.nii.gz")
    if ndim == 2:
        paths.append(out / f"{stem}.png")
    if args.overlays:
        paths.append(out / f"{stem}_overlay.png")
    if args.uncertainty:
        paths.append(out / f"{stem}_uncertainty.png")
        if nifti:
            paths.append(out / f"{stem}_uncertainty.nii.gz")
    return paths


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.rint(scaled * 255).astype(np.uint8)


def overlay_rgb(image: np.ndarray, mask: np.ndarray, labels: Sequence[int],
                alpha: float = 0.45) -> np.ndarray:
    """Grey image (any range) + label map -> (H, W, 3) uint8 with coloured labels."""
    grey = _to_uint8(image).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for i, value in enumerate(labels):
        sel = mask == value
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * PALETTE[i % len(PALETTE)]
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def _centre(mask: np.ndarray) -> np.ndarray:
    fg = np.argwhere(mask != 0)
    return fg.mean(axis=0).round().astype(int) if fg.size else np.array(mask.shape) // 2


def _side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    extra = ((0, 0),) if panels[0].ndim == 3 else ()
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 2), *extra))
                           for p in panels], axis=1)


def _volume_overlay(volume: np.ndarray, mask: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Three orthogonal slices through the foreground centre (volume centre if empty)."""
    centre = _centre(mask)
    grey = _to_uint8(volume)
    return _side_by_side([overlay_rgb(np.take(grey, centre[a], axis=a),
                                      np.take(mask, centre[a], axis=a), labels)
                          for a in range(3)])


def _uncertainty_png(unc: np.ndarray) -> np.ndarray:
    """(L, ...) std in [0, 0.5] -> uint8 (255 = 0.5, the largest possible), max over labels."""
    top = unc.max(axis=0) if unc.shape[0] else np.zeros(unc.shape[1:])
    return np.rint(np.clip(top / 0.5, 0, 1) * 255).astype(np.uint8)


def write_outputs(query: LoadedImage, mask: np.ndarray, uncertainty: np.ndarray,
                  labels: list[int], out: Path, args: argparse.Namespace) -> None:
    stem = output_stem(query.path)
    ow = args.overwrite
    nii = query.nifti
    dtype = np.uint8 if max(labels) <= 255 and min(labels) >= 0 else np.int16
    if max(labels) > 32767:
        raise CLIError(f"label values up to {max(labels)} do not fit an int16 NIfTI")
    if nii is not None:
        write_nifti_like(out / f"{stem}.nii.gz", mask.reshape(nii.data.shape), nii, dtype=dtype,
                         overwrite=ow)
    if query.ndim == 2:
        write_png(out / f"{stem}.png", mask.astype(np.uint16 if max(labels) > 255 else np.uint8),
                  overwrite=ow)
    if args.overlays:
        rgb = (overlay_rgb(query.data, mask, labels) if query.ndim == 2
               else _volume_overlay(query.data, mask, labels))
        write_png(out / f"{stem}_overlay.png", rgb, overwrite=ow)
    if args.uncertainty:
        if query.ndim == 2:
            write_png(out / f"{stem}_uncertainty.png", _uncertainty_png(uncertainty),
                      overwrite=ow)
        else:
            unc8, centre = _uncertainty_png(uncertainty), _centre(mask)
            write_png(out / f"{stem}_uncertainty.png",
                      _side_by_side([np.take(unc8, centre[a], axis=a) for a in range(3)]),
                      overwrite=ow)
        if nii is not None:
            data = uncertainty[0] if len(labels) == 1 else np.moveaxis(uncertainty, 0, -1)
            shape = nii.data.shape + (() if len(labels) == 1 else (len(labels),))
            write_nifti_like(out / f"{stem}_uncertainty.nii.gz",
                             data.reshape(shape).astype(np.float32), nii, dtype=np.float32,
                             overwrite=ow)


# ----------------------------------------------------------------------------- run


@dataclass
class FileResult:
    name: str
    shape: tuple[int, ...]
    slices: int
    seconds: float
    fractions: dict[int, float]


def _load_model(name: str | None):
    from incontext.models import WeightsError, load_model

    try:
        return load_model(name)
    except WeightsError as exc:
        if name is None:
            raise CLIError(f"{exc}; on the command line: --model NAME_OR_PATH") from None
        raise


def _show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001
    import sys

    print(f"incontext segment: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``incontext segment``."""
    if getattr(args, "text", None):
        from incontext.text_segment import run_text_segmentation

        if args.threshold == "auto":
            raise CLIError("--threshold auto is for example-based segmentation; with --text "
                           "give a number (default 0.5)")

        # without --model the shipped TextDriven model is used (registry.DEFAULT_TEXT_MODEL)
        args.images = list_image_files(args.query, "--query")
        if args.support or args.support_dir or args.support_index:
            # hybrid prompt: label value --labels[i] (default i + 1) marks the i-th --text
            supports = load_supports(args)
            if supports.ndim != 2:
                raise CLIError("--text with support examples takes 2D supports only")
            args.support_images, args.support_labels = supports.images, supports.labels
            args.support_values = parse_labels(args.labels)
        return run_text_segmentation(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("always")
        return _run(args)


def _prepare(args: argparse.Namespace):
    _check_options(args)
    labels = parse_labels(args.labels)
    window = resolve_window(args.window)
    queries = list_image_files(args.query, "--query")
    supports = load_supports(args)
    wanted = check_support_labels(supports, labels)
    out = Path(args.out)
    dims = {}
    for q in queries:
        dims[q] = probe_ndim(q)
        if dims[q] != supports.ndim:
            raise CLIError(f"{q}: query is {dims[q]}D but the supports are {supports.ndim}D "
                           f"(e.g. {supports.names[0]}); give supports of the same kind")
    query_set = {q.resolve() for q in queries}
    seen: dict[Path, Path] = {}
    for q in queries:
        for path in planned_outputs(q, out, dims[q], args):
            if path.resolve() in query_set:
                raise CLIError(f"{path}: output would replace a query file; choose another --out")
            if path in seen:
                raise CLIError(f"{q} and {seen[path]} both write {path}; rename one of them")
            seen[path] = q
            check_writable(path, args.overwrite)
    if args.uncertainty and args.ensemble == 1 and args.planes == 1:
        warnings.warn("--uncertainty with --ensemble 1 (and one plane) gives all-zero maps; "
                      "use --ensemble K", stacklevel=2)
    return queries, supports, wanted, window, out


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    try:
        queries, supports, wanted, window, out = _prepare(args)
    except ImageReadError as exc:
        raise CLIError(str(exc)) from None
    if supports.ndim == 3 and args.threshold == "auto":
        raise CLIError("--threshold auto is for 2D images; give a number for volumes "
                       "(e.g. --threshold 0.5)")
    if supports.ndim == 3 and getattr(args, "colour", None) not in (None, "luma"):
        raise CLIError("--colour is for 2D colour images; volumes are grey (leave it out)")
    if getattr(args, "colour", None) is None:  # the default: chosen on the supports in 2D
        args.colour = "luma" if supports.ndim == 3 else "auto"
    if args.threshold is None:  # the default: chosen on the supports in 2D, 0.5 for volumes
        args.threshold = 0.5 if supports.ndim == 3 else "auto"
    model = _load_model(args.model)
    console = Console(stderr=True)
    results: list[FileResult] = []
    reuse: dict = {}  # per label: tiles, cut and rendering chosen on the supports, once
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        files_task = progress.add_task("files", total=len(queries))
        slices_task = progress.add_task("slices", total=None)
        for query_path in queries:
            start = time.perf_counter()
            try:
                query = load_image(query_path)
            except ImageReadError as exc:
                raise CLIError(str(exc)) from None
            if supports.ndim == 3:
                mask, unc, slices, axes = _segment_3d(model, query, supports, wanted, window,
                                                      args, progress, slices_task)
            else:
                progress.update(slices_task, total=1, completed=0)
                mask, unc = _segment_2d(model, query, supports, wanted, window, args, reuse)
                progress.update(slices_task, completed=1)
                slices = 1
            mask = postprocess(mask, largest_component=args.largest_component,
                               fill=args.fill_holes, min_size=args.min_size, labels=wanted)
            write_outputs(query, mask, unc, wanted, out, args)
            results.append(FileResult(
                name=query_path.name, shape=tuple(query.data.shape), slices=slices,
                seconds=time.perf_counter() - start,
                fractions={v: float((mask == v).mean()) for v in wanted}))
            progress.advance(files_task)
    _print_summary(results, wanted, out, Console())
    return 0


def _segment_2d(model, query: LoadedImage, supports: SupportSet, wanted, window, args,
                reuse: dict | None = None):
    from incontext.inference import segment

    colour = getattr(args, "colour", "luma")
    use = colour != "luma"
    result = segment(model, query.colour if use and query.colour is not None else query.data,
                     supports.with_colour() if use else supports.images, supports.labels,
                     ensemble=args.ensemble, support_size=args.support_size,
                     threshold=args.threshold, seed=args.seed, batch_size=args.batch_size,
                     labels=wanted, modality=args.modality, window=window,
                     supports_normalized=supports.normalized, tiles=args.tiles,
                     tta=args.tta, colour=colour, reuse=reuse)
    return result.mask, result.uncertainty


def _segment_3d(model, query: LoadedImage, supports: SupportSet, wanted, window, args,
                progress, task):
    from incontext.volumes import segment_volume

    axis = args.axis if args.axis is not None else choose_axis(supports.labels,
                                                               supports.spacings)
    axes = (0, 1, 2) if args.planes == 3 else (axis,)
    total = slice_steps(query.data.shape, len(wanted), axes)
    progress.update(task, total=total, completed=0)
    result = segment_volume(
        model, query.data, supports.images, supports.labels, labels=wanted, axis=axis,
        planes=args.planes, ensemble=args.ensemble, support_size=args.support_size,
        threshold=args.threshold, seed=args.seed, batch_size=args.batch_size,
        modality=args.modality, window=window, tiles=args.tiles, tta=args.tta,
        progress=lambda n: progress.advance(task, n))
    return result.mask, result.uncertainty, total // max(len(wanted), 1), axes


def _print_summary(results: list[FileResult], labels: list[int], out: Path, console) -> None:
    from rich.table import Table

    table = Table(title=f"incontext segment -> {out}")
    table.add_column("file", overflow="fold")
    table.add_column("shape", justify="right")
    table.add_column("slices", justify="right")
    table.add_column("seconds", justify="right")
    for v in labels:
        table.add_column(f"fg % label {v}", justify="right")
    for r in results:
        table.add_row(r.name, "x".join(map(str, r.shape)), str(r.slices), f"{r.seconds:.2f}",
                      *[f"{100 * r.fractions[v]:.2f}" for v in labels])
    if len(results) > 1:
        n = len(results)
        table.add_row(f"total ({n} files)", "", str(sum(r.slices for r in results)),
                      f"{sum(r.seconds for r in results):.2f}",
                      *[f"{100 * np.mean([r.fractions[v] for r in results]):.2f}"
                        for v in labels], style="bold")
    console.print(table)
