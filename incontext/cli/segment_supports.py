"""``incontext segment``'s support set: loaded from pairs, a folder or a task index, checked.

The three sources (``--support IMG:LABEL``, ``--support-dir``, ``--support-index`` with
``--task``) become one :class:`SupportSet`; :func:`check_support_labels` decides which
label values can be segmented and says which supports lack them.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from incontext.cli import CLIError
from incontext.io.supports import (
    LoadedSupport,
    SupportPair,
    find_support_pairs,
    load_support,
    parse_support_arg,
)


@dataclass
class SupportSet:
    images: list[np.ndarray]
    labels: list[np.ndarray]
    ndim: int
    names: list[str]
    spacings: list[tuple[float, ...] | None] = field(default_factory=list)
    normalized: bool = False  # images already in [0, 1] (index slices): no re-normalisation
    colours: list[np.ndarray | None] = field(default_factory=list)  # (H, W, 3) colour images

    def __post_init__(self) -> None:
        # read-only: every file of a run is segmented against these very arrays, so
        # segment() fingerprints them once (support_cache.SUPPORTS_FIXED)
        for array in (*self.images, *self.labels, *(c for c in self.colours if c is not None)):
            array.flags.writeable = False

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


def index_task_hint(path: str) -> str:
    """``"; tasks in PATH: a, b, ..."`` for an error message, or "" when ``path`` cannot be
    read as a task index."""
    from incontext.data import TaskIndex

    try:
        with TaskIndex.open(path) as index:
            names = [t.name for t in index.tasks]
    except (OSError, ValueError):
        return ""
    more = f", ... ({len(names)} in all)" if len(names) > 10 else ""
    return f"; tasks in {path}: {', '.join(names[:10])}{more}" if names else ""


def _load_index_supports(path: str, task: str) -> SupportSet:
    from incontext.data import TaskIndex

    if not Path(path).exists():
        raise CLIError(f"--support-index {path}: file not found")
    try:
        index = TaskIndex.open(path)
        images, labels, _ = index.load_split(task, "train")
        rgb = index.load_split_colour(task, "train")
    except ValueError as exc:  # not an index, unknown task (names the tasks there)
        raise CLIError(f"--support-index {path}: {exc}") from None
    if len(images) == 0:
        raise CLIError(f"--support-index {path}: task {task!r} has no training entries")
    return SupportSet(images=list(images.astype(np.float32)),
                      labels=list((labels > 0).astype(np.int64)),
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


MAX_2D_LABELS = 64  # more values in one 2D label map: an image or an instance mask
MAX_EDGE_VALUES = 6  # more values beside 255 in one mask: anti-aliased, resized or lossy
WHITE = (255, 65535)  # the foreground of 8- / 16-bit binary masks


def _values_text(values: set[int]) -> str:
    shown = sorted(values)
    return ", ".join(map(str, shown[:8])) + (", ..." if len(shown) > 8 else "")


def _check_2d_label_values(names: list[str], present_per: list[set[int]]) -> None:
    """CLIError for 2D label maps that are no label maps: many values (an image, an instance
    mask), 255 (65535) beside many grey values (anti-aliased, resized or lossy masks), or
    0/1 and 0/255 binary masks mixed. A few values (0/128/255) are labels and pass;
    ``--labels`` skips this check."""
    hint = ("give label maps with 0 = background and one value per structure, or choose "
            "the values to segment with --labels")
    pairs = list(zip(names, present_per, strict=True))
    for name, values in pairs:
        if len(values) > MAX_2D_LABELS:
            raise CLIError(f"{name}: label map has {len(values)} different values; it looks "
                           f"like an image or an instance mask, not a label map; {hint}")
    for white in WHITE:
        for name, values in pairs:
            grey = values - {white}
            if white in values and len(grey) > MAX_EDGE_VALUES:
                raise CLIError(f"{name} has {white} and also {len(grey)} other values "
                               f"({_values_text(grey)}): an anti-aliased, resized or "
                               f"JPEG-compressed mask?; {hint}")
        ones = [n for n, v in pairs if v == {1}]
        whites = [n for n, v in pairs if v == {white}]
        if ones and whites:
            raise CLIError(f"support labels mix 0/1 and 0/{white} masks: {ones[0]} has 1, "
                           f"{whites[0]} has {white}; {hint}")


def check_support_labels(supports: SupportSet, labels: list[int] | None) -> list[int]:
    """The label values to segment; errors for labels no support has or for 2D label maps
    that look wrong (unless ``labels`` are given), warnings per file."""
    present_per = [{int(v) for v in np.unique(lab) if v != 0} for lab in supports.labels]
    present = sorted(set().union(*present_per))
    if labels is None and supports.ndim == 2:
        _check_2d_label_values(supports.names, present_per)
    for name, values in zip(supports.names, present_per, strict=True):
        if not values:
            warnings.warn(f"{name}: support label has no foreground", stacklevel=2)
    wanted = labels if labels is not None else present
    if not present:
        raise CLIError("no support label has any foreground: nothing to learn from "
                       f"({', '.join(supports.names[:3])}"
                       f"{', ...' if len(supports.names) > 3 else ''})")
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
