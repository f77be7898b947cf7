"""What ``incontext segment`` tells the user after a run: the per-file summary, the choices
made on the support set with the Dice they reach there, and the optional JSON report.

The support-set check is leave-one-out: a few supports are segmented from the others with
every candidate setting (tiles, cut, colour rendering) and the best setting is used for
the queries (:mod:`incontext.calibration`). Its mean Dice is an estimate of the Dice to
expect on the queries, available before any query is checked by eye (docs/segment.md,
"How good will it be?").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from incontext.atomic import atomic_write_text

LOW_SUPPORT_DICE = 0.5  # below this the run ends with a note to check the masks


@dataclass
class FileResult:
    """One query file: its shape, slices, time and the foreground share of each label."""

    name: str
    shape: tuple[int, ...]
    slices: int
    seconds: float
    fractions: dict[int, float]


@dataclass
class LabelChoice:
    """What was chosen on the supports for one label, and the Dice it reached there."""

    label: int
    tiles: int | str
    cut: float
    rendering: str
    support_dice: float | None = None  # leave-one-out mean Dice; None: not measured
    support_checks: int = 0  # supports (images, or volumes) that mean is over
    method: str = "model"  # what segmented the label: "model", or "unet" (--hand-over)
    hand_over: dict | None = None  # --hand-over: the model's and the U-Net's Dice compared
    flips: bool = False  # --support-flips: flipped copies of the supports were added
    refined: bool = False  # --refine: a pixel head fitted on the supports was used
    nearest: int | None = None  # --nearest: each query with this many alike supports


@dataclass
class RunReport:
    """Everything ``--report`` writes: settings, choices per label, and the files."""

    model: str
    device: str
    settings: dict
    choices: list[LabelChoice] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def label_choices(result, labels: list[int], hand_over=None) -> list[LabelChoice]:
    """The per-label choices of one :class:`incontext.inference.Segmentation` (and, with
    ``--hand-over``, the :class:`incontext.hand_over.HandOverChoice` list)."""
    compared = {c.label: asdict(c) for c in hand_over or ()}
    return [LabelChoice(v, result.tiles[i], result.thresholds[i], result.colours[i],
                        result.support_dice[i], result.support_checks[i],
                        result.methods[i] if result.methods else "model", compared.get(v),
                        bool(result.flips[i]) if result.flips else False,
                        bool(result.refined[i]) if result.refined else False,
                        getattr(result, "nearest", None))
            for i, v in enumerate(labels)]


def print_summary(results: list[FileResult], labels: list[int], out: Path, console,
                  device: str = "cpu") -> None:
    """The table of files written, with the foreground share of each label."""
    from rich.table import Table

    table = Table(title=f"incontext segment -> {out} (model on {device})")
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


def print_support_checks(choices: list[LabelChoice], console) -> None:
    """The settings chosen per label and their leave-one-out Dice on the supports; a note
    for labels below :data:`LOW_SUPPORT_DICE`."""
    from rich.table import Table

    if not choices:
        return
    table = Table(title="support-set check (each checked support segmented from the others)")
    table.add_column("label", justify="right")
    table.add_column("rendering")
    table.add_column("tiles", justify="right")
    table.add_column("cut", justify="right")
    table.add_column("supports checked", justify="right")
    table.add_column("Dice on them", justify="right")
    compared = [c for c in choices if c.hand_over is not None]
    flipped = any(c.flips for c in choices)
    if flipped:
        table.add_column("flipped supports")
    refined = any(c.refined for c in choices)
    if refined:
        table.add_column("pixel head")
    nearest = any(c.nearest for c in choices)
    if nearest:
        table.add_column("supports per query", justify="right")
    if compared:
        table.add_column("segmented by")
    for c in choices:
        measured = c.support_dice is not None
        row = [str(c.label), c.rendering if c.method == "model" else "grey",
               str(c.tiles) if c.method == "model" else "-", f"{c.cut:g}",
               str(c.support_checks) if measured else "-",
               f"{c.support_dice:.2f}" if measured else "not measured"]
        if flipped:
            row.append("added" if c.flips else "no")
        if refined:
            row.append("used" if c.refined else "no")
        if nearest:
            row.append(f"{c.nearest} nearest" if c.nearest else "all")
        table.add_row(*row, *([_method_text(c)] if compared else []))
    console.print(table)
    low = [c for c in choices if c.support_dice is not None and c.support_dice < LOW_SUPPORT_DICE]
    for c in low:
        # without --hand-over, a U-Net trained on the supports is the untried option
        unet = ", or --hand-over (a U-Net trained on the supports where it segments them " \
               "better)" if c.method == "model" and c.hand_over is None else ""
        console.print(f"note: label {c.label} reaches Dice {c.support_dice:.2f} on supports "
                      f"segmented from the others: check its masks; more (or more varied) "
                      f"supports, or --tiles 2 for thin structures{unet}, may help")


def _method_text(c: LabelChoice) -> str:
    """'U-Net (model 0.61, U-Net 0.72 cross-validated; U-Net at 128 px)' for the
    --hand-over column."""
    h = c.hand_over
    if h is None or h["model_dice"] is None or h["unet_dice"] is None:
        # fewer than 2 supports, or none showing the label
        return "model (not compared)" if c.method == "model" else c.method
    name = "U-Net" if c.method == "unet" else "model"
    return (f"{name} (model {h['model_dice']:.2f}, U-Net {h['unet_dice']:.2f} cross-validated; "
            f"U-Net at {h['unet_size']} px)")


def write_report(path: Path, report: RunReport) -> Path:
    """Write ``report`` as JSON to ``path`` (atomically)."""
    data = asdict(report)
    for f in data["files"]:
        f["fractions"] = {str(k): v for k, v in f["fractions"].items()}
    return atomic_write_text(path, json.dumps(data, indent=1) + "\n")
