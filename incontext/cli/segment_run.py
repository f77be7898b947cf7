"""``incontext segment``: label 2D images or 3D NIfTI volumes from a few labeled examples.

Supports come from ``--support IMG:LABEL`` pairs, a ``--support-dir`` (images/ + labels/,
or an nnU-Net dataset) or a task index (``--support-index INDEX.h5 --task NAME``).
Queries are a file, a folder or a glob. Outputs go to ``--out``: a label map per
query (PNG for 2D, NIfTI on the query's exact grid for NIfTI input), optionally
overlays and uncertainty maps. See docs/segment.md.

The work behind ``incontext segment`` (its parser is in ``incontext.cli.segment``; the
support set is loaded in ``segment_supports``, outputs are written by ``segment_outputs``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from incontext.atomic import check_output_folder
from incontext.cli import CLIError
from incontext.cli.segment_outputs import check_label_range, planned_outputs, write_outputs
from incontext.cli.segment_report import (
    FileResult,
    LabelChoice,
    RunReport,
    label_choices,
    print_summary,
    print_support_checks,
    write_report,
)
from incontext.cli.segment_supports import (
    SupportSet,
    check_support_labels,
    index_task_hint,
    load_supports,
)
from incontext.io import (
    ImageReadError,
    LoadedImage,
    list_image_files,
    load_image,
    probe_ndim,
    require_finite,
)
from incontext.io.files import check_writable
from incontext.postprocess import postprocess
from incontext.support_cache import SUPPORTS_FIXED
from incontext.volumes import choose_axis, resolve_window, slice_steps

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
        raise CLIError("--support-index needs --task NAME" + index_task_hint(args.support_index))
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


# ----------------------------------------------------------------------------- run


def _load_model(name: str | None, device: str = "auto"):
    from incontext.models import WeightsError, load_model

    try:
        return load_model(name, device=device)
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
        if getattr(args, "hand_over", False):
            raise CLIError("--hand-over is for example-based segmentation; leave it out with "
                           "--text")

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
    out = check_output_folder(args.out)  # before any work: a folder we cannot write fails now
    labels = parse_labels(args.labels)
    window = resolve_window(args.window)
    queries = list_image_files(args.query, "--query")
    supports = load_supports(args)
    wanted = check_support_labels(supports, labels)
    check_label_range(wanted, supports.ndim)
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
    if getattr(args, "report", None):
        report = Path(args.report)
        if report.resolve() in query_set | {p.resolve() for p in seen}:
            raise CLIError(f"--report {report}: that path is a query or an output; "
                           "choose another name")
        check_output_folder(report.parent if str(report.parent) else ".")
        check_writable(report, args.overwrite)
    if args.uncertainty and args.ensemble == 1 and args.planes == 1:
        warnings.warn("--uncertainty with --ensemble 1 (and one plane) gives all-zero maps; "
                      "use --ensemble K", stacklevel=2)
    return queries, supports, wanted, window, out


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
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
    if supports.ndim == 3 and getattr(args, "colour", None) not in (None, "luma"):
        raise CLIError("--colour is for 2D colour images; volumes are grey (leave it out)")
    if supports.ndim == 3 and getattr(args, "hand_over", False):
        raise CLIError("--hand-over is for 2D images; volumes are segmented by the model only "
                       "(leave it out)")
    if supports.ndim == 3 and getattr(args, "support_flips", None) not in (None, "off",
                                                                            "default"):
        raise CLIError("--support-flips is for 2D images; volumes are segmented from the "
                       "support slices as given (leave it out)")
    if supports.ndim == 3 and getattr(args, "refine", None) not in (None, "off", "default"):
        raise CLIError("--refine is for 2D images; volumes are segmented by the model alone "
                       "(leave it out)")
    if supports.ndim == 3 and getattr(args, "nearest", None) not in (None, "off", "default"):
        raise CLIError("--nearest is for 2D images; volumes already pick support slices by "
                       "position (leave it out)")
    if getattr(args, "colour", None) is None:  # the default: chosen on the supports in 2D
        args.colour = "luma" if supports.ndim == 3 else "auto"
    if args.tiles is None and supports.ndim == 3:  # 2D: segment() decides by image size
        args.tiles = 1
    if args.threshold is None:  # the default: chosen on the supports in 2D, 0.5 for volumes
        args.threshold = 0.5 if supports.ndim == 3 else "auto"
    model = _load_model(args.model, getattr(args, "device", "auto"))
    console = Console(stderr=True)
    results: list[FileResult] = []
    # per label: tiles, cut and rendering chosen on the supports, once; the supports are
    # the same read-only arrays for every file (SupportSet), so fingerprinted once too
    reuse: dict = {SUPPORTS_FIXED: True}
    hand = _hand_over(model, supports, wanted, window, args)  # None without --hand-over
    skipped: list[Path] = []  # query files that could not be read after all
    choices: list[LabelChoice] = []  # 2D: per label, what the supports chose (same every file)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        volume_cuts = None  # volumes with --threshold auto: one cut per label, from the check
        if supports.ndim == 3 and (getattr(args, "check_supports", False)
                                   or args.threshold == "auto"):
            choices = _check_volumes(model, supports, wanted, window, args, progress)
            if args.threshold == "auto":
                volume_cuts = [c.cut for c in choices]
        files_task = progress.add_task("files", total=len(queries))
        slices_task = progress.add_task("slices", total=None)
        for query_path in queries:
            start = time.perf_counter()
            try:
                query = require_finite(load_image(query_path))
            except ImageReadError as exc:  # its header was fine (checked before the work)
                skipped.append(query_path)
                progress.console.print(f"[red]skipped:[/] {escape(str(exc))}")
                progress.advance(files_task)
                continue
            if supports.ndim == 3:
                mask, unc, slices, axes = _segment_3d(model, query, supports, wanted, window,
                                                      args, progress, slices_task, volume_cuts)
            else:
                # the first file also pays the once-per-run checks on the supports
                first = "supports checks + image" if hand is None else \
                    "supports checks + U-Net hand-over checks + image"
                progress.update(slices_task, total=1, completed=0,
                                description="image" if results else first)
                result = _segment_2d(model, query, supports, wanted, window, args, reuse, hand)
                mask, unc = result.mask, result.uncertainty
                choices = choices or label_choices(result, wanted,
                                                   None if hand is None else hand.choices)
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
    device = str(next(model.parameters()).device)
    print_summary(results, wanted, out, Console(), device=device)
    print_support_checks(choices, Console())
    if getattr(args, "report", None):
        from incontext.models.registry import DEFAULT_MODEL

        report = RunReport(model=args.model or str(DEFAULT_MODEL), device=device,
                           settings=run_settings(args), choices=choices, files=results,
                           skipped=[str(p) for p in skipped])
        Console().print(f"report: {write_report(Path(args.report), report)}")
    if skipped:
        raise CLIError(f"{len(skipped)} of {len(queries)} query files could not be read and "
                       f"were skipped (named above; the other outputs were written): "
                       f"{', '.join(p.name for p in skipped[:5])}"
                       + (", ..." if len(skipped) > 5 else ""))
    return 0


def _segment_options(supports: SupportSet, wanted, window, args) -> dict:
    """The keyword options of :func:`incontext.inference.segment` for a 2D run."""
    return dict(ensemble=args.ensemble, support_size=args.support_size,
                threshold=args.threshold, batch_size=args.batch_size, labels=wanted,
                modality=args.modality, window=window, supports_normalized=supports.normalized,
                tiles=args.tiles, tta=args.tta, colour=getattr(args, "colour", "luma"),
                nearest=getattr(args, "nearest", None),
                support_flips=getattr(args, "support_flips", None),
                refine=getattr(args, "refine", None))


def _support_images(supports: SupportSet, args):
    return supports.with_colour() if getattr(args, "colour", "luma") != "luma" \
        else supports.images


def _hand_over(model, supports: SupportSet, wanted, window, args):
    """With ``--hand-over`` (2D): the object that segments every file, else None."""
    if not getattr(args, "hand_over", False) or supports.ndim != 2:
        return None
    from incontext.hand_over import UNetHandOver

    return UNetHandOver(model, _support_images(supports, args), supports.labels,
                        seed=args.seed, **_segment_options(supports, wanted, window, args))


def _segment_2d(model, query: LoadedImage, supports: SupportSet, wanted, window, args,
                reuse: dict | None = None, hand=None):
    from incontext.inference import segment

    use = getattr(args, "colour", "luma") != "luma"
    image = query.colour if use and query.colour is not None else query.data
    if hand is not None:
        return hand.segment(image)
    return segment(model, image, _support_images(supports, args), supports.labels,
                   seed=args.seed, reuse=reuse,
                   **_segment_options(supports, wanted, window, args))


def _volume_axis(args, supports: SupportSet) -> int:
    return args.axis if args.axis is not None else choose_axis(supports.labels,
                                                               supports.spacings)


def _check_volumes(model, supports: SupportSet, wanted, window, args,
                   progress) -> list[LabelChoice]:
    """``--check-supports`` (or ``--threshold auto``) for volumes: support volumes segmented
    from the others, which also choose each label's cut when it is auto."""
    from incontext.calibration import THRESHOLD_GRID
    from incontext.volume_check import check_support_volumes

    task = progress.add_task("support checks", total=None)
    done = [0]  # slices segmented so far (the total is known only at the end)

    def advance(n: int) -> None:
        done[0] += n
        progress.advance(task, n)

    checks = check_support_volumes(
        model, supports.images, supports.labels, labels=wanted, seed=args.seed,
        axis=_volume_axis(args, supports), planes=args.planes, ensemble=args.ensemble,
        support_size=args.support_size,
        thresholds=THRESHOLD_GRID if args.threshold == "auto" else (float(args.threshold),),
        batch_size=args.batch_size, modality=args.modality, window=window, tiles=args.tiles,
        tta=args.tta, progress=advance)
    progress.update(task, total=done[0])
    return [LabelChoice(c.label, args.tiles, c.threshold, "grey", c.dice, c.volumes)
            for c in checks]


def _segment_3d(model, query: LoadedImage, supports: SupportSet, wanted, window, args,
                progress, task, cuts: list[float] | None = None):
    from incontext.volumes import segment_volume

    axis = _volume_axis(args, supports)
    axes = (0, 1, 2) if args.planes == 3 else (axis,)
    total = slice_steps(query.data.shape, len(wanted), axes)
    progress.update(task, total=total, completed=0)
    result = segment_volume(
        model, query.data, supports.images, supports.labels, labels=wanted, axis=axis,
        planes=args.planes, ensemble=args.ensemble, support_size=args.support_size,
        threshold=cuts if cuts is not None else args.threshold, seed=args.seed,
        batch_size=args.batch_size, modality=args.modality, window=window, tiles=args.tiles,
        tta=args.tta,
        progress=lambda n: progress.advance(task, n))
    return result.mask, result.uncertainty, total // max(len(wanted), 1), axes


def run_settings(args: argparse.Namespace) -> dict:
    """The command's options as JSON values (paths as text), for ``--report``."""
    out = {}
    for key, value in sorted(vars(args).items()):
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, (list, tuple)) and all(isinstance(v, (str, Path)) for v in value):
            value = [str(v) for v in value]
        if value is None or isinstance(value, (str, int, float, bool, list)):
            out[key] = value
    return out
